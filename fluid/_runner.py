"""Running a worker as a program: signals, uvloop, exit codes, ``run_async_safely``.

Why it is shaped this way:

* One task owns the run. It makes the worker (a factory is called on the
  loop, so constructors may need one), starts it and waits for its end. The
  signal handlers are installed with ``loop.add_signal_handler``: they run on
  the loop between callbacks, never in the middle of a worker's code, and
  they only talk to that task and to the worker. Once the outcome is decided
  they ignore further signals (a storm of them must not change it), until the
  loop is closed; then the handlers found before are restored.
* The first SIGINT or SIGTERM asks for a graceful stop and starts one timer
  (``loop.call_later``): the grace period. When it runs out, or when a second
  signal comes, the main task is cancelled. That interrupts whatever it
  awaits, ``startup()`` included (a hung ``on_startup`` or a tree half
  started), and a cancelled wait forces the worker: a forced tree cancels
  every descendant and waits for them. A third signal cancels the worker
  again at once. Unlike aiorun, the second signal is not ignored: someone
  who presses Ctrl-C twice wants the program to end now, and the forced stop
  still runs the ``on_shutdown`` hooks.
* The outcome is an exit status, never an exception: 0 after a clean stop, 1
  after a failure, ``128 + signal`` after a forced stop (130 for SIGINT, 143
  for SIGTERM, as a shell reports a program killed by that signal). The CLI
  uses 2 for a bad command line or target.
* A traceback is logged once. A worker logs its own errors where they
  happen (``run()``, ``on_shutdown``, a tree giving up), so the failure line
  of the run names the error in one line instead of logging its traceback a
  second time; an error no worker logged (a failed start, a failing
  factory) is logged here with its traceback.
* uvloop is chosen with ``asyncio.Runner(loop_factory=...)``, not with an
  event loop policy: policies are deprecated from Python 3.14 and global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._state import WorkerState
from ._target import NotAWorker, WorkerOrFactory, build_worker, check_target
from ._validate import check_seconds
from ._waiting import run_worker
from ._worker import Worker, one_line_reason

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "check_grace_period",
    "loop_factory",
    "run",
    "run_async_safely",
]

logger = logging.getLogger("fluid")

T = TypeVar("T")

EXIT_OK = 0
"""Exit status after a clean stop: the worker ended on its own or stopped gracefully."""
EXIT_FAILURE = 1
"""Exit status after the worker failed (to start, or while running)."""
EXIT_USAGE = 2
"""Exit status of the ``fluid`` command for a bad command line or target."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_background: set[asyncio.Task[Any]] = set()


def loop_factory(use_uvloop: bool | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` when wanted and installed, else None (asyncio's loop).

    Raises:
        TypeError: ``use_uvloop`` is not a bool or None.
        RuntimeError: ``use_uvloop`` is True and uvloop is not installed.
    """
    if use_uvloop is not None and not isinstance(use_uvloop, bool):
        raise TypeError(f"use_uvloop must be True, False or None, got {use_uvloop!r}")
    if use_uvloop is False:
        return None
    try:
        import uvloop
    except ImportError:
        if use_uvloop:
            raise RuntimeError(
                "use_uvloop=True but uvloop is not installed: pip install uvloop"
            ) from None
        return None
    return uvloop.new_event_loop


def check_grace_period(stopping_grace_period: object, grace: object) -> float | None:
    """The grace period passed as ``stopping_grace_period=``, or by its old name ``grace=``.

    ``fluid.run`` and ``Prefork`` took the grace period as ``grace``; the
    workers call it ``stopping_grace_period``, and so do they now. The old
    name still works, with a ``DeprecationWarning`` pointing at the caller.
    ``None`` when neither is given.

    Raises:
        TypeError: both names are given, or the value is not a number.
        ValueError: the value is negative or not finite.

    Example:
        ```python
        def run(*, stopping_grace_period=None, grace=None):
            seconds = check_grace_period(stopping_grace_period, grace)
        ```
    """
    if grace is None:
        if stopping_grace_period is None:
            return None
        return check_seconds("stopping_grace_period", stopping_grace_period)
    if stopping_grace_period is not None:
        raise TypeError("pass stopping_grace_period only: grace is its deprecated name, got both")
    warnings.warn(
        "grace= is deprecated: pass stopping_grace_period= (the name workers use)",
        DeprecationWarning,
        stacklevel=3,  # the caller of run() or Prefork()
    )
    return check_seconds("grace", grace)


def run(
    worker: WorkerOrFactory,
    *,
    stopping_grace_period: float | None = None,
    use_uvloop: bool | None = None,
    grace: float | None = None,
) -> int:
    """Run a worker as a program until it ends or a signal stops it; return the exit status.

    The worker (a tree, usually) is started on a new event loop and runs
    until it ends on its own or SIGINT / SIGTERM arrives:

    * the first signal asks for a graceful stop and gives the worker its
      grace period (``stopping_grace_period`` seconds) to end;
    * a second signal, or the grace period running out, forces the stop: the
      worker is cancelled (a tree cancels all its descendants) and its
      ``on_shutdown`` hooks still run; a third cancels it again at once.

    The exit status is ``0`` after a clean stop, ``1`` if the worker failed
    to start or ended with an error (its traceback logged once on the
    ``fluid`` logger, a cancellation the worker raised itself included), and
    ``128 + signal number`` after a forced stop: ``130`` for SIGINT, ``143``
    for SIGTERM. Signal handlers are installed only in the main thread, and
    the ones found before are restored after.

    Args:
        worker: the worker, or a function without arguments returning one;
            it is called on the new loop, so it may create loop-bound objects.
        stopping_grace_period: the grace period: seconds the worker is given
            to stop gracefully after the first signal, before it is forced;
            by default the worker's own ``stopping_grace_period``.
        use_uvloop: ``None`` uses uvloop when it is installed, ``True``
            requires it, ``False`` uses asyncio's own loop.
        grace: the former name of ``stopping_grace_period``; deprecated
            (``DeprecationWarning``).

    Returns:
        The exit status, for ``sys.exit``.

    Raises:
        TypeError: ``worker`` is neither a Worker nor callable, or is a
            callable that needs arguments (the message names them); the
            grace period is not a number or is given under both names.
        NotAWorker: the factory returned something else than a Worker (a
            ``TypeError``).
        ValueError: the grace period is negative or not finite.
        RuntimeError: called from a running event loop, or ``use_uvloop`` is
            True and uvloop is not installed.
        asyncio.CancelledError: code of the program cancelled the task that
            runs the worker (not a signal): the worker was forced and waited
            for, and no exit status is decided.

    Example:
        ```python
        import sys
        import fluid

        async def tick() -> None:
            print("tick")

        def build() -> fluid.Workers:
            return fluid.Workers(fluid.WorkerFunction(tick, heartbeat=1))

        if __name__ == "__main__":
            sys.exit(fluid.run(build))  # Ctrl-C stops it, twice forces it
        ```
    """
    check_target(worker)
    grace_period = check_grace_period(stopping_grace_period, grace)
    factory = loop_factory(use_uvloop)
    if _has_running_loop():
        raise RuntimeError(
            "fluid.run() cannot be called from a running event loop: "
            "use `async with worker:` or `await worker.startup()` there"
        )
    code: int | None = None
    previous = _current_handlers()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            code = runner.run(_serve(worker, grace_period))
    except KeyboardInterrupt:
        if code is None:  # SIGINT before our handler was installed
            logger.warning("interrupted: exit status %d", 128 + signal.SIGINT)
            return 128 + signal.SIGINT
        # a late SIGINT while the loop closed: the outcome was decided already
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _current_handlers() -> dict[int, Any]:
    """The SIGINT and SIGTERM handlers to give back after the run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    return {sig: handler for sig, handler in handlers.items() if handler is not None}


def run_async_safely(coro: Coroutine[Any, Any, T]) -> T | asyncio.Task[T]:
    """Run a coroutine from sync code, whether an event loop is running or not.

    Without a running loop (plain sync code) the coroutine runs to
    completion on a new loop and its result is returned. With a running loop
    (a sync callback called by async code) it becomes a task, which is
    returned and kept referenced until it is done, so it is never
    garbage-collected half way. Nobody has to await that task; if it fails
    and nobody retrieved its error, asyncio reports it through the loop's
    exception handler.

    Args:
        coro: the coroutine object to run.

    Returns:
        The coroutine's result without a running loop, else its task.

    Raises:
        TypeError: ``coro`` is not a coroutine object.
        Exception: without a running loop, whatever the coroutine raised.

    Example:
        ```python
        import asyncio
        import fluid

        async def save(value: int) -> int:
            await asyncio.sleep(0.01)
            return value

        def on_change(value: int) -> None:  # a sync callback
            fluid.run_async_safely(save(value))  # a task, kept until done

        print(fluid.run_async_safely(save(1)))  # no loop: runs it, prints 1

        async def main() -> None:
            on_change(2)
            await asyncio.sleep(0.05)

        asyncio.run(main())
        ```
    """
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"run_async_safely() needs a coroutine object, got {coro!r}")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


# ------------------------------------------------------------- internals


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Signals:
    """What the run does on SIGINT and SIGTERM (see the module docstring)."""

    __slots__ = (
        "_deadline",
        "_grace",
        "_loop",
        "_task",
        "_worker",
        "count",
        "done",
        "forced",
        "forced_by",
        "signum",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        worker: Worker,
        grace: float,
    ) -> None:
        self._loop = loop
        self._task = task
        self._worker = worker
        self._grace = grace
        self._deadline: asyncio.TimerHandle | None = None
        self.count = 0
        self.signum = 0  # the first signal: the one that asked for the stop
        self.forced_by = 0  # the signal that forced the stop; the exit status says it
        self.done = False
        self.forced = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("fluid.run() outside the main thread: signals are not handled")
            return
        for sig in _SIGNALS:
            try:
                self._loop.add_signal_handler(sig, self._received, sig)
            except NotImplementedError:  # Windows: a plain handler, handed to the loop
                signal.signal(sig, self._from_handler)

    def decided(self) -> None:
        """The outcome is decided: ignore signals from now on (``run`` restores them)."""
        self.done = True
        if self._deadline is not None:
            self._deadline.cancel()

    def _from_handler(self, signum: int, frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(self._received, signum)

    def _received(self, signum: int) -> None:
        if self.done:  # the worker ended: the run is returning anyway
            return
        self.count += 1
        name = signal.Signals(signum).name
        worker = self._worker.worker_name
        if self.count == 1:
            self.signum = signum
            logger.warning(
                "received %s: stopping worker %r gracefully within %gs (again to force)",
                name,
                worker,
                self._grace,
            )
            self._worker.gracefully_stop()
            self._deadline = self._loop.call_later(self._grace, self._grace_over)
        elif not self.forced:
            logger.warning("received %s again: forcing worker %r to stop", name, worker)
            self._force(f"{name} received twice", signum)
        else:
            logger.warning("received %s again: cancelling worker %r again", name, worker)
            self._worker.force_stop(f"{name} received again")

    def _grace_over(self) -> None:
        if not self.done:
            worker = self._worker.worker_name
            logger.warning(
                "worker %r did not stop within %gs: forcing it to stop", worker, self._grace
            )
            self._force(f"worker {worker!r} did not stop within {self._grace:g}s", self.signum)

    def _force(self, reason: str, signum: int) -> None:
        if not self.done and not self.forced:
            self.forced = True
            self.forced_by = signum
            self._task.cancel(reason)


async def _serve(target: WorkerOrFactory, grace: float | None) -> int:
    try:
        worker = build_worker(target)
    except NotAWorker:
        raise
    except Exception as exc:
        logger.error(
            "%r failed to make the worker: exit status %d", target, EXIT_FAILURE, exc_info=exc
        )
        return EXIT_FAILURE
    task = asyncio.current_task()
    assert task is not None
    grace = worker.stopping_grace_period if grace is None else grace
    signals = _Signals(asyncio.get_running_loop(), task, worker, grace)
    signals.install()
    try:
        return await _run_to_the_end(worker, task, signals)
    finally:
        signals.decided()


async def _run_to_the_end(worker: Worker, task: asyncio.Task[Any], signals: _Signals) -> int:
    name = worker.worker_name
    running = False

    def started() -> None:
        nonlocal running
        running = True
        if worker.is_running():  # not when a signal came while it started
            logger.info("worker %r is running: SIGINT or SIGTERM stops it", name)

    try:
        # A forced stop cancels this task: the worker is then forced and waited for.
        await run_worker(worker, started=started, reason="the program was forced to stop")
    except asyncio.CancelledError:
        if signals.forced:
            task.uncancel()
        elif task.cancelling():  # code of the program cancelled this task: not ours
            raise
        # else: the worker's own error, a cancellation it raised: raised again below
    except Exception as exc:
        if not running:
            why = one_line_reason(exc)
            if why is None:
                logger.error(
                    "worker %r failed to start: exit status %d", name, EXIT_FAILURE, exc_info=exc
                )
            else:  # a child process's error: its own traceback, not fluid's frames here
                logger.error(
                    "worker %r failed to start (%s: %s): exit status %d%s",
                    name,
                    type(exc).__name__,
                    exc,
                    EXIT_FAILURE,
                    why,
                )
            return EXIT_FAILURE
        # the worker's error: raised again below
    signals.done = True
    try:
        await worker.wait_for_shutdown()
    except asyncio.CancelledError as exc:
        if task.cancelling():
            raise
        # the worker logged it without a traceback: where run() raised it is here only
        return _failed(name, exc, with_traceback=True)
    except Exception as exc:
        return _failed(name, exc)
    if signals.forced:
        code = 128 + signals.forced_by
        logger.warning("worker %r was forced to stop: exit status %d", name, code)
        return code
    if signals.signum and (forced := _forced_inside(worker)):
        # stopped within the program's grace, but not all of it gracefully:
        # a worker (a prefork child) was cancelled after its own grace period
        code = 128 + signals.signum
        logger.warning(
            "worker %r stopped, but %s was forced to stop: exit status %d", name, forced, code
        )
        return code
    if worker.worker_state is WorkerState.FORCE_STOPPED:
        logger.warning("worker %r was cancelled: exit status %d", name, EXIT_FAILURE)
        return EXIT_FAILURE
    logger.info("worker %r stopped: exit status %d", name, EXIT_OK)
    return EXIT_OK


def _forced_inside(worker: Worker) -> str:
    """A worker of the tree that ended forced (its name, quoted), or ""."""
    for leaf in worker.workers():
        if leaf.worker_state is WorkerState.FORCE_STOPPED:
            return repr(leaf.worker_name)
    return ""


def _failed(name: str, error: BaseException, *, with_traceback: bool = False) -> int:
    """Log the failure of the worker in one line: its traceback was logged where it failed."""
    notes = "".join(f"; {note}" for note in getattr(error, "__notes__", ()))
    summary = f"{type(error).__name__}: {error}".removesuffix(": ") + notes
    logger.error(
        "worker %r failed (%s): exit status %d",
        name,
        summary,
        EXIT_FAILURE,
        exc_info=error if with_traceback else None,
    )
    return EXIT_FAILURE
