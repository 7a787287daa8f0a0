"""Worker: the lifecycle state machine everything in fluid is built on.

Why it is shaped this way:

* ``startup()`` runs ``on_startup()`` in the caller's task and only then
  creates the worker's task. An error in ``on_startup()`` reaches the caller
  as is, and starting ten thousand workers costs no event-loop turn each.
* The worker's task never lets an exception escape. It keeps the error and
  ``shutdown()`` / ``wait_for_shutdown()`` raise it to every caller, even
  long after the worker stopped: an error is never lost, and asyncio never
  logs "Task exception was never retrieved".
* All waiting is on futures resolved by the event itself (stop requested,
  worker exited), with ``loop.call_later`` for deadlines. Nothing polls, so a
  grace period running out costs no CPU and a stop is seen at once.
* A forced stop cancels the task. If the worker swallows that, or hangs in
  ``on_shutdown()``, it is cancelled again after each further grace period:
  ``shutdown()`` never returns while the task still runs, and it never hangs
  on a worker that honours cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import types
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._errors import WorkerStartError, WorkerStateError
from ._lifecycle import Observer, emit
from ._per_thread import thread_ident, timer_context
from ._state import FINAL_STATES, WorkerState
from ._status import WorkerStatus
from ._validate import check_name, check_seconds
from ._validate import default_name as _class_name
from ._waiting import release, wait_released

if TYPE_CHECKING:
    from ._slot import Slot
    from ._tree import Workers

__all__ = ["STOPPING_GRACE_PERIOD", "Worker"]

STOPPING_GRACE_PERIOD: float = 10.0
"""Default seconds a worker is given to stop before it is cancelled."""

logger = logging.getLogger("fluid")

_INIT = WorkerState.INIT
_RUNNING = WorkerState.RUNNING
_STOPPING = WorkerState.STOPPING
_STOPPED = WorkerState.STOPPED
_FORCE_STOPPED = WorkerState.FORCE_STOPPED
_ENDED = FINAL_STATES  # is_final, without a property call


_OUTSIDE, _WITHIN, _ITSELF = 0, 1, 2  # where a caller runs, see Worker._caller_position


class _Ready:
    """What ``sleep()`` returns when there is nothing to wait for: awaiting it returns."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that ends at once


_READY = _Ready()

# Which hooks a worker overrides (Worker._hooked, found by startup()): a
# worker that overrides none of a group skips the calls, the await of empty
# coroutines at each start and stop above all (a tree of ten thousand plain
# workers). Looked up at each start, not when the class is made, so that a
# hook patched onto the class or set on the instance is never skipped.
_BEFORE, _STOP, _AFTER, _ON_STARTUP, _ON_SHUTDOWN, _AFTER_SHUTDOWN = 1, 2, 4, 8, 16, 32
_AWAITED_AT_START = _ON_STARTUP | _BEFORE  # the hooks startup() awaits
_ALL_HOOKS = 63
_HOOKS = (
    (_BEFORE, "before_run"),
    (_BEFORE, "_before_run"),
    (_STOP, "on_stop_requested"),
    (_STOP, "_stop_requested"),
    (_AFTER, "after_run"),
    (_AFTER, "_after_run"),
    (_ON_STARTUP, "on_startup"),
    (_ON_SHUTDOWN, "on_shutdown"),
    (_AFTER_SHUTDOWN, "after_shutdown"),
)


@types.coroutine
def _yield_once() -> Generator[None, None, None]:
    """Let the loop run one turn: ``asyncio.sleep(0)`` without its coroutine."""
    yield


def _path_part(name: str) -> str:
    """``name`` if it can be one part of a worker path, else ``ValueError``.

    ``/`` separates the names of a path: two workers named ``a/b`` and ``b``
    under ``a`` would share one path, and ``find()`` would reach one of them.
    """
    if "/" in name:
        raise ValueError(f"worker name {name!r} contains '/', which separates the names of a path")
    return name


_ONE_LINE = "__fluid_logged_in_one_line__"


def log_in_one_line(error: BaseException, why: str = "") -> BaseException:
    """Mark ``error`` to be logged in one line when it ends a worker; return it.

    For an error whose traceback tells nothing here: one a child process
    logged where it was raised (``why`` says so), or a child process's exit
    code or signal, which has no Python traceback at all.
    """
    setattr(error, _ONE_LINE, why)
    return error


def one_line_reason(error: BaseException) -> str | None:
    """What ``log_in_one_line`` gave ``error``, or None if it was not marked."""
    why = getattr(error, _ONE_LINE, None)
    return why if isinstance(why, str) else None


_observed = False
"""Whether an observer was ever added, to any worker: until then no transition
is told (``emit`` walks a worker's ancestors, three times in each run of each
worker of a large tree). Never reset: set from any thread, it only turns true."""

_current_worker: contextvars.ContextVar[Worker | None] = contextvars.ContextVar(
    "fluid_current_worker", default=None
)
"""The worker whose task (or a task that task started) is running: set by ``_main``."""


class _Waiters:
    """Who waits on a worker's run besides its own sleep: made only while someone does.

    Most workers never have any (a tree's ten thousand idle children), so a
    worker keeps one field for both kinds, None until the first waiter.
    """

    __slots__ = ("on_exit", "on_stop")

    def __init__(self) -> None:
        # released at a stop request and at the end: stop_requested(), and
        # the sleeps of the worker's other tasks
        self.on_stop: set[asyncio.Future[None]] = set()
        self.on_exit: list[asyncio.Future[None]] = []  # released at the end (_wait_exit)


class Worker(ABC):
    """A long-running async job with a managed lifecycle.

    Subclasses implement [`run`][fluid.Worker.run], which should return soon
    after [`is_running`][fluid.Worker.is_running] turns false. The lifecycle is
    ``INIT → RUNNING → STOPPING → STOPPED | FORCE_STOPPED`` (see
    [`WorkerState`][fluid.WorkerState]); a stopped worker can be started again.

    Override [`on_startup`][fluid.Worker.on_startup] and
    [`on_shutdown`][fluid.Worker.on_shutdown] to open and close the resources
    the worker owns: ``on_shutdown`` runs whenever ``on_startup`` completed.

    Args:
        name: the worker's name; by default derived from the class name
            (``MyPoller`` → ``my_poller``).
        stopping_grace_period: seconds [`shutdown`][fluid.Worker.shutdown]
            waits for a graceful stop before cancelling the worker.

    Raises:
        TypeError: ``name`` is not a string or the grace period not a number.
        ValueError: the name (given or derived) contains ``/``, which
            separates the names of a [worker path][fluid.Worker.worker_path];
            or the grace period is negative or not finite.

    Example:
        ```python
        class Ticker(fluid.Worker):
            async def run(self) -> None:
                while self.is_running():
                    print("tick")
                    await self.sleep(1)  # wakes at once on stop

        async with Ticker() as ticker:
            await asyncio.sleep(3)
        ```
    """

    __slots__ = (
        "__weakref__",
        "_auto_name",
        "_error",
        "_forced",
        "_grace",
        "_hooked",
        "_loop",
        "_name",
        "_observers",
        "_run_waiters",
        "_sleep_timer",
        "_sleeper",
        "_slot",
        "_started_at",
        "_starting",
        "_state",
        "_task",
        "_thread_id",
        "_traceback",
    )

    def __init__(
        self,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        if type(name) is str and name and "/" not in name:  # the common case
            self._name = name
            self._auto_name = False
        else:
            self._name = _path_part(check_name(name) or check_name(self.default_name()))
            self._auto_name = not name
        self._grace = (
            stopping_grace_period
            if stopping_grace_period is STOPPING_GRACE_PERIOD
            else check_seconds("stopping_grace_period", stopping_grace_period)
        )
        self._state = _INIT
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[Any] | None = None  # the task in startup(), meanwhile
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._error: BaseException | None = None
        self._traceback: TracebackType | None = None
        self._sleeper: asyncio.Future[None] | None = None  # the future sleep() waits on
        self._sleep_timer: asyncio.TimerHandle | None = None  # and its timer
        self._run_waiters: _Waiters | None = None  # who else waits on this run, while someone does
        self._observers: list[Observer] | None = None
        # its place in a tree: set and owned by the tree (see _slot.py), None
        # outside one; the tree, while a member, is _parent
        self._slot: Slot | None = None
        self._started_at = 0.0
        self._forced = 0  # cancellations force_stop() made in this run
        self._hooked = _ALL_HOOKS  # which hooks to call: all until startup() looks

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {self._state.value}>"

    # ------------------------------------------------------------ properties

    @property
    def worker_name(self) -> str:
        """The worker's name, unique within its tree."""
        return self._name

    @property
    def worker_path(self) -> str:
        """The names from the root tree down to this worker: ``"root/inner/name"``."""
        names = []
        node: Worker | None = self
        while node is not None:
            names.append(node._name)
            node = node._parent
        return "/".join(reversed(names))

    def _join(self, slot: Slot, name: str) -> None:
        """Called by a new slot: the worker joins its tree under ``name``."""
        self._name = name
        self._slot = slot

    @property
    def _parent(self) -> Workers | None:
        """The tree while the worker is a member of it: its slot's, read through the slot.

        Not a field of its own: a copy of what the slot knows would be one
        more thing to keep in step, and 8 bytes on each of ten thousand workers.
        """
        slot = self._slot
        return None if slot is None else slot.parent

    @property
    def restarts(self) -> int:
        """How many times its supervising tree restarted it (the last tree, once removed)."""
        slot = self._slot
        return 0 if slot is None else slot.restarts

    @property
    def worker_state(self) -> WorkerState:
        """The current [`WorkerState`][fluid.WorkerState]."""
        return self._state

    @property
    def stopping_grace_period(self) -> float:
        """Seconds given to a graceful stop before the worker is cancelled."""
        return self._grace

    @property
    def num_workers(self) -> int:
        """How many workers this is: 1, or the number of leaves of a tree."""
        return 1

    def workers(self) -> Iterator[Worker]:
        """Iterate over the leaf workers: the worker itself, or a tree's leaves.

        Example:
            ```python
            names = [w.worker_name for w in tree.workers()]
            ```
        """
        yield self

    # ----------------------------------------------------------------- state

    def has_started(self) -> bool:
        """True once [`startup`][fluid.Worker.startup] was called."""
        return self._state is not _INIT

    def is_running(self) -> bool:
        """True while running and no stop was requested: the loop condition of ``run``."""
        return self._state is _RUNNING

    def is_stopping(self) -> bool:
        """True between a stop request and the end of ``run``."""
        return self._state is _STOPPING

    def is_stopped(self) -> bool:
        """True once the worker ended, gracefully or forced."""
        return self._state in _ENDED

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer`` with each lifecycle transition of this worker and its descendants.

        See [`Transition`][fluid.Transition]. Observers run on the event loop
        and must not block; one that raises is logged and ignored.

        Raises:
            TypeError: ``observer`` is not callable.

        Example:
            ```python
            transitions: list[fluid.Transition] = []
            tree.add_observer(transitions.append)
            ```
        """
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {observer!r}")
        global _observed
        _observed = True
        if self._observers is None:
            self._observers = []
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop calling ``observer``; does nothing if it was not added."""
        if self._observers and observer in self._observers:
            self._observers.remove(observer)

    def _set_state(self, new: WorkerState) -> None:
        if not self._state.can_become(new):
            raise WorkerStateError(f"worker {self._name!r} cannot go from {self._state} to {new}")
        self._state = new

    # -------------------------------------------------------- hooks to override

    @abstractmethod
    async def run(self) -> None:
        """The worker's job; the one method a subclass must implement.

        It runs in the worker's own task once ``on_startup`` completed and
        should return soon after ``is_running()`` turns false. An exception it
        raises ends the worker ``STOPPED`` and is raised again by
        ``shutdown()`` and ``wait_for_shutdown()``. If it does not return within
        the grace period it is cancelled (``asyncio.CancelledError``).
        """

    async def on_startup(self) -> None:
        """Called by ``startup()`` before ``run``: open the worker's resources.

        If it raises, ``startup()`` raises the same error and the worker ends
        ``STOPPED`` without calling ``on_shutdown``.
        """

    async def on_shutdown(self) -> None:
        """Called after ``run`` ended, also after an error or a forced cancel.

        It runs whenever ``on_startup`` completed: close the resources here.
        """

    def after_shutdown(self, reason: str, code: int = 0) -> None:
        """Called once the worker reached its final state; does nothing by default.

        Args:
            reason: ``"stopped"``, ``"force stopped"`` or ``"failed: <error>"``.
            code: 0 after a clean stop, 1 after an error or a forced stop, a
                value a process could exit with.

        Example:
            ```python
            class Main(fluid.Workers):
                def after_shutdown(self, reason: str, code: int = 0) -> None:
                    print(f"bye ({reason})")
            ```
        """

    # ------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        """Start the worker and return once it is ready: its start steps completed.

        The start steps run in the caller's task: ``on_startup()``, then
        ``before_run()`` (the ready handshake of its type: a tree's children
        started, a thread's ``setup()`` returned). A worker in ``INIT``,
        ``STOPPED`` or ``FORCE_STOPPED`` can be started; starting clears the
        error of a previous run.

        Raises:
            WorkerStartError: the worker is running or stopping.
            Exception: whatever a start step raised; ``after_run()`` (and,
                if ``on_startup`` had completed, ``on_shutdown()``) ran, and
                the worker is then ``STOPPED``.

        If the call is cancelled during a start step the worker ends
        ``STOPPED`` and the cancellation propagates (also when it comes
        while ``on_shutdown()`` closes after a failed step). If the worker is
        force-stopped meanwhile (``force_stop()``, or a ``shutdown()`` whose
        grace period ran out), the step is cancelled, the worker ends
        ``FORCE_STOPPED`` and this raises ``WorkerStateError``.
        """
        if self._state is _RUNNING or self._state is _STOPPING:
            raise WorkerStartError(f"worker {self._name!r} cannot start: it is {self._state}")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread_id = thread_ident()  # one int object for the thread's workers
        self._error = self._traceback = None
        self._forced = 0
        self._state = _RUNNING  # from INIT, STOPPED or FORCE_STOPPED: checked above
        self._hooked = hooked = self._overridden_hooks()
        if hooked & _AWAITED_AT_START:
            # force_stop() during on_startup() cancels this task (a hung
            # connect must not outlast the grace period); the cancel is told
            # apart from the caller's own by the _forced flag and uncancel().
            # Without such hooks nothing is awaited until the task exists,
            # so nobody can see the start in progress (a tree starting ten
            # thousand children looks its task up for none of them).
            self._starting = asyncio.current_task()
            opened = False
            try:
                if hooked & _ON_STARTUP:
                    await self.on_startup()
                opened = True
                if hooked & _BEFORE:  # a plain worker awaits no empty hook
                    await self.before_run()
                    await self._before_run()  # the type's own start, last: nothing to undo
            except BaseException as exc:
                self._starting = None
                await self._abort_startup(exc, opened)
                raise
            self._starting = None
        if self._forced:  # forced while on_startup swallowed the cancel: never run
            await self._abort_startup(asyncio.CancelledError(), opened=True)
            raise asyncio.CancelledError  # the caller's own, swallowed with ours
        # named by the worker's own name string: a formatted name would be
        # one more string a worker (about 60 bytes), the same for every run
        main = self._main()
        try:
            # no context= argument: a task factory of asyncio's older form
            # (loop, coro) does not take it
            self._task = task = loop.create_task(main, name=self._name)
        except BaseException as exc:  # a task factory that failed: the worker never ran
            main.close()
            await self._abort_startup(exc, opened=True)
            raise
        # the starter's context: a worker cancelled before its first step
        # ends in a task the callback makes, whose on_shutdown() sees it
        task.add_done_callback(self._task_done)
        self._started_at = loop.time()
        if _observed:
            emit(self, "started")

    def _overridden_hooks(self) -> int:
        """The hooks this worker overrides, on its class or its instance (see ``_HOOKS``)."""
        # written out, not a loop over _HOOKS: one attribute read each (this
        # runs at every start; the loop over names took twice as long)
        cls = type(self)
        hooked = 0
        if cls.before_run is not _W_BEFORE_RUN or cls._before_run is not _W_OWN_BEFORE_RUN:
            hooked = _BEFORE
        if (
            cls.on_stop_requested is not _W_ON_STOP_REQUESTED
            or cls._stop_requested is not _W_OWN_STOP_REQUESTED
        ):
            hooked |= _STOP
        if cls.after_run is not _W_AFTER_RUN or cls._after_run is not _W_OWN_AFTER_RUN:
            hooked |= _AFTER
        if cls.on_startup is not _W_ON_STARTUP:
            hooked |= _ON_STARTUP
        if cls.on_shutdown is not _W_ON_SHUTDOWN:
            hooked |= _ON_SHUTDOWN
        if cls.after_shutdown is not _W_AFTER_SHUTDOWN:
            hooked |= _AFTER_SHUTDOWN
        own = getattr(self, "__dict__", None)  # None for a worker with only slots
        if own:  # a hook set on the instance
            for bit, name in _HOOKS:
                if name in own:
                    hooked |= bit
        return hooked

    async def _abort_startup(self, exc: BaseException, opened: bool) -> None:
        """``startup()`` failed with ``exc``: close what was opened, end the worker.

        Raises the error for the caller of ``startup()`` when a forced stop
        (not the caller's own cancellation) interrupted it.
        """
        forced = self._forced > 0 and isinstance(exc, asyncio.CancelledError)
        task = asyncio.current_task()
        if forced and task is not None:
            for _ in range(self._forced):  # ours; what is left is the caller's
                task.uncancel()
        self._end_without_run()
        # on_shutdown runs in the caller's task here: a cancellation of the
        # caller meanwhile is the caller's own, never forgotten.
        cancelled = opened and await self._call_on_shutdown(exc, in_caller=True)
        if not forced:
            self._finish(_STOPPED, None, reported=exc)
        else:
            self._finish(_FORCE_STOPPED, None)
        if cancelled:
            raise asyncio.CancelledError  # the caller's, arrived while on_shutdown closed
        if not forced or (task is not None and task.cancelling()):
            return  # the error is raised by startup(); or the caller's cancellation wins
        raise self._forced_during_startup() from None

    def _forced_during_startup(self) -> WorkerStateError:
        return WorkerStateError(
            f"worker {self._name!r} was force-stopped during startup(): it never ran"
        )

    def gracefully_stop(self) -> None:
        """Ask the worker to stop; returns at once and never raises.

        Idempotent, and safe to call from any thread. ``is_running()`` turns
        false and anything waiting in ``sleep()`` (or a consumer waiting for
        messages) wakes immediately.

        Example:
            ```python
            loop.add_signal_handler(signal.SIGTERM, worker.gracefully_stop)
            ```
        """
        if self._state is not _RUNNING:
            return
        if self._thread_id != threading.get_ident() and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
                self._loop.call_soon_threadsafe(self.gracefully_stop)
            return
        self._state = _STOPPING
        self._wake_sleepers()
        if self._hooked & _STOP:
            self._stop_requested()  # the type's own wake-ups: never left to a super() call
            try:
                self.on_stop_requested()
            except Exception:  # a bug in a subclass must not break the stop request
                logger.exception("on_stop_requested of worker %r failed", self._name)
        if _observed:
            emit(self, "stopping")

    async def shutdown(self) -> None:
        """Stop the worker gracefully, cancel it after the grace period, wait for it.

        When it returns the worker is ``STOPPED`` or ``FORCE_STOPPED`` and owns
        no running task. A forced stop is not an error: check
        ``worker_state``.

        Raises:
            Exception: the error ``run`` (or ``on_shutdown``) ended with, also
                when the worker had already stopped.
            WorkerStateError: called from the worker's own task (its ``run()``,
                ``on_startup()``, or those of a descendant in a tree): it would
                wait for itself forever. Call ``gracefully_stop()`` and return
                instead.

        If the call itself is cancelled, the worker is cancelled at once and
        waited for before the cancellation propagates: no orphan task. (Called
        from a task that the worker itself started, the cancellation propagates
        at once: the worker waits for that task, so it cannot wait for the
        worker.) A stop requested while ``startup()`` is still in a start step
        (``on_startup()``, ``before_run()``) in another task is forced after the grace period like
        any other: that ``startup()`` then raises ``WorkerStateError``.
        """
        inside = self._caller_inside("shutdown")  # before anything changes
        self.gracefully_stop()
        if self._state is not _INIT and self._state not in _ENDED:
            try:
                # Most workers end within the loop turn that delivers the stop:
                # look once before paying for a waiter and a grace-period timer.
                await _yield_once()
                if self._state not in _ENDED:
                    await self._wait_or_force()
            except asyncio.CancelledError:
                await self._force_for_cancelled_caller("shutdown", inside)
                raise
        self._raise_error()

    async def wait_for_shutdown(self) -> None:
        """Wait for the worker to end, without asking it to stop.

        Returns at once for a worker never started.

        Raises:
            Exception: the error ``run`` ended with, as ``shutdown`` does.
            WorkerStateError: called from the worker's own task: it would
                wait for itself forever.
        """
        self._caller_inside("wait_for_shutdown")
        while self._state is not _INIT and self._state not in _ENDED:
            await self._wait_exit(None)
        self._raise_error()

    def force_stop(self, reason: str = "") -> None:
        """Cancel the worker now, skipping the grace period; returns at once.

        The worker's task (or the ``startup()`` still in a start step)
        is cancelled with ``reason``; ``run()`` sees ``asyncio.CancelledError``,
        ``on_shutdown()`` still runs and the worker ends ``FORCE_STOPPED``.
        Does nothing for a worker not running. Calling it again cancels again,
        for a worker that swallowed the first cancellation. Safe from any
        thread. Use [`wait_stopped`][fluid.Worker.wait_stopped] to wait for
        the end.

        Example:
            ```python
            worker.force_stop("the deploy is out of time")
            await worker.wait_stopped()
            assert worker.worker_state is fluid.WorkerState.FORCE_STOPPED
            ```
        """
        if self._state is _INIT or self._state in _ENDED:
            return
        if self._thread_id != threading.get_ident() and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
                self._loop.call_soon_threadsafe(self.force_stop, reason)
            return
        self._cancel_task(reason or f"worker {self._name!r} was force-stopped")

    async def wait_stopped(self) -> None:
        """Wait until the worker ended, without asking it to stop or raising its error.

        Returns at once for a worker never started or already stopped. A
        worker that was force-stopped and swallows the cancellation is
        cancelled again after each grace period (at least one second).

        If this call is cancelled, the worker is force-stopped and waited for
        before the cancellation propagates: no orphan task.

        Raises:
            WorkerStateError: called from the worker's own task: it would
                wait for itself forever.

        Example:
            ```python
            worker.force_stop()
            await worker.wait_stopped()
            ```
        """
        inside = self._caller_inside("wait_stopped")
        try:
            while self._state is not _INIT and self._state not in _ENDED:
                if self._forced:
                    await self._wait_forced()
                else:
                    await self._wait_exit(None)
        except asyncio.CancelledError:
            await self._force_for_cancelled_caller("wait_stopped", inside)
            raise

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Sleep up to ``seconds``, waking at once when a stop is requested.

        Use it in ``run`` instead of ``asyncio.sleep`` so that a stop is prompt.
        Returns immediately if the worker is not running. The awaitable is the
        future the worker wakes, not a coroutine: an idle worker holds no
        coroutine frame for its sleep. So ``asyncio.create_task()`` and
        ``TaskGroup.create_task()`` refuse it (a ``TypeError``); to run a
        sleep beside other work, use ``asyncio.ensure_future(worker.sleep(n))``,
        which takes it as it is (cancelling it ends the sleep).

        Example:
            ```python
            async def run(self) -> None:
                while self.is_running():
                    await self.poll()
                    await self.sleep(5)
            ```
        """
        if self._state is not _RUNNING:
            return _READY
        if seconds <= 0:
            return asyncio.sleep(0)
        # wait_released() written out, and no coroutine: every idle worker
        # sleeps here, and a frame and a set less per sleeper is about 470
        # bytes. The worker holds the one future it sleeps on, and its timer,
        # whose callback runs in the thread's empty context (see _per_thread).
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        current = self._sleeper
        if current is None or current.done():
            timer = self._sleep_timer
            if timer is not None:
                timer.cancel()  # the last sleep was cancelled before its time
            self._sleeper = waiter
            self._sleep_timer = loop.call_later(seconds, release, waiter, context=timer_context())
            return waiter
        # another task of this worker sleeps as well: a waiter of the set
        timer = loop.call_later(seconds, release, waiter, context=timer_context())
        self._add_waiter(waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
        return waiter

    async def status(self) -> WorkerStatus:
        """A JSON-serialisable snapshot: name, path, state, restarts, uptime and error.

        Subclasses add their own figures (queues add ``queue``, trees add
        ``workers``).

        Example:
            ```python
            status = await worker.status()
            assert status["state"] == "running"
            ```
        """
        error = self._error
        running = self._state is _RUNNING or self._state is _STOPPING
        return {
            "name": self._name,
            "path": self.worker_path,
            "state": self._state,
            "restarts": self.restarts,
            "uptime": self._loop.time() - self._started_at if running and self._loop else None,
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }

    async def __aenter__(self) -> Self:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    # ----------------------------------------- the protocol of a worker type
    #
    # What a new kind of worker overrides or calls, besides run():
    # docs/extending.md. fluid's own types keep their own steps out of these
    # public hooks (in _before_run, _stop_requested and _after_run below), so
    # that a subclass of a fluid type may override any of them without
    # calling super(): the tree still starts its children, the consumer still
    # wakes and closes its channel.

    def default_name(self) -> str:
        """The name of a worker created without one.

        By default the class name in snake case (``MyPoller`` → ``my_poller``);
        worker types that wrap a function return the function's name. It is
        called by ``Worker.__init__``: a subclass sets what it reads before
        calling ``super().__init__``. In a tree, a default name that is taken
        gets a numeric suffix (``poll-2``) where an explicit one is refused.
        A name may not contain ``/``: it separates the names of a worker path.

        Example:
            ```python
            class Poller(fluid.Worker):
                def __init__(self, host: str) -> None:
                    self.host = host
                    super().__init__()

                def default_name(self) -> str:
                    return f"poll {self.host}"
            ```
        """
        return _class_name(self)

    async def before_run(self) -> None:
        """The worker type's own start, after ``on_startup`` and before ``run``.

        This is the ready handshake of every worker type: ``startup()``
        returns, and the ``started`` transition is emitted, only once it
        returned. A type that is ready later than ``on_startup`` (a server
        listening, a connection made) starts that here and awaits it. It
        runs in the task of ``startup()``; a stop requested meanwhile shows
        in ``is_running()`` (and ``on_stop_requested()`` may run while it
        awaits), and a forced stop cancels it. If it raises, ``after_run``
        and ``on_shutdown`` still run and ``startup()`` raises the error.

        In a subclass of one of fluid's own types it runs before that type
        starts what it drives (a tree's children, a thread, a child process),
        and needs no ``super()`` call.

        Example:
            ```python
            class Listener(fluid.Worker):
                async def before_run(self) -> None:
                    self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)

                async def run(self) -> None:
                    await self.stop_requested()

                def after_run(self) -> None:
                    self.server.close()
            ```
        """

    def on_stop_requested(self) -> None:
        """Called on the loop's thread the moment a graceful stop is requested.

        For what must hear of the stop at once and is not a future: a
        thread's ``threading.Event``, a pipe to a child, a socket to close.
        (Code that can await uses [`stop_requested`][fluid.Worker.stop_requested]
        instead; ``sleep()`` and those futures are woken before this is
        called, and so are fluid's own types: a subclass of one needs no
        ``super()`` call.) It may run before ``before_run()`` returned, when
        the stop comes during the start. It must not block; an error it
        raises is logged and the stop goes on.

        Example:
            ```python
            class Pump(fluid.Worker):
                def on_stop_requested(self) -> None:
                    self.pump_thread_stop.set()
            ```
        """

    def after_run(self) -> None:
        """Called once ``run`` ended, or once the worker ends without having run.

        The counterpart of ``before_run``: release what it set up and report
        what is left. It is called before ``on_shutdown``: in the worker's
        task after a run; from ``startup()`` when ``on_startup`` or
        ``before_run`` failed or was forced. An error it raises is logged
        (and after a run becomes the worker's error). fluid's own types end
        their part afterwards (a consumer closes its channel) whether or not
        this calls ``super()``.

        Example:
            ```python
            class Listener(fluid.Worker):
                def after_run(self) -> None:
                    if self.server is not None:
                        self.server.close()
            ```
        """

    def stop_requested(self) -> asyncio.Future[None]:
        """A future done once a stop is requested (at once if the worker is not running).

        Await it where ``run`` has nothing else to wait for, or race it with
        other work in ``asyncio.wait``. It is resolved by the stop request
        itself, with no polling, and at the latest when the worker ends,
        however it ends. Each call makes a future that the worker holds until
        then: call it once per wait, and cancel one you stop awaiting
        (cancelling it only ends that wait; the worker lets it go).

        Raises:
            RuntimeError: no event loop runs, or (while the worker runs) the
                caller's loop is not the worker's: a thread of a
                ``ThreadWorker`` waits with ``wait_for_stop()`` instead.

        Example:
            ```python
            class Server(fluid.Worker):
                async def run(self) -> None:
                    await self.stop_requested()  # serve until asked to stop
            ```
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self._state is not _RUNNING:
            waiter.set_result(None)
            return waiter
        if loop is not self._loop:
            raise RuntimeError(
                f"stop_requested() of worker {self._name!r} was called on another event "
                "loop than the worker's; from a thread, use the thread's own means "
                "(ThreadWorker.wait_for_stop())"
            )
        self._add_waiter(waiter)
        return waiter

    def _add_waiter(self, waiter: asyncio.Future[None]) -> None:
        """Keep ``waiter`` until a stop request or the end of the run resolves it."""
        waiters = self._run_waiters
        if waiters is None:
            waiters = self._run_waiters = _Waiters()
        on_stop = waiters.on_stop
        on_stop.add(waiter)
        waiter.add_done_callback(on_stop.discard)

    # fluid's own types' steps, around the public hooks (see the note above)

    async def _before_run(self) -> None:
        """The type's own start, after ``before_run()``: children, a thread, a child."""

    def _stop_requested(self) -> None:
        """The type's own wake-ups on a stop request, before ``on_stop_requested()``."""

    def _after_run(self) -> None:
        """The type's own end, after ``after_run()``: a consumer closes its channel."""

    def _wake_sleepers(self) -> None:
        """Resolve the sleep in progress and every kept waiter; the sleep's timer goes."""
        sleeper = self._sleeper
        if sleeper is not None:
            self._sleeper = None
            release(sleeper)
        timer = self._sleep_timer
        if timer is not None:  # also the timer of a sleep its task's cancel ended
            self._sleep_timer = None
            timer.cancel()
        waiters = self._run_waiters
        if waiters is not None:
            for waiter in waiters.on_stop:  # nothing leaves the set meanwhile: discards come later
                release(waiter)

    def _fail(self, error: BaseException) -> None:
        """Record ``error`` as the worker's outcome unless it already has one."""
        if self._error is None:
            self._error = error
            self._traceback = error.__traceback__

    # ------------------------------------------------------------ the task

    async def _main(self) -> None:
        task = self._task
        if task is not None:
            # From its first step on, _main ends the worker itself: the done
            # callback (for a task cancelled before that step) goes, and with
            # it a loop turn at each stop and its bytes while the worker runs.
            task.remove_done_callback(self._task_done)
        _current_worker.set(self)  # this task's own context: see _caller_inside
        forced = False
        try:
            await self.run()
        except asyncio.CancelledError as exc:
            if self._forced or (task is not None and task.cancelling()):
                forced = True  # asked for: a forced stop, or a cancel of the task
                self._uncancel()
            else:
                # Nobody asked: run() raised it itself (an inner task's cancel
                # let through). An abnormal end, kept and raised to waiters.
                logger.error("worker %r ended by a cancellation nobody asked for", self._name)
                self._fail(exc)
        except Exception as exc:
            self._run_failed(exc)
        except GeneratorExit:  # the coroutine is being closed: no await is possible
            self._watch_end(task)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit
            self._fail(exc)
            self._end_of_run()
            await self._call_on_shutdown(exc)
            self._finish(_STOPPED, exc)
            self._watch_end(task)  # marks the error retrieved as it leaves the loop
            raise
        try:
            self._end_of_run()
            if self._hooked & _ON_SHUTDOWN:  # no coroutine made for a hook not overridden
                forced = await self._call_on_shutdown(None) or forced
            self._finish(_FORCE_STOPPED if forced else _STOPPED, self._error)
        except BaseException:
            self._watch_end(task)  # what escaped ends the worker from the done callback
            raise

    def _run_failed(self, error: Exception) -> None:
        """``run()`` raised ``error``: log it and keep it as the outcome.

        Out of ``_main``, as everything but the await of ``run()`` is: the
        frame of ``_main`` lives as long as the worker runs, and its size
        grows with the locals and the call arguments written in it.
        """
        why = one_line_reason(error)
        if why is not None:
            logger.error("worker %r failed: %s: %s%s", self._name, type(error).__name__, error, why)
        else:
            logger.error("worker %r failed", self._name, exc_info=error)
        self._fail(error)

    def _watch_end(self, task: asyncio.Task[None] | None) -> None:
        """Give ``task``'s end back to ``_task_done``: something leaves ``_main`` abnormally."""
        if task is not None:
            task.add_done_callback(self._task_done)

    def _end_of_run(self) -> None:
        if not self._hooked & _AFTER:
            return
        try:
            self.after_run()
        except Exception as exc:  # a bug in a subclass must not leave the task half-done
            logger.error("worker %r failed after its run", self._name, exc_info=exc)
            self._fail(exc)
        try:
            self._after_run()  # the type's own end: runs even if after_run() failed
        except Exception as exc:
            logger.error("worker %r failed after its run", self._name, exc_info=exc)
            self._fail(exc)

    def _end_without_run(self) -> None:
        """``startup()`` failed: the hooks of a run's end, errors logged (startup raises)."""
        for hook in (self.after_run, self._after_run):
            try:
                hook()
            except Exception:  # a bug in a subclass must not leave the worker half-done
                logger.exception("worker %r failed after a startup that did not run", self._name)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task is not self._task or self._state in _ENDED:
            if not task.cancelled():
                # KeyboardInterrupt or SystemExit left _main() on purpose, after
                # the worker was finished and the error kept: it propagates out
                # of the loop; mark it retrieved so asyncio does not log it too.
                task.exception()
            return
        if task.cancelled():
            # Cancelled before its first step, _main() never ran: finish the
            # lifecycle in a new task so that on_shutdown() still runs.
            self._task = asyncio.get_running_loop().create_task(
                self._cancelled_before_start(), name=task.get_name()
            )
            return
        # Something escaped _main() itself: end the worker with it, never hang.
        error = task.exception()
        logger.error("worker %r ended abnormally", self._name, exc_info=error)
        self._finish(_STOPPED, error)

    async def _cancelled_before_start(self) -> None:
        self._end_of_run()
        await self._call_on_shutdown(None)
        self._finish(_FORCE_STOPPED, None)

    async def _call_on_shutdown(self, error: BaseException | None, in_caller: bool = False) -> bool:
        """Run ``on_shutdown``; return True if it was cancelled.

        In the worker's own task a cancellation is the forced stop, done with
        now: it is forgotten. In the caller's task (``startup()`` failed) it
        is the caller's own and stays, for the caller to raise.
        """
        if not self._hooked & _ON_SHUTDOWN:
            return False
        try:
            await self.on_shutdown()
        except asyncio.CancelledError:
            logger.warning("on_shutdown of worker %r was cancelled", self._name)
            if not in_caller:
                self._uncancel()
            return True
        except Exception as exc:
            # Logged when it happens, as an error of run() is: kept as the
            # outcome it may still be cleared by a restart, so never unlogged.
            logger.error("on_shutdown of worker %r failed", self._name, exc_info=exc)
            if self._error is None and error is None:
                self._fail(exc)
        return False

    def _uncancel(self) -> None:
        """Forget the cancellations of the worker's own task: the forced stop is done."""
        task = asyncio.current_task()
        if task is not None:
            while task.uncancel():
                pass

    def _finish(
        self,
        state: WorkerState,
        error: BaseException | None,
        *,
        reported: BaseException | None = None,
    ) -> None:
        """Enter a final state, wake the waiters, tell after_shutdown and the parent.

        ``reported`` is an error already raised to a caller (by ``startup()``):
        after_shutdown hears of it, but it is not kept to be raised again.
        """
        task, self._task = self._task, None
        self._set_state(state)
        if error is not None:
            self._fail(error)
        # stop_requested() futures of this run are done once it ended, however it ended
        self._wake_sleepers()
        waiters, self._run_waiters = self._run_waiters, None
        if waiters is not None:
            for waiter in waiters.on_exit:
                release(waiter)
        self._notify_after_shutdown(reported)
        if not _observed:
            pass
        elif self._error is not None or reported is not None:
            emit(self, "crashed", error=self._error or reported)
        else:
            emit(self, "force_stopped" if state is _FORCE_STOPPED else "stopped")
        slot = self._slot
        if slot is not None and task is not None:
            slot.exited()  # the tree hears of the end of the worker's task, if it still owns it

    def _notify_after_shutdown(self, reported: BaseException | None) -> None:
        if not self._hooked & _AFTER_SHUTDOWN:
            return
        error = self._error or reported
        if error is not None:
            reason, code = f"failed: {type(error).__name__}: {error}", 1
        elif self._state is _FORCE_STOPPED:
            reason, code = "force stopped", 1
        else:
            reason, code = "stopped", 0
        try:
            self.after_shutdown(reason, code=code)
        except Exception:
            logger.exception("after_shutdown of worker %r failed", self._name)

    def _raise_error(self) -> None:
        error = self._error
        if error is not None:
            raise error.with_traceback(self._traceback)

    def _caller_inside(self, method: str) -> bool:
        """Whether the caller runs inside this worker; raise if it *is* the worker.

        A call from the worker's own task (or its ``startup()``, or those of a
        descendant) would wait for itself forever: that raises. A call from a
        task the worker started returns True: such a task must not wait for
        the worker uninterruptedly, since the worker may be waiting for it.
        """
        position = self._caller_position()
        if position == _ITSELF:
            raise self._self_wait_error(method)
        return position == _WITHIN

    def _caller_position(self) -> int:
        """Where the current task runs: outside the worker, within it, or as itself.

        Cheap when the answer is "outside", as it is for a tree stopping ten
        thousand children: one context-variable read and a walk up a few
        parents; the current task is looked up only when it can matter.
        """
        starting = self._starting
        if starting is not None and asyncio.current_task() is starting:
            return _ITSELF
        inner = node = _current_worker.get()
        while node is not None:
            if node is self:
                assert inner is not None
                return _ITSELF if asyncio.current_task() is inner._task else _WITHIN
            node = node._parent
        return _OUTSIDE

    def _self_wait_error(self, method: str) -> WorkerStateError:
        return WorkerStateError(
            f"{method}() of worker {self._name!r} was awaited from inside the worker "
            "(its own run() or on_startup(), or a descendant's): it would wait for itself; "
            "call gracefully_stop() and return instead"
        )

    def _cancel_task(self, reason: str) -> None:
        """Cancel the worker's task, or the ``startup()`` in progress, counting it as ours."""
        task = self._task if self._task is not None else self._starting
        if task is not None and not task.done():
            self._forced += 1
            task.cancel(reason)

    def _cancel_again(self) -> None:
        """Cancel a forced worker that is still running (it swallowed a cancellation)."""
        self._cancel_task(f"worker {self._name!r} is being cancelled again")

    async def _wait_exit(self, timeout: float | None) -> bool:
        """Wait until the worker ends or ``timeout`` passes; True if it ended."""
        if self._state in _ENDED:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._run_waiters
        if waiters is None:
            waiters = self._run_waiters = _Waiters()
        on_exit = waiters.on_exit
        on_exit.append(waiter)
        try:
            await wait_released(waiter, timeout)
        finally:
            if self._state not in _ENDED:
                with contextlib.suppress(ValueError):
                    on_exit.remove(waiter)
        return self._state in _ENDED

    async def _wait_or_force(self) -> None:
        if await self._wait_exit(self._grace):
            return
        logger.warning(
            "worker %r did not stop within its grace period of %ss: cancelling it",
            self._name,
            self._grace,
        )
        self.force_stop(f"worker {self._name!r} did not stop within {self._grace}s")
        await self._wait_forced()

    async def _wait_forced(self) -> None:
        """Wait for a forced worker, cancelling it again each grace period (at least 1 s)."""
        while not await self._wait_exit(max(self._grace, 1.0)):
            logger.error("worker %r is still running after cancel", self._name)
            self._cancel_again()

    async def _force_for_cancelled_caller(self, method: str, inside: bool) -> None:
        """The caller of ``method`` was cancelled: force the worker and wait for it.

        Not from a task the worker started: the worker may be waiting for
        that task, so it cannot wait for the worker; its cancellation goes on.
        """
        if not self._forced:  # forced already: the same stop asked again (see below)
            self.force_stop(f"{method}() of worker {self._name!r} was cancelled")
        if not inside:
            await self._wait_exit_uninterrupted()

    async def _wait_exit_uninterrupted(self) -> None:
        """Wait for the end of a forced worker, even if the caller is cancelled again.

        A worker that swallows the cancel is cancelled again after each grace
        period (at least a second). A new cancellation of the caller meanwhile
        is the same stop asked again, not a new one: anyio re-delivers the
        cancel of a cancelled scope at every loop turn, and cancelling the
        worker at each would cut its ``on_shutdown()`` at its first await. The
        callers raise their own cancellation afterwards.
        """
        loop = asyncio.get_running_loop()
        period = max(self._grace, 1.0)
        deadline = loop.time() + period
        while self._state not in _ENDED:
            try:
                if await self._wait_exit(max(0.0, deadline - loop.time())):
                    return
            except asyncio.CancelledError:
                continue  # asked again: the worker is forced already
            logger.error("worker %r is still running after cancel", self._name)
            self._cancel_again()
            deadline = loop.time() + period


# Worker's own hooks, for _overridden_hooks
_W_BEFORE_RUN = Worker.before_run
_W_OWN_BEFORE_RUN = Worker._before_run
_W_ON_STOP_REQUESTED = Worker.on_stop_requested
_W_OWN_STOP_REQUESTED = Worker._stop_requested
_W_AFTER_RUN = Worker.after_run
_W_OWN_AFTER_RUN = Worker._after_run
_W_ON_STARTUP = Worker.on_startup
_W_ON_SHUTDOWN = Worker.on_shutdown
_W_AFTER_SHUTDOWN = Worker.after_shutdown
