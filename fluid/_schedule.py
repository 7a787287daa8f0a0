"""ScheduledWorker: run a coroutine function on a fixed rate, a fixed delay or a cron.

Why it is shaped this way (when to run is ``_plan``'s business, how to
sleep ``TimedWorker``'s):

* Runs happen in the worker's own task, one after the other: they never
  overlap. A trigger during a run is a flag; any number of them coalesce into
  one more run right after it (the protocol of ``TriggerWorker``).
* The run loop looks at its flags (stop, trigger, pause, resume), asks the
  plan whether a slot is due, runs it, or sleeps on one future with one timer
  until the pending slot. Ten thousand idle schedules cost ten thousand timer
  handles and no CPU.
* ``pause()``, ``resume()`` and the triggers only set flags and wake the
  worker: the run loop alone changes the plan, so they are safe from any
  thread.
* With ``claim=`` (``_claim``) the slots are on the wall clock, alike on
  every replica, and a due slot is claimed before it runs; a schedule
  without it pays one ``is not None`` test a run.

``@fluid.scheduled`` lives with the other decorators, in ``_decorators``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo

from ._claim import Claims, SlotClaim, check_claim
from ._cron import CronExpression
from ._plan import Missed, Plan, check_missed, check_mode
from ._policy import OnError, check_on_error, handle_error
from ._state import WorkerState
from ._status import ScheduleStatus, WorkerStatus
from ._timed import TimedWorker
from ._validate import async_callable, check_count, check_seconds, function_name
from ._worker import STOPPING_GRACE_PERIOD

__all__ = ["ScheduledWorker"]

RunFunction = Callable[[], Awaitable[bool | None]]

_RUNNING = WorkerState.RUNNING


class ScheduledWorker(TimedWorker):
    """A worker that awaits ``fn`` on a schedule: fixed rate, fixed delay or cron.

    Give exactly one of ``interval``, ``delay`` and ``cron``:

    * ``interval``: fixed rate. Runs start on a grid, ``initial_delay``,
      ``initial_delay + interval``, ... after ``startup()``, however long each
      run takes.
    * ``delay``: fixed delay. Each run starts ``delay`` seconds after the
      previous one ended.
    * ``cron``: at the times of a cron expression in the zone ``tz``.

    With ``claim``, the schedule is one of a cluster of replicas (processes
    or hosts running the same schedule under the same name) and each slot
    runs on one of them: the slots are anchored to the epoch (fixed-rate
    slots are ``k * interval`` in POSIX time, so ``interval=60`` runs on the
    minute on every replica, whenever each started), and a due slot runs on
    the replica whose ``claim`` of it succeeds; the others skip it. A slot
    runs at most once while the replicas' clocks agree within ``max_skew``
    (the page *Scaling out* draws the edges: a crash mid-run, clock skew,
    failover).
    Triggered runs are local and not claimed.

    Runs never overlap. A run that overruns its next slot, or a loop blocked
    past it, makes the slot *missed*: ``missed="skip"`` drops it and waits for
    the next slot ahead, ``missed="catch_up"`` runs every missed slot, late,
    back to back. [`trigger`][fluid.ScheduledWorker.trigger] runs ``fn`` now
    (once more after the current run, if one is in progress);
    [`pause`][fluid.ScheduledWorker.pause] and
    [`resume`][fluid.ScheduledWorker.resume] hold and restart the schedule.
    After ``max_count`` runs, or when ``fn`` returns ``False``, the worker
    ends ``STOPPED`` without an error. A stop request wakes a waiting
    schedule at once; a run in progress finishes within the grace period.

    Args:
        fn: the coroutine function to await on each run, without arguments.
        interval: seconds between the starts of two runs (fixed rate).
        delay: seconds between the end of a run and the start of the next.
        cron: a cron expression (string or
            [`CronExpression`][fluid.CronExpression]).
        tz: the zone of a cron string's times (IANA name or ``tzinfo``);
            UTC by default.
        initial_delay: seconds from ``startup()`` to the first run (for
            cron: no run before then).
        max_count: end the worker after this many runs (failed ones count).
        missed: ``"skip"`` (default) or ``"catch_up"``; fixed rate and cron.
        claim: a [`SlotClaim`][fluid.SlotClaim], such as
            ``fluid.redis.RedisSlotClaim``: run each slot on one replica
            only; with ``interval`` or ``cron``, ``missed="skip"``.
        max_skew: with ``claim``, the largest difference in seconds between
            two replicas' wall clocks (1 by default); a claim lives
            ``gap + 1 + max_skew`` seconds, ``gap`` being the time to the next slot.
        on_error: what a failing run leads to: ``"log"`` it and go on
            (default), ``"stop"`` the worker with the error, or a function
            ``(due, error)``, sync or async, where ``due`` is the aware
            datetime the run was due at.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.

    Raises:
        TypeError: ``fn`` surely returns no awaitable (see
            [`WorkerFunction`][fluid.WorkerFunction]), or an argument has
            the wrong type.
        ValueError: none or several of ``interval``, ``delay`` and ``cron``;
            a negative or zero period; a bad cron expression (the message
            names the field); ``tz`` without a cron string;
            ``missed="catch_up"`` with ``delay``; a bad ``on_error``;
            ``claim`` with ``delay``, with ``missed="catch_up"`` or with an
            interval under a millisecond; ``max_skew`` without ``claim``.

    Example:
        ```python
        async def poll_prices() -> None:
            print("polling")

        poller = fluid.ScheduledWorker(poll_prices, interval=5)
        nightly = fluid.ScheduledWorker(backup, cron="30 2 * * *", tz="Europe/London")
        async with fluid.Workers(poller, nightly):
            await asyncio.sleep(60)

        # on every replica: the report runs once a minute in the whole cluster
        from fluid.redis import RedisSlotClaim

        report = fluid.ScheduledWorker(
            send_report, interval=60, claim=RedisSlotClaim("redis://redis:6379/0")
        )
        ```
    """

    __slots__ = (
        "_claims",
        "_cron",
        "_delay",
        "_failures",
        "_fn",
        "_in_progress",
        "_initial_delay",
        "_interval",
        "_max_count",
        "_missed",
        "_on_error",
        "_paused",
        "_plan",
        "_resumed",
        "_runs",
        "_triggered",
    )

    def __init__(
        self,
        fn: RunFunction,
        *,
        interval: float | None = None,
        delay: float | None = None,
        cron: str | CronExpression | None = None,
        tz: tzinfo | str | None = None,
        initial_delay: float = 0,
        max_count: int | None = None,
        missed: Missed = "skip",
        claim: SlotClaim | None = None,
        max_skew: float | None = None,
        on_error: OnError[datetime] = "log",
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        self._fn: RunFunction = async_callable("fn", fn)
        self._interval, self._delay, self._cron = check_mode(interval, delay, cron, tz)
        self._initial_delay = check_seconds("initial_delay", initial_delay)
        self._max_count = None if max_count is None else check_count("max_count", max_count, 1)
        self._missed = check_missed(missed, delay)
        self._claims: Claims | None = check_claim(
            claim, max_skew, self._interval, self._delay, self._missed
        )
        check_on_error(on_error)
        self._on_error = on_error
        super().__init__(name, stopping_grace_period)
        self._plan: Plan | None = None
        self._triggered = self._paused = self._resumed = self._in_progress = False
        self._runs = self._failures = 0

    # ------------------------------------------------------------ properties

    def default_name(self) -> str:
        return function_name(self._fn) or super().default_name()

    @property
    def paused(self) -> bool:
        """True while the schedule is paused."""
        return self._paused

    @property
    def runs(self) -> int:
        """Runs that ended since the worker last started."""
        return self._runs

    @property
    def drift(self) -> float | None:
        """Seconds the last scheduled run started after its due time."""
        return None if self._plan is None else self._plan.drift

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due (aware), or ``None`` if none is planned now."""
        plan = self._plan
        if self._state is not _RUNNING or self._paused or plan is None:
            return None
        wall = plan.next_wall()
        return None if wall is None else datetime.fromtimestamp(wall, self._zone())

    # --------------------------------------------------------------- control

    def trigger(self) -> None:
        """Run ``fn`` now; call it from the event loop's thread.

        If a run is in progress, one more run follows it, however many times
        ``trigger`` is called meanwhile. A trigger runs even while paused, and
        one sent while the worker is stopped runs once it starts. It does not
        move the schedule's slots.

        Raises:
            RuntimeError: called from another thread than the worker's loop;
                use [`trigger_threadsafe`][fluid.ScheduledWorker.trigger_threadsafe].

        Example:
            ```python
            poller.trigger()  # poll now, then carry on with the schedule
            ```
        """
        if self._thread_id and threading.get_ident() != self._thread_id:
            raise RuntimeError(
                f"trigger() of worker {self._name!r} was called from another thread "
                "than its event loop's: use trigger_threadsafe()"
            )
        self._triggered = True
        self._poke()

    def trigger_threadsafe(self) -> None:
        """Like [`trigger`][fluid.ScheduledWorker.trigger], from any thread; never blocks.

        Example:
            ```python
            def on_config_changed() -> None:  # called by a watcher thread
                poller.trigger_threadsafe()
            ```
        """
        self._triggered = True
        self._poke()

    def pause(self) -> None:
        """Hold the schedule: no run starts until ``resume()``; safe from any thread.

        A run in progress finishes. A paused schedule has no timer at all;
        ``trigger()`` still runs it. Pausing a stopped worker makes it start
        paused.

        Example:
            ```python
            poller.pause()  # during maintenance
            ```
        """
        self._paused = True
        self._poke()

    def resume(self) -> None:
        """Restart a paused schedule; safe from any thread, idempotent.

        Slots that passed while paused are not run and not counted as missed:
        a fixed-rate or cron schedule goes on with its next slot ahead, a
        fixed-delay one runs ``delay`` seconds after the resume.

        Example:
            ```python
            poller.resume()
            ```
        """
        if self._paused:
            # In this order: a run loop that sees the pause lifted also sees
            # that it must re-plan, even when called from another thread.
            self._resumed = True
            self._paused = False
            self._poke()

    # ------------------------------------------------------------------- run

    async def run(self) -> None:
        """Run ``fn`` on the schedule until stopped, ``max_count`` or ``fn`` returns False."""
        loop = asyncio.get_running_loop()
        plan = self._new_plan(loop)
        fn, claims = self._fn, self._claims
        # Written out rather than split into helper coroutines: a coroutine
        # per wait and per run made a run cost a quarter more than a
        # hand-written asyncio.sleep loop; this way it is within a tenth
        # (bench/schedule.py), which matters with thousands of schedules.
        try:
            while self._state is _RUNNING:
                self._poked = False
                if self._resumed:
                    self._resumed = False
                    plan.resume()
                slot = None
                if self._triggered:
                    self._triggered = False
                elif self._paused or (slot := plan.take_due()) is None:
                    waiter, handle = self._sleep_until(loop, None if self._paused else plan.timer())
                    try:
                        await waiter
                    finally:
                        self._woke(handle)
                    continue
                # A slot won runs even if a stop or a pause came during the
                # claim: no other replica will run it.
                if (
                    claims is not None
                    and slot is not None
                    and not await claims.take(self._name, slot, plan.gap(slot), loop)
                ):
                    plan.forgo(slot)
                    continue
                plan.start(slot)
                self._in_progress = True
                started = loop.time()
                try:
                    result = await fn()
                except Exception as exc:
                    self._runs += 1
                    self._failures += 1
                    due = datetime.fromtimestamp(plan.wall(slot, started), self._zone())
                    await handle_error(self._name, self._on_error, due, exc)
                    result = None
                else:
                    self._runs += 1
                finally:
                    self._in_progress = False
                if not self._paused:  # slots passing while paused are not missed
                    plan.end()
                if result is False or self._runs == self._max_count:
                    return
        finally:
            if claims is not None:
                await claims.close(self._name)

    async def status(self) -> WorkerStatus:
        """The worker's status with a ``schedule`` entry of figures.

        Example:
            ```python
            status = await poller.status()
            print(status["schedule"]["next_run"], status["schedule"]["drift"])
            ```
        """
        status = await super().status()
        status["schedule"] = self._figures()
        return status

    # ------------------------------------------------------------- internals

    def _zone(self) -> tzinfo:
        return self._cron.tz if self._cron is not None else UTC

    def _figures(self) -> ScheduleStatus:
        next_run, plan = self.next_run, self._plan
        figures: ScheduleStatus = {
            "next_run": None if next_run is None else next_run.isoformat(),
            "runs": self._runs,
            "failures": self._failures,
            "overruns": plan.overruns if plan else 0,
            "skipped": plan.skipped if plan else 0,
            "drift": plan.drift if plan else None,
            "paused": self._paused,
            "in_progress": self._in_progress,
        }
        if self._claims is not None:  # the claims of a cluster-wide schedule (ClaimStatus)
            figures["claims"] = self._claims.figures()
        return figures

    def _new_plan(self, loop: asyncio.AbstractEventLoop) -> Plan:
        self._runs = self._failures = 0
        self._plan = Plan(
            loop,
            interval=self._interval,
            delay=self._delay,
            cron=self._cron,
            initial_delay=self._initial_delay,
            missed=self._missed,
            anchored=self._claims is not None,
        )
        if self._claims is not None:
            self._claims.reset()
        return self._plan
