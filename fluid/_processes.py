"""ProcessWorker: sync code, or a whole async worker tree, in a child process.

Why it is shaped this way:

* The worker itself travels to the child: with the default ``spawn`` start
  method it is pickled, without the parent's loop, task or tree (only its
  name, grace period, target and the attributes of subclasses), and the
  child runs ``setup()``, ``main()`` and ``teardown()`` on that copy.
  ``startup()`` starts the process, so a worker that does not pickle fails
  there, with a clear error; it returns once ``setup()`` returned in the
  child (once the child's own worker runs, for a worker factory).
* One duplex pipe joins parent and child. The parent writes one message to
  ask for a stop; in the child ``is_running()`` and ``wait_for_stop()`` look
  for it (or for the end of the pipe: a child whose parent died stops too).
  The child writes "ready", then its outcome: nothing, or its error packed
  with its formatted traceback (see ``_child``).
* The child's end is seen from the process sentinel (``loop.add_reader``):
  a crash or a SIGKILL is noticed at once and becomes a
  ``ProcessWorkerError`` naming the exit code or the signal.
* A child that does not stop within the grace period gets SIGTERM, then
  SIGKILL ``kill_after`` seconds later, and is always joined.
* With a worker factory, the child runs the worker on its own event loop:
  the parent's stop request stops it gracefully (within its own grace
  period) and SIGTERM forces it (its ``on_shutdown`` hooks still run). The
  child ignores SIGINT: Ctrl-C in a terminal reaches the whole process
  group, and the parent decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._child import (
    KILL_AFTER,
    Child,
    PackedError,
    ProcessWorkerError,
    describe_exit,
    get_context,
    pack_error,
    serve_worker,
    unpack_error,
)
from ._pipe import Message
from ._state import WorkerState
from ._status import ProcessStatus, WorkerStatus
from ._sync_body import check_sync_target, run_body
from ._validate import check_seconds, function_name
from ._waiting import release
from ._worker import STOPPING_GRACE_PERIOD, Worker, log_in_one_line

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["ProcessWorker", "ProcessWorkerError"]

logger = logging.getLogger("fluid")

_RUNNING = WorkerState.RUNNING
_STOP = b"s"  # parent → child: please stop
_READY = b"r"  # child → parent: setup() returned
_DONE = b"d"  # child → parent: followed by the pickled outcome, a PackedError or None


class ProcessWorker(Worker):
    """A worker that runs sync code, or an async worker, in a child process.

    Three ways to give it work, all run in the child:

    * ``target``: a module-level function called as ``target(worker)``;
    * a subclass overriding [`main`][fluid.ProcessWorker.main], with optional
      [`setup`][fluid.ProcessWorker.setup] and
      [`teardown`][fluid.ProcessWorker.teardown];
    * ``worker_factory``: a module-level function returning a
      [`Worker`][fluid.Worker] (a whole tree, say), which the child runs on
      its own event loop until the parent asks it to stop. This is the
      building block of a preforking server.

    The code in the child loops on [`is_running`][fluid.ProcessWorker.is_running]
    and sleeps with [`wait_for_stop`][fluid.ProcessWorker.wait_for_stop]. In the
    child, the worker is a copy made by pickling: attributes set before
    ``startup()`` are there, changes made in the child stay there.

    ``startup()`` returns once ``setup()`` returned in the child (or the
    child's worker is running), whatever the child does next. The child's
    error comes back with its traceback, raised by ``shutdown()`` /
    ``wait_for_shutdown()`` (or by ``startup()`` if ``setup()`` raised). A
    crash or a kill is seen at once and raised as a
    [`ProcessWorkerError`][fluid.ProcessWorkerError] naming the exit code or
    the signal. After the grace period the child gets SIGTERM, then SIGKILL
    after ``kill_after`` seconds; either way it is joined. Starting the
    worker again starts a new process.

    Any exception of the sync code crosses back as is, ``SystemExit`` and
    ``KeyboardInterrupt`` included: raised by ``run()``, they propagate as
    from an async worker (``ThreadWorker`` and ``ProcessWorker`` agree).

    Args:
        target: a sync, picklable (module-level) function, called as
            ``target(worker)`` in the child.
        worker_factory: a picklable function without arguments returning the
            Worker to run in the child (use ``functools.partial`` for
            arguments). Not with ``target`` nor with an overridden ``main()``.
        name: the worker's name; by default the target's or the class's name.
        stopping_grace_period: seconds the child is given to stop before
            SIGTERM; give a worker factory's tree at least its own grace.
        kill_after: seconds between SIGTERM and SIGKILL.
        mp_context: a start method name (``"spawn"``, ``"forkserver"``,
            ``"fork"``) or a multiprocessing context; ``None`` means spawn.
        loop_factory: with ``worker_factory``, the event loop factory of the
            child (``uvloop.new_event_loop``); picklable.
        daemon: whether the child is a daemon process, terminated if the
            parent exits without stopping it. A daemon cannot start processes
            of its own: pass ``False`` if the child uses a ProcessPool or
            ProcessWorkers, and always stop the worker before exiting.

    Raises:
        TypeError: ``target`` or ``worker_factory`` is not callable,
            ``target`` is a coroutine function, or there is nothing to run.
        ValueError: both ``target`` and ``worker_factory``, an unknown start
            method, a negative grace period or ``kill_after``.

    Example:
        ```python
        def crunch(worker: fluid.ProcessWorker) -> None:  # at module level
            while worker.is_running():
                process_next_batch()  # CPU-bound, past the GIL
                worker.wait_for_stop(0.1)

        if __name__ == "__main__":
            async def main() -> None:
                async with fluid.ProcessWorker(crunch):
                    await asyncio.sleep(10)

            asyncio.run(main())
        ```
    """

    __slots__ = (
        "_child",
        "_conn",
        "_context",
        "_daemon",
        "_factory",
        "_kill_after",
        "_loop_factory",
        "_outcome",
        "_ready",
        "_setup_done",
        "_stop_seen",
        "_target",
    )

    def __init__(
        self,
        target: Callable[[ProcessWorker], object] | None = None,
        *,
        worker_factory: Callable[[], Worker] | None = None,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        kill_after: float = KILL_AFTER,
        mp_context: Any = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        daemon: bool = True,
    ) -> None:
        if worker_factory is None:
            check_sync_target(type(self), target, ProcessWorker.main)
        elif target is not None:
            raise ValueError("pass either target or worker_factory, not both")
        elif not callable(worker_factory):
            raise TypeError(f"worker_factory must be callable, got {worker_factory!r}")
        elif type(self).main is not ProcessWorker.main:
            raise ValueError("worker_factory runs in ProcessWorker.main(): do not override it")
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(f"loop_factory must be callable, got {loop_factory!r}")
        self._target = target
        self._factory = worker_factory
        super().__init__(name, stopping_grace_period)
        self._kill_after = check_seconds("kill_after", kill_after)
        self._context = get_context(mp_context)
        self._loop_factory = loop_factory
        self._daemon = bool(daemon)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._child: Child | None = None
        self._conn: Connection | None = None
        self._outcome: PackedError | None = None
        self._ready: asyncio.Future[None] | None = None
        self._setup_done = False  # the child said setup() returned
        self._stop_seen = False

    # ----------------------------------------------------- pickled to the child

    def __getstate__(self) -> dict[str, Any]:
        attributes = dict(getattr(self, "__dict__", {}))
        for cls in type(self).__mro__:
            if cls is ProcessWorker:
                break
            slots = cls.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot not in ("__dict__", "__weakref__") and hasattr(self, slot):
                    attributes[slot] = getattr(self, slot)
        return {
            "name": self._name,
            "grace": self._grace,
            "target": self._target,
            "factory": self._factory,
            "loop_factory": self._loop_factory,
            "attributes": attributes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        Worker.__init__(self, state["name"], state["grace"])
        self._target = state["target"]
        self._factory = state["factory"]
        self._loop_factory = state["loop_factory"]
        self._kill_after = KILL_AFTER
        self._daemon = True
        self._init_runtime()
        for key, value in state["attributes"].items():
            setattr(self, key, value)

    # ------------------------------------------------- the code of the child

    @property
    def pid(self) -> int | None:
        """The process id of the current or last child, ``None`` before the first start."""
        return None if self._child is None else self._child.pid

    def setup(self) -> None:
        """Runs first in the child; ``startup()`` returns once it returned.

        If it raises, ``startup()`` raises that error (with the child's
        traceback), and neither ``main()`` nor ``teardown()`` runs.
        """

    def main(self) -> None:
        """The child's job: call ``target(self)``, or run the factory's worker.

        Override it to loop until ``is_running()`` turns false. An exception
        it raises ends the worker with that error.
        """
        if self._factory is not None:
            worker = self._factory()
            if not isinstance(worker, Worker):
                raise TypeError(
                    f"worker_factory of {self._name!r} returned {worker!r}, not a Worker"
                )
            assert self._conn is not None
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(serve_worker(worker, self._conn, lambda: self._send(_READY)))
        elif self._target is not None:
            self._target(self)

    def teardown(self) -> None:
        """Runs last in the child after ``main()``, also when ``main()`` raised."""

    def is_running(self) -> bool:
        """True while running and no stop was requested.

        In the child it tells whether the parent asked for a stop (or died).
        """
        conn = self._conn
        if conn is None:
            return self._state is _RUNNING
        if not self._stop_seen and conn.poll():
            self._stop_seen = True
        return not self._stop_seen

    def wait_for_stop(self, timeout: float | None = None) -> bool:
        """Block the child up to ``timeout`` seconds, returning at once on a stop request.

        ``None`` waits until a stop is requested.

        Returns:
            True if a stop was requested, False if the timeout passed first.

        Raises:
            RuntimeError: called in the parent process; it is for the child.

        Example:
            ```python
            def main(self) -> None:
                while not self.wait_for_stop(1.0):
                    self.checkpoint()
            ```
        """
        conn = self._conn
        if conn is None:
            raise RuntimeError(
                f"wait_for_stop() of worker {self._name!r} is for the code in its child process"
            )
        if not self._stop_seen and conn.poll(timeout):
            self._stop_seen = True
        return self._stop_seen

    def _run_in_child(self, conn: Connection) -> None:
        self._conn = conn
        # With a factory, "ready" is sent once the child's worker runs.
        ready = (lambda: None) if self._factory is not None else (lambda: self._send(_READY))
        error = run_body(self, self._name, ready)
        self._send(_DONE + pickle.dumps(None if error is None else pack_error(error)))

    def _send(self, data: bytes) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):  # the parent is gone
                self._conn.send_bytes(data)

    # --------------------------------------------------------- on the loop

    async def _before_run(self) -> None:
        """Start the child and wait until ``setup()`` returned in it (or it ended)."""
        self._child, self._outcome, self._setup_done = None, None, False
        if self._state is not _RUNNING:  # stopped while on_startup() ran
            return
        self._ready = ready = asyncio.get_running_loop().create_future()
        child = Child.start(
            self._context,
            _child_main,
            (self,),
            name=f"fluid:{self._name}",
            daemon=self._daemon,
            on_message=self._on_message,
            on_exit=self._on_exit,
        )
        self._child = child  # a stop requested from now on is sent to it
        try:
            await child.started()
        except asyncio.CancelledError:
            await child.kill(self._kill_after)
            raise
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            self._child = None
            method = self._context.get_start_method()
            raise ProcessWorkerError(
                f"cannot start worker {self._name!r} in a child process: {exc}. With the "
                f"{method!r} start method the worker, its target and its attributes are "
                "pickled: define functions and classes at module level"
            ) from exc
        try:
            await ready
        except asyncio.CancelledError:
            await child.kill(self._kill_after)
            raise
        if not self._setup_done:  # it ended before setup() returned
            error = self._child_error(child)
            if error is not None:
                raise error

    async def run(self) -> None:
        """Wait for the child to exit, and raise the error it ended with.

        If cancelled (the grace period ran out, or a parent was forced), the
        child is terminated, then killed, and joined before the cancellation
        propagates.
        """
        child = self._child
        if child is None:
            return
        try:
            await child.wait()
        except asyncio.CancelledError:
            if not child.exited:
                logger.warning(
                    "worker %r: terminating its process %s (SIGTERM)", self._name, child.pid
                )
            await child.kill(self._kill_after)
            raise
        error = self._child_error(child)
        if error is not None:
            raise error

    def default_name(self) -> str:
        return function_name(self._target or self._factory) or super().default_name()

    async def status(self) -> WorkerStatus:
        """The worker's status with its child's figures under ``process``.

        See [`ProcessStatus`][fluid.ProcessStatus].
        """
        status = await super().status()
        child = self._child
        figures: ProcessStatus = {
            "pid": None if child is None else child.pid,
            "alive": child is not None and not child.exited,
            "exitcode": None if child is None else child.exitcode,
        }
        status["process"] = figures
        return status

    def _stop_requested(self) -> None:
        super()._stop_requested()
        if self._child is not None:
            self._child.send(_STOP)

    def _on_message(self, child: Child, data: Message) -> None:
        if data == _READY:
            self._setup_done = True
            if self._ready is not None:
                release(self._ready)
        elif data[:1] == _DONE:
            self._outcome = pickle.loads(memoryview(data)[1:])

    def _on_exit(self, child: Child) -> None:
        if self._ready is not None:
            release(self._ready)

    def _child_error(self, child: Child) -> BaseException | None:
        where = f"the process of worker {self._name!r} (pid {child.pid})"
        if self._outcome is not None:
            error = unpack_error(self._outcome, where)
            # logged in one line and the child's traceback (the note
            # unpack_error added): the parent's frames are fluid's own
            child_traceback = "\n" + error.__notes__[-1]
            if not isinstance(error, Exception) and self._factory is not None:
                # SystemExit, KeyboardInterrupt of the async tree the child
                # runs, a program of its own (a prefork child): that program's
                # way out, not the parent's; raised here it would end the
                # parent (a sync target's cross back as is, as a thread's do)
                wrapped = ProcessWorkerError(
                    f"{where} ended by {type(error).__name__}({_exit_argument(error)})",
                    exitcode=child.exitcode,
                )
                wrapped.__cause__ = error
                return log_in_one_line(wrapped, child_traceback)
            if self._factory is not None and self._setup_done:
                # an async tree in the child logged its failure there already
                return log_in_one_line(error, " (its traceback is logged where it was raised)")
            return log_in_one_line(error, child_traceback)
        code = child.exitcode
        if code:
            # an exit code or a signal: no Python traceback to show
            return log_in_one_line(
                ProcessWorkerError(f"{where} {describe_exit(code)}", exitcode=code)
            )
        return None


def _exit_argument(error: BaseException) -> str:
    """What ``SystemExit(3)`` was given, for the message: ``3``; nothing for others."""
    return repr(error.code) if isinstance(error, SystemExit) and error.code is not None else ""


def _child_main(worker: ProcessWorker, conn: Connection) -> None:
    """The entry point of the child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker._run_in_child(conn)
