"""OneShotWorker: run a coroutine function once, after a delay or at a wall-clock time.

The "actor" of ACME's ``BackgroundWorkerPool.newActor``, as a Worker: it
lives in trees, reports its status and stops at once when asked, even while
waiting for its time. Waiting is ``TimedWorker``'s single future and timer;
an ``at=`` time is placed with the wall clock and re-read at least hourly, as
cron times are (see ``_schedule``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from ._clock import RESYNC, TOLERANCE, wall_time
from ._errors import WorkerStateError
from ._policy import OnError, check_on_error, handle_error
from ._state import WorkerState
from ._status import ScheduleStatus, WorkerStatus
from ._timed import TimedWorker
from ._validate import async_callable, check_seconds, function_name
from ._worker import STOPPING_GRACE_PERIOD

__all__ = ["OneShotWorker"]

RetT = TypeVar("RetT")

_RUNNING = WorkerState.RUNNING


class OneShotWorker(TimedWorker, Generic[RetT]):
    """A worker that awaits ``fn`` once, after ``delay`` seconds or at time ``at``, then ends.

    The run's value is kept for [`result`][fluid.OneShotWorker.result], and
    ``finished(worker)`` is called after the run, whether it returned or
    raised. A stop request before the time comes ends the worker at once,
    without running ``fn`` and without calling ``finished``. Started again
    (for example by a supervising tree), it waits and runs once more.

    In a tree without a strategy, a child that ends stops the tree: add
    one-shot workers to a supervising tree as ``temporary`` children.

    Args:
        fn: the coroutine function to await, without arguments.
        delay: seconds from ``startup()`` to the run (0 by default).
        at: an aware datetime to run at, instead of ``delay``; a time in the
            past runs at once.
        finished: a function ``(worker)``, sync or async, called once the
            run ended; if it raises, the worker ends with that error.
        on_error: what a failing run leads to: ``"log"`` it (default),
            ``"stop"``: end the worker with the error, or a function
            ``(due, error)``, sync or async, ``due`` being the aware datetime
            the run was due at. The worker ends after its one run either way.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.

    Raises:
        TypeError: ``fn`` surely returns no awaitable (see
            [`WorkerFunction`][fluid.WorkerFunction]), or ``at`` is not a
            datetime.
        ValueError: both ``delay`` and ``at``; a negative delay; a naive
            ``at``; a bad ``on_error``.

    Example:
        ```python
        async def send_report() -> int:
            return 42

        def report_sent(worker: fluid.OneShotWorker[int]) -> None:
            print("sent", worker.result())

        at = datetime.now(UTC) + timedelta(hours=1)
        report = fluid.OneShotWorker(send_report, at=at, finished=report_sent)
        ```
    """

    __slots__ = (
        "_at",
        "_delay",
        "_drift",
        "_due",
        "_failed",
        "_finished",
        "_fn",
        "_has_run",
        "_in_progress",
        "_on_error",
        "_result",
        "_run_error",
    )

    def __init__(
        self,
        fn: Callable[[], Awaitable[RetT]],
        *,
        delay: float | None = None,
        at: datetime | None = None,
        finished: Callable[[OneShotWorker[RetT]], Awaitable[None] | None] | None = None,
        on_error: OnError[datetime] = "log",
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        self._fn: Callable[[], Awaitable[RetT]] = async_callable("fn", fn)
        if delay is not None and at is not None:
            raise ValueError("give delay or at, not both")
        self._delay = check_seconds("delay", 0 if delay is None else delay)
        self._at = None if at is None else _check_at(at)
        if finished is not None and not callable(finished):
            raise TypeError(f"finished must be callable, got {finished!r}")
        self._finished = finished
        check_on_error(on_error)
        self._on_error = on_error
        super().__init__(name, stopping_grace_period)
        self._due: float | None = None
        self._has_run = self._in_progress = self._failed = False
        self._result: RetT | None = None
        self._run_error: Exception | None = None
        self._drift: float | None = None

    def default_name(self) -> str:
        return function_name(self._fn) or super().default_name()

    @property
    def at(self) -> datetime | None:
        """The wall-clock time to run at, if one was given."""
        return self._at

    @property
    def next_run(self) -> datetime | None:
        """When the run is due (aware, UTC unless ``at`` has another zone), or ``None``."""
        loop, due = self._loop, self._due
        if self._state is not _RUNNING or self._has_run or self._in_progress or loop is None:
            return None
        if self._at is not None:
            return self._at
        assert due is not None
        return datetime.fromtimestamp(wall_time(loop) + due - loop.time(), UTC)

    def result(self) -> RetT:
        """The value the run returned.

        Raises:
            WorkerStateError: the worker has not completed a run since it last
                started.
            Exception: the error the run raised.

        Example:
            ```python
            await actor.wait_for_shutdown()
            print(actor.result())
            ```
        """
        if not self._has_run:
            raise WorkerStateError(f"worker {self._name!r} has not completed its run")
        error = self._run_error
        if error is not None:
            raise error
        return self._result  # type: ignore[return-value]

    async def run(self) -> None:
        """Wait for the due time, then await ``fn`` once and call ``finished``."""
        loop = asyncio.get_running_loop()
        self._has_run = self._failed = False
        self._result = self._run_error = None
        self._drift = None
        self._due = loop.time() + self._delay
        while self._state is _RUNNING:
            late = self._lateness(loop)
            if late >= -TOLERANCE:
                self._drift = max(late, 0.0)
                await self._run_once(loop)
                return
            when = self._due if self._at is None else loop.time() + min(-late, RESYNC)
            waiter, handle = self._sleep_until(loop, when)
            try:
                await waiter
            finally:
                self._woke(handle)

    async def status(self) -> WorkerStatus:
        """The worker's status with a ``schedule`` entry of figures.

        Example:
            ```python
            status = await actor.status()
            print(status["schedule"]["next_run"])
            ```
        """
        status = await super().status()
        next_run = self.next_run
        figures: ScheduleStatus = {
            "next_run": None if next_run is None else next_run.isoformat(),
            "runs": int(self._has_run),
            "failures": int(self._failed),
            "overruns": 0,
            "skipped": 0,
            "drift": self._drift,
            "paused": False,
            "in_progress": self._in_progress,
        }
        status["schedule"] = figures
        return status

    # ------------------------------------------------------------- internals

    def _lateness(self, loop: asyncio.AbstractEventLoop) -> float:
        """Seconds past the due time (negative: seconds to wait)."""
        if self._at is not None:
            return wall_time(loop) - self._at.timestamp()
        assert self._due is not None
        return loop.time() - self._due

    def _due_datetime(self, loop: asyncio.AbstractEventLoop) -> datetime:
        if self._at is not None:
            return self._at
        return datetime.fromtimestamp(wall_time(loop) - (self._drift or 0.0), UTC)

    async def _run_once(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self._due_datetime(loop)
        self._in_progress = True
        try:
            self._result = await self._fn()
        except Exception as exc:
            self._failed = True
            self._run_error = exc
        finally:
            self._in_progress = False
        self._has_run = True
        try:
            if self._run_error is not None:
                await handle_error(self._name, self._on_error, due, self._run_error)
        finally:
            await self._call_finished()

    async def _call_finished(self) -> None:
        finished = self._finished
        if finished is not None:
            outcome = finished(self)
            if inspect.isawaitable(outcome):
                await outcome


def _check_at(at: object) -> datetime:
    if not isinstance(at, datetime):
        raise TypeError(f"at must be a datetime, got {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at must be timezone-aware (e.g. tzinfo=UTC), got {at!r}")
    return at
