"""ThreadWorker: sync code in a dedicated thread, as an ordinary worker.

Why it is shaped this way:

* ``startup()`` starts the thread and returns once ``setup()`` returned in
  it, so the next child of a tree can rely on it, and an error in ``setup()``
  is raised by ``startup()`` just like an error in ``on_startup()``.
* Crossing threads costs one event each way and nothing polls: the loop
  tells the thread to stop through a ``threading.Event`` (which also wakes
  ``wait_for_stop()`` at once); the thread tells the loop it is ready, and
  then that it ended (with its error), by ``call_soon_threadsafe`` from its
  last step.
* Python cannot kill a thread. A thread still running when the grace period
  is over is abandoned: the worker ends ``FORCE_STOPPED``, the thread is
  logged by name and shown in ``status()``, and nothing waits for it again.
  It is a daemon thread, so it cannot keep the process alive. Each run has
  its own stop event, held by the thread itself, so an abandoned thread keeps
  being told to stop even after the worker was started again.
* ``setup()``, ``main()`` and ``teardown()`` run as ``_sync_body`` says,
  the same as in a ``ProcessWorker``'s child.
* The thread runs in a copy of the context of the ``startup()`` caller:
  contextvars (request ids, logging context) flow into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable

from ._state import WorkerState
from ._status import ThreadStatus, WorkerStatus
from ._sync_body import check_sync_target, run_body
from ._validate import function_name
from ._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = ["ThreadWorker"]

logger = logging.getLogger("fluid")

_RUNNING = WorkerState.RUNNING

_Outcome = BaseException | None
"""What a thread reports: the error it ended with, or None."""


class _Local(threading.local):
    """Per-thread: the stop event of the run a worker thread belongs to."""

    stop: threading.Event | None = None


def _resolve(future: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _resolve_threadsafe(
    loop: asyncio.AbstractEventLoop, outcome: _Outcome, *futures: asyncio.Future[_Outcome]
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        for future in futures:
            loop.call_soon_threadsafe(_resolve, future, outcome)


class ThreadWorker(Worker):
    """A worker that runs sync code in a dedicated thread.

    Either pass a ``target`` function, called in the thread as
    ``target(worker)``, or subclass and override [`main`][fluid.ThreadWorker.main],
    with optional [`setup`][fluid.ThreadWorker.setup] and
    [`teardown`][fluid.ThreadWorker.teardown]. The thread's code loops on
    [`is_running`][fluid.Worker.is_running] (safe from the thread) and sleeps
    with [`wait_for_stop`][fluid.ThreadWorker.wait_for_stop], which returns at
    once when a stop is requested.

    ``startup()`` returns once ``setup()`` returned in the thread. An error
    raised in the thread crosses back to the loop with its traceback: it ends
    the worker and is raised by ``shutdown()`` / ``wait_for_shutdown()`` (and
    by ``startup()`` if ``setup()`` raised), like an error of ``run()``. A
    thread that ignores the stop request past the grace period is abandoned:
    the worker ends ``FORCE_STOPPED``, the thread is logged by name, shown as
    abandoned in ``status()`` and never waited for again. Starting the worker
    again starts a new thread.

    Any exception of the sync code crosses back as is, ``SystemExit`` and
    ``KeyboardInterrupt`` included: raised by ``run()``, they propagate as
    from an async worker (``ThreadWorker`` and ``ProcessWorker`` agree).

    Args:
        target: a sync function called as ``target(worker)`` in the thread;
            leave it out when a subclass overrides ``main()``.
        name: the worker's name; by default the target's or the class's name.
        stopping_grace_period: seconds the thread is given to return after a
            stop request before it is abandoned.

    Raises:
        TypeError: ``target`` is not callable, is a coroutine function, or is
            missing while ``main()`` is not overridden.
        ValueError: the grace period is negative or not finite.

    Example:
        ```python
        def poll(worker: fluid.ThreadWorker) -> None:
            while worker.is_running():
                print(requests.get(URL).status_code)  # blocking I/O is fine here
                worker.wait_for_stop(5)  # returns at once on stop

        async with fluid.ThreadWorker(poll):
            await asyncio.sleep(12)
        ```
    """

    __slots__ = ("_abandoned", "_ended", "_local", "_stop_event", "_target", "_thread")

    def __init__(
        self,
        target: Callable[[ThreadWorker], object] | None = None,
        *,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        check_sync_target(type(self), target, ThreadWorker.main)
        self._target = target
        super().__init__(name, stopping_grace_period)
        self._thread: threading.Thread | None = None
        self._stop_event: threading.Event | None = None
        self._ended: asyncio.Future[_Outcome] | None = None
        self._abandoned = False
        self._local = _Local()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread of the current or last run, ``None`` before the first start."""
        return self._thread

    # ------------------------------------------------- the code of the thread

    def setup(self) -> None:
        """Runs first in the thread; ``startup()`` returns once it returned.

        If it raises, ``startup()`` raises that error, and neither ``main()``
        nor ``teardown()`` runs.
        """

    def main(self) -> None:
        """The thread's job: by default, call ``target(self)``.

        Override it to loop until ``is_running()`` turns false. An exception
        it raises ends the worker with that error.
        """
        if self._target is not None:
            self._target(self)

    def teardown(self) -> None:
        """Runs last in the thread after ``main()``, also when ``main()`` raised.

        It does not run for a thread abandoned before ``main()`` returned.
        """

    def is_running(self) -> bool:
        """True while running and no stop was requested; safe from any thread.

        In the worker's thread it reads that thread's own stop event, so an
        abandoned thread sees ``False`` even after the worker was restarted.
        """
        stop = self._local.stop
        if stop is not None:
            return not stop.is_set()
        return self._state is _RUNNING

    def wait_for_stop(self, timeout: float | None = None) -> bool:
        """Block the thread up to ``timeout`` seconds, returning at once on a stop request.

        The interruptible sleep of thread code (``sleep()`` is async, for the
        loop). ``None`` waits until a stop is requested.

        Returns:
            True if a stop was requested, False if the timeout passed first.

        Raises:
            RuntimeError: called from the event loop's thread, where it would
                block the loop, or before the worker started.

        Example:
            ```python
            def main(self) -> None:
                while not self.wait_for_stop(1.0):
                    self.flush()
            ```
        """
        stop = self._local.stop or self._stop_event
        if stop is None or threading.get_ident() == self._thread_id:
            raise RuntimeError(
                f"wait_for_stop() of worker {self._name!r} is for its thread; "
                "on the event loop use `await worker.sleep(...)`"
            )
        return stop.wait(timeout)

    def _thread_main(
        self,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        ready: asyncio.Future[_Outcome],
        ended: asyncio.Future[_Outcome],
    ) -> None:
        self._local.stop = stop
        error = run_body(self, self._name, lambda: _resolve_threadsafe(loop, None, ready))
        _resolve_threadsafe(loop, error, ready, ended)

    # --------------------------------------------------------- on the loop

    async def _before_run(self) -> None:
        """Start the thread and wait until ``setup()`` returned in it."""
        if self._state is not _RUNNING:  # stopped while on_startup() ran
            self._ended = None
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[_Outcome] = loop.create_future()
        ended: asyncio.Future[_Outcome] = loop.create_future()
        stop = threading.Event()
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._thread_main, stop, loop, ready, ended),
            name=f"fluid:{self._name}",
            daemon=True,
        )
        self._thread, self._stop_event, self._ended = thread, stop, ended
        self._abandoned = False
        thread.start()
        try:
            error = await ready
        except asyncio.CancelledError:
            await self._stop_thread(thread, ended)
            raise
        if error is not None:
            await ended
            thread.join()
            raise error

    async def run(self) -> None:
        """Wait for the thread to end, and raise the error it ended with.

        If cancelled after the grace period of a stop request, a thread still
        running is abandoned. If cancelled without a stop request (a parent
        was forced), the thread is asked to stop and given its grace period.
        """
        thread, ended = self._thread, self._ended
        if thread is None or ended is None:
            return
        try:
            # Shielded: on a forced stop, ``ended`` stays pending and still
            # tells whether the thread finished in the meantime.
            error = await asyncio.shield(ended)
        except asyncio.CancelledError:
            await self._stop_thread(thread, ended)
            raise
        thread.join()  # its last step just ran: this returns at once
        if error is not None:
            raise error

    def default_name(self) -> str:
        return function_name(self._target) or super().default_name()

    async def status(self) -> WorkerStatus:
        """The worker's status with its thread's figures under ``thread``.

        See [`ThreadStatus`][fluid.ThreadStatus].
        """
        status = await super().status()
        thread = self._thread
        figures: ThreadStatus = {
            "name": None if thread is None else thread.name,
            "alive": thread is not None and thread.is_alive(),
            "abandoned": self._abandoned,
        }
        status["thread"] = figures
        return status

    def _stop_requested(self) -> None:
        super()._stop_requested()
        if self._stop_event is not None:
            self._stop_event.set()

    async def _stop_thread(self, thread: threading.Thread, ended: asyncio.Future[_Outcome]) -> None:
        """On a cancel: abandon the thread if it had been asked to stop already.

        A thread never asked (a parent was forced, or ``startup()`` was
        cancelled) is asked now and given its grace period; a further cancel
        abandons it at once.
        """
        stop = self._stop_event
        if stop is not None and not stop.is_set():
            stop.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(self._grace):
                    await asyncio.shield(ended)
        self._abandon(thread, ended)

    def _abandon(self, thread: threading.Thread, ended: asyncio.Future[_Outcome]) -> None:
        if self._stop_event is not None:
            self._stop_event.set()  # a parent's cancel comes without a stop request
        if ended.done() or not thread.is_alive():
            thread.join()
            return
        self._abandoned = True
        logger.error(
            "thread %r of worker %r did not stop within %ss: abandoned (it runs on as a "
            "daemon thread and is told to stop)",
            thread.name,
            self._name,
            self._grace,
        )
