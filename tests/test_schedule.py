"""ScheduledWorker and OneShotWorker, on virtual time: every mode and policy, in milliseconds.

Each test runs in its own ``fluid.testing.VirtualTimeLoop`` (the
``virtual_time`` decorator), which starts at loop time 0 and jumps to the next
timer whenever every task waits: the times below are exact, and a test fails
if it leaves a task running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import fluid
from fluid import WorkerState
from fluid.testing import current_clock, virtual_time

from .helpers import Idle

LONDON = ZoneInfo("Europe/London")


class Job:
    """A scheduled function that records when each run started and can take time."""

    def __init__(self, takes: float = 0.0, fail: bool = False) -> None:
        self.starts: list[float] = []
        self.takes = takes
        self.fail = fail
        self.active = self.most_active = 0
        self.__name__ = "job"

    async def __call__(self) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.takes:
                await asyncio.sleep(self.takes)
        finally:
            self.active -= 1
        if self.fail:
            raise LookupError(f"run {len(self.starts)} failed")


def wall_of(loop_time: float, tz: ZoneInfo | None = None) -> datetime:
    """The virtual wall-clock time at a loop time (aware arithmetic in UTC: DST-proof)."""
    clock = current_clock()
    wall = clock.now() - timedelta(seconds=clock.time() - loop_time)
    return wall if tz is None else wall.astimezone(tz)


async def figures(worker: fluid.Worker) -> Mapping[str, object]:
    status: Mapping[str, object] = await worker.status()
    schedule = status["schedule"]
    assert isinstance(schedule, Mapping)
    return schedule


# ------------------------------------------------------------ fixed rate


@virtual_time
async def test_fixed_rate_runs_start_on_a_grid_however_long_each_run_takes() -> None:
    job = Job(takes=3)
    async with fluid.ScheduledWorker(job, interval=10):
        await asyncio.sleep(35)
    assert job.starts == [0, 10, 20, 30]


def test_fixed_rate_has_no_drift_over_many_runs() -> None:
    interval = 0.1 + 0.2  # not exact in binary: adding it up would drift
    job = Job(takes=0.25)

    async def main() -> None:
        async with fluid.ScheduledWorker(job, interval=interval):
            await asyncio.sleep(3000.1)

    fluid.testing.run(main(), clock=fluid.testing.VirtualClock(start=1e6))
    assert len(job.starts) == 10001
    late = [start - (1e6 + k * interval) for k, start in enumerate(job.starts)]
    assert max(map(abs, late)) < 1e-8  # summing the interval would be 5e-7 off


@virtual_time
async def test_initial_delay_moves_the_grid() -> None:
    job = Job()
    async with fluid.ScheduledWorker(job, interval=10, initial_delay=5):
        await asyncio.sleep(26)
    assert job.starts == [5, 15, 25]


# ----------------------------------------------------------- fixed delay


@virtual_time
async def test_fixed_delay_counts_from_the_end_of_each_run() -> None:
    job = Job(takes=3)
    async with fluid.ScheduledWorker(job, delay=10):
        await asyncio.sleep(40)
    assert job.starts == [0, 13, 26, 39]


@virtual_time
async def test_fixed_delay_with_an_initial_delay() -> None:
    job = Job(takes=1)
    async with fluid.ScheduledWorker(job, delay=10, initial_delay=2):
        await asyncio.sleep(25)
    assert job.starts == [2, 13, 24]


# --------------------------------------------------------------- trigger


@virtual_time
async def test_trigger_runs_now_and_leaves_the_grid_alone() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=60)
    async with worker:
        await asyncio.sleep(5)
        worker.trigger()
        await asyncio.sleep(60)
    assert job.starts == [0, 5, 60]


@virtual_time
async def test_triggers_during_a_run_coalesce_into_one_more_run_never_overlapping() -> None:
    job = Job(takes=10)
    worker = fluid.ScheduledWorker(job, interval=60)
    async with worker:
        await asyncio.sleep(1)  # the first run is in progress
        for _ in range(5):
            worker.trigger()
        assert (await figures(worker))["in_progress"] is True
        await asyncio.sleep(30)
    assert job.starts == [0, 10]  # one extra run, right after the first
    assert job.most_active == 1


@virtual_time
async def test_a_trigger_sent_before_startup_runs_once_started() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=60, initial_delay=30)
    thread = threading.Thread(target=worker.trigger_threadsafe)
    thread.start()
    thread.join()
    worker.trigger()  # coalesces with the first
    async with worker:
        await asyncio.sleep(1)
    assert job.starts == [0]


async def in_thread(fn: Callable[[], None]) -> None:
    """Call ``fn`` in a thread; virtual time waits for it instead of jumping ahead."""
    clock = current_clock()
    clock.autojump_threshold = 10  # real seconds; the thread returns in microseconds
    try:
        await asyncio.to_thread(fn)
    finally:
        clock.autojump_threshold = 0


@virtual_time
async def test_trigger_threadsafe_from_another_thread() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=3600, initial_delay=3600)
    async with worker:
        await asyncio.sleep(1)
        await in_thread(worker.trigger_threadsafe)
        await asyncio.sleep(1)
        assert job.starts == [1]
        with pytest.raises(RuntimeError, match="trigger_threadsafe"):
            await in_thread(worker.trigger)


@virtual_time
async def test_trigger_threadsafe_from_the_loop_thread_is_trigger() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=3600, initial_delay=3600)
    async with worker:
        worker.trigger_threadsafe()
        await asyncio.sleep(0)
        assert job.starts == [0]


# ------------------------------------------------------------- max_count


@virtual_time
async def test_max_count_ends_the_worker_cleanly() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10, max_count=3)
    await worker.startup()
    await worker.wait_for_shutdown()
    assert job.starts == [0, 10, 20]
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.runs == 3


@virtual_time
async def test_failed_and_triggered_runs_count_towards_max_count() -> None:
    job = Job(fail=True)
    worker = fluid.ScheduledWorker(job, interval=10, max_count=2, on_error=lambda due, e: None)
    worker.trigger()
    await worker.startup()
    await worker.wait_for_shutdown()
    assert job.starts == [0, 0]


@virtual_time
async def test_returning_false_ends_the_worker_cleanly() -> None:
    calls: list[float] = []

    async def until_three() -> bool:
        calls.append(asyncio.get_running_loop().time())
        return len(calls) < 3

    worker = fluid.ScheduledWorker(until_three, delay=5)
    await worker.startup()
    await worker.wait_for_shutdown()
    assert calls == [0, 5, 10]
    assert worker.worker_state is WorkerState.STOPPED


# ---------------------------------------------------- overruns and missed


class Overrun(Job):
    """Runs take no time except the third, which takes 25 s."""

    async def __call__(self) -> None:
        self.takes = 25 if len(self.starts) == 2 else 0
        await super().__call__()


@virtual_time
async def test_an_overrun_skips_the_missed_slots_by_default() -> None:
    job = Overrun()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(65)
        schedule = await figures(worker)
    assert job.starts == [0, 10, 20, 50, 60]  # 30 and 40 passed during the run
    assert schedule["overruns"] == 2
    assert schedule["skipped"] == 2
    assert job.most_active == 1


@virtual_time
async def test_an_overrun_catches_up_back_to_back_when_asked() -> None:
    job = Overrun()
    worker = fluid.ScheduledWorker(job, interval=10, missed="catch_up")
    async with worker:
        await asyncio.sleep(65)
        schedule = await figures(worker)
    assert job.starts == [0, 10, 20, 45, 45, 50, 60]
    assert schedule["overruns"] == 2
    assert schedule["skipped"] == 0
    assert job.most_active == 1


class SlowFourth(Job):
    """Runs take no time except the fourth (at 30), which takes 15 s: it ends after slot 40."""

    async def __call__(self) -> None:
        self.takes = 15 if len(self.starts) == 3 else 0
        await super().__call__()


@virtual_time
async def test_a_slot_passed_during_a_run_is_skipped_even_if_the_next_is_not_due() -> None:
    job = SlowFourth()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(61)
        schedule = await figures(worker)
    assert job.starts == [0, 10, 20, 30, 50, 60]  # 40 passed during the run at 30
    assert (schedule["overruns"], schedule["skipped"]) == (1, 1)


@virtual_time
async def test_a_slot_passed_during_a_run_runs_right_after_it_when_catching_up() -> None:
    job = SlowFourth()
    worker = fluid.ScheduledWorker(job, interval=10, missed="catch_up")
    async with worker:
        await asyncio.sleep(61)
        schedule = await figures(worker)
    assert job.starts == [0, 10, 20, 30, 45, 50, 60]
    assert (schedule["overruns"], schedule["skipped"]) == (1, 0)


@virtual_time
async def test_a_poke_just_before_the_worker_sleeps_is_not_lost() -> None:
    # A thread's trigger can land after the run loop looked at its flags and
    # before it published the future it sleeps on: it must still wake it.
    job = Job()
    raced: list[bool] = []

    class Racing(fluid.ScheduledWorker):
        def _sleep_until(
            self, loop: asyncio.AbstractEventLoop, when: float | None
        ) -> tuple[asyncio.Future[None], asyncio.TimerHandle | None]:
            if job.starts and not raced:
                raced.append(True)
                self.trigger_threadsafe()  # no waiter yet: only the flag is set
            return super()._sleep_until(loop, when)

    async with Racing(job, interval=3600):
        await asyncio.sleep(1)
    assert raced
    assert job.starts == [0, 0]  # the trigger ran at once, not an hour later


def block_loop(seconds: float) -> None:
    """Stand for a blocked event loop: time passes and no timer runs meanwhile."""
    current_clock().jump(seconds)


@virtual_time
async def test_a_late_wake_up_still_runs_its_slot_with_drift() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(1)
        block_loop(13)  # now 14: slot 10 is late, slot 20 not yet due
        await asyncio.sleep(1)
        schedule = await figures(worker)
        await asyncio.sleep(6)
    assert job.starts == [0, 14, 20]
    assert schedule["drift"] == pytest.approx(4)
    assert schedule["overruns"] == 0


@virtual_time
async def test_a_blocked_loop_skips_to_the_next_slot() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(1)
        block_loop(35)  # now 36: slots 10, 20 and 30 all passed
        await asyncio.sleep(5)
        schedule = await figures(worker)
    assert job.starts == [0, 40]
    assert schedule["overruns"] == 3
    assert schedule["skipped"] == 3


@virtual_time
async def test_a_blocked_loop_catches_up_when_asked() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10, missed="catch_up")
    async with worker:
        await asyncio.sleep(1)
        block_loop(35)
        await asyncio.sleep(5)
        schedule = await figures(worker)
    assert job.starts == [0, 36, 36, 36, 40]
    assert schedule["overruns"] == 3  # each missed slot counted once
    assert schedule["skipped"] == 0


# ---------------------------------------------------------- pause, resume


@virtual_time
async def test_pause_holds_the_schedule_and_resume_goes_on_with_the_next_slot() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(15)
        worker.pause()
        await asyncio.sleep(1)
        paused = await figures(worker)
        await asyncio.sleep(31)  # now 47: slots 20, 30 and 40 pass while paused
        worker.resume()
        await asyncio.sleep(10)
        resumed = await figures(worker)
    assert job.starts == [0, 10, 50]
    assert paused["paused"] is True
    assert paused["next_run"] is None
    assert resumed["paused"] is False
    assert resumed["overruns"] == 0  # slots passed while paused are not missed


@virtual_time
async def test_a_paused_schedule_has_no_timer_and_a_trigger_still_runs() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10)
    worker.pause()  # starts paused
    async with worker:
        await asyncio.sleep(100)
        assert job.starts == []
        worker.trigger()
        await asyncio.sleep(0)
        assert job.starts == [100]
        assert worker.paused


@virtual_time
async def test_a_trigger_while_paused_does_not_count_the_paused_slots_as_missed() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(1)
        worker.pause()
        await asyncio.sleep(44)
        worker.trigger()
        await asyncio.sleep(1)
        schedule = await figures(worker)
        worker.resume()
        await asyncio.sleep(5)
    assert job.starts == [0, 45, 50]
    assert (schedule["overruns"], schedule["skipped"]) == (0, 0)


@virtual_time
async def test_resume_of_a_fixed_delay_waits_the_delay() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, delay=10)
    async with worker:
        await asyncio.sleep(1)
        worker.pause()
        await asyncio.sleep(30)
        worker.resume()
        worker.resume()  # idempotent
        await asyncio.sleep(15)
    assert job.starts == [0, 41]


@virtual_time
async def test_pause_and_resume_from_another_thread() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10)
    async with worker:
        await asyncio.sleep(1)
        await in_thread(worker.pause)
        await asyncio.sleep(25)
        await in_thread(worker.resume)
        await asyncio.sleep(10)
    assert job.starts == [0, 30]


# ---------------------------------------------------------------- errors


@virtual_time
async def test_errors_are_logged_and_the_schedule_goes_on_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = Job(fail=True)
    worker = fluid.ScheduledWorker(job, interval=10, name="flaky")
    with caplog.at_level(logging.ERROR, logger="fluid"):
        async with worker:
            await asyncio.sleep(25)
            schedule = await figures(worker)
    assert job.starts == [0, 10, 20]
    assert schedule["failures"] == 3
    assert schedule["runs"] == 3
    assert worker.worker_state is WorkerState.STOPPED
    assert caplog.text.count("worker 'flaky' failed to handle") == 3


@virtual_time
async def test_on_error_stop_ends_the_worker_with_the_error() -> None:
    job = Job(fail=True)
    worker = fluid.ScheduledWorker(job, interval=10, on_error="stop")
    await worker.startup()
    with pytest.raises(LookupError, match="run 1 failed"):
        await worker.wait_for_shutdown()
    assert job.starts == [0]
    assert worker.worker_state is WorkerState.STOPPED


@virtual_time(wall=datetime(2024, 1, 1, 9, 0, tzinfo=UTC))
async def test_on_error_callback_gets_the_due_time_and_the_error() -> None:
    seen: list[tuple[datetime, str]] = []

    async def dead_letter(due: datetime, error: Exception) -> None:
        seen.append((due, str(error)))

    job = Job(takes=2, fail=True)
    async with fluid.ScheduledWorker(job, interval=60, on_error=dead_letter):
        await asyncio.sleep(70)
    assert seen == [
        (datetime(2024, 1, 1, 9, 0, tzinfo=UTC), "run 1 failed"),
        (datetime(2024, 1, 1, 9, 1, tzinfo=UTC), "run 2 failed"),
    ]


@virtual_time
async def test_a_failing_error_callback_ends_the_worker_with_its_error() -> None:
    def broken(due: datetime, error: Exception) -> None:
        raise RuntimeError("dead letter queue is down")

    worker = fluid.ScheduledWorker(Job(fail=True), interval=10, on_error=broken)
    await worker.startup()
    with pytest.raises(RuntimeError, match="dead letter queue is down"):
        await worker.wait_for_shutdown()


# ------------------------------------------------------------------ stop


@virtual_time
async def test_a_stop_wakes_a_worker_waiting_for_its_next_run_at_once() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=3600)
    await worker.startup()
    await asyncio.sleep(1)
    clock = current_clock()
    before = clock.time()
    await worker.shutdown()
    assert clock.time() == before  # no timer had to fire: the stop woke it
    assert worker.worker_state is WorkerState.STOPPED
    assert job.starts == [0]


@virtual_time
async def test_a_run_in_progress_finishes_within_the_grace_period() -> None:
    job = Job(takes=5)
    worker = fluid.ScheduledWorker(job, interval=60, stopping_grace_period=10)
    await worker.startup()
    await asyncio.sleep(1)
    await worker.shutdown()
    assert worker.worker_state is WorkerState.STOPPED
    assert current_clock().time() == 5


@virtual_time
async def test_a_restarted_schedule_starts_afresh() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, interval=10, max_count=2)
    for _ in range(2):
        await worker.startup()
        await worker.wait_for_shutdown()
    assert job.starts == [0, 10, 10, 20]


# ------------------------------------------------------------------ trees


@virtual_time
async def test_schedules_run_inside_a_tree_and_stop_with_it() -> None:
    fast, slow = Job(), Job()
    tree = fluid.Workers(
        fluid.ScheduledWorker(fast, interval=10, name="fast"),
        fluid.ScheduledWorker(slow, delay=25, name="slow"),
        name="app",
    )
    async with tree:
        await asyncio.sleep(55)
        status: Mapping[str, object] = await tree.status()
        await asyncio.sleep(1)
    assert fast.starts == [0, 10, 20, 30, 40, 50]
    assert slow.starts == [0, 25, 50]
    children = status["workers"]
    assert isinstance(children, list)
    assert [child["schedule"]["runs"] for child in children] == [6, 3]
    assert tree.worker_state is WorkerState.STOPPED


@virtual_time
async def test_scheduled_workers_are_found_by_name_in_a_tree() -> None:
    tree = fluid.Workers(
        *(fluid.ScheduledWorker(Job(), interval=60, name=f"poll-{i}") for i in range(3)),
        Idle(name="other"),
    )
    async with tree:
        found = tree.find("poll-*")
        assert len(found) == 3
        for worker in found:
            assert isinstance(worker, fluid.ScheduledWorker)
            worker.pause()
        assert all(w.paused for w in found if isinstance(w, fluid.ScheduledWorker))


@virtual_time
async def test_an_idle_schedule_costs_one_timer_handle() -> None:
    count = 1000
    job = Job()
    tree = fluid.Workers(*(fluid.ScheduledWorker(job, interval=60) for _ in range(count)))
    loop = asyncio.get_running_loop()
    async with tree:
        await asyncio.sleep(1)
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(timers) == count  # one per schedule, nothing else
        await asyncio.sleep(600)
    assert len(job.starts) == count * 11


# ----------------------------------------------------------------- status


@virtual_time(wall=datetime(2024, 6, 1, 12, 0, tzinfo=UTC))
async def test_status_shows_the_next_run_runs_and_drift() -> None:
    job = Job(takes=2)
    worker = fluid.ScheduledWorker(job, interval=60, initial_delay=30)
    assert worker.next_run is None  # not started
    async with worker:
        await asyncio.sleep(10)
        before = await figures(worker)
        await asyncio.sleep(21)  # the first run, at 30, is in progress
        during = await figures(worker)
        status: Mapping[str, object] = await worker.status()
    assert before == {
        "next_run": "2024-06-01T12:00:30+00:00",
        "runs": 0,
        "failures": 0,
        "overruns": 0,
        "skipped": 0,
        "drift": None,
        "paused": False,
        "in_progress": False,
    }
    assert during["in_progress"] is True
    assert during["next_run"] == "2024-06-01T12:01:30+00:00"
    assert during["drift"] == 0
    assert status["name"] == "job"
    assert (await figures(worker))["next_run"] is None  # stopped


# ------------------------------------------------------------------- cron


@virtual_time(wall=datetime(2024, 1, 1, 0, 7, tzinfo=UTC))
async def test_a_cron_schedule_runs_at_its_wall_clock_times() -> None:
    job = Job()
    worker = fluid.ScheduledWorker(job, cron="*/15 * * * *")
    async with worker:
        await asyncio.sleep(3600)
        assert worker.next_run == datetime(2024, 1, 1, 1, 15, tzinfo=UTC)
    walls = [wall_of(t) for t in job.starts]
    assert [w.strftime("%H:%M") for w in walls] == ["00:15", "00:30", "00:45", "01:00"]


@virtual_time(wall=datetime(2024, 3, 30, 23, 50, tzinfo=UTC))
async def test_an_hourly_cron_keeps_one_hour_apart_across_the_spring_change() -> None:
    job = Job()
    async with fluid.ScheduledWorker(job, cron="30 * * * *", tz="Europe/London"):
        await asyncio.sleep(4 * 3600)
    # 00:30 GMT, then 02:30, 03:30 and 04:30 BST: the clock skipped 01:30
    assert job.starts == [40 * 60 + 3600 * k for k in range(4)]


@virtual_time(wall=datetime(2024, 10, 26, 12, 0, tzinfo=UTC))
async def test_a_daily_cron_runs_once_on_the_autumn_change() -> None:
    job = Job()
    async with fluid.ScheduledWorker(job, cron="30 1 * * *", tz=LONDON):
        await asyncio.sleep(3 * 86400)
    walls = [wall_of(t, LONDON) for t in job.starts]
    assert [w.isoformat() for w in walls] == [
        "2024-10-27T01:30:00+01:00",  # the first 01:30 only
        "2024-10-28T01:30:00+00:00",
        "2024-10-29T01:30:00+00:00",
    ]


@virtual_time(wall=datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC))
async def test_a_cron_schedule_with_an_initial_delay_skips_earlier_times() -> None:
    job = Job()
    async with fluid.ScheduledWorker(job, cron="* * * * *", initial_delay=90):
        await asyncio.sleep(200)
    assert job.starts == [90, 150]  # 00:02 and 00:03: not 00:01, before the delay ended


@virtual_time(wall=datetime(2024, 1, 1, tzinfo=UTC))
async def test_a_cron_schedule_follows_a_wall_clock_set_back() -> None:
    job = Job()
    clock = current_clock()
    async with fluid.ScheduledWorker(job, cron="0 3 * * *", tz="UTC"):
        await asyncio.sleep(60)
        clock.set_wall(clock.now() - timedelta(minutes=30))  # now 23:31 the day before
        await asyncio.sleep(4 * 3600)
    assert job.starts == [60 + 3 * 3600 + 29 * 60]  # 03:00 by the new wall clock


@virtual_time(wall=datetime(2024, 1, 1, tzinfo=UTC))
async def test_a_cron_schedule_notices_a_wall_clock_set_ahead_within_the_hour() -> None:
    job = Job()
    clock = current_clock()
    worker = fluid.ScheduledWorker(job, cron="0 3 * * *")
    async with worker:
        await asyncio.sleep(60)
        clock.set_wall(clock.now() + timedelta(hours=2, minutes=30))  # now 02:31
        await asyncio.sleep(4 * 3600)
        schedule = await figures(worker)
    # The wait was for 3 h of loop time; the wall clock is read again after an
    # hour, finds 03:00 passed and runs, late, instead of at 05:30 wall time.
    assert job.starts == [3600]
    assert schedule["drift"] == 1800


# ----------------------------------------------------------- one-shot


@virtual_time
async def test_a_one_shot_worker_runs_once_after_its_delay_and_calls_finished() -> None:
    finished: list[tuple[str, int, float]] = []

    async def answer() -> int:
        return 42

    def done(worker: fluid.OneShotWorker[int]) -> None:
        finished.append((worker.worker_name, worker.result(), current_clock().time()))

    actor = fluid.OneShotWorker(answer, delay=7, finished=done)
    await actor.startup()
    await actor.wait_for_shutdown()
    assert finished == [("answer", 42, 7)]
    assert actor.worker_state is WorkerState.STOPPED
    assert actor.result() == 42


@virtual_time(wall=datetime(2024, 5, 1, 8, 0, tzinfo=UTC))
async def test_a_one_shot_worker_runs_at_a_wall_clock_time() -> None:
    ran: list[datetime] = []

    async def report() -> None:
        ran.append(current_clock().now())

    at = datetime(2024, 5, 1, 11, 30, tzinfo=ZoneInfo("Europe/Paris"))  # 09:30 UTC
    actor = fluid.OneShotWorker(report, at=at)
    async with actor:
        assert actor.next_run == at
        assert (await figures(actor))["next_run"] == "2024-05-01T11:30:00+02:00"
        await actor.wait_for_shutdown()
    assert ran == [datetime(2024, 5, 1, 9, 30, tzinfo=UTC)]
    assert current_clock().time() == 5400


@virtual_time(wall=datetime(2024, 5, 1, 8, 0, tzinfo=UTC))
async def test_a_one_shot_worker_at_a_past_time_runs_at_once_with_drift() -> None:
    actor = fluid.OneShotWorker(Job(), at=datetime(2024, 5, 1, 7, 0, tzinfo=UTC))
    await actor.startup()
    await actor.wait_for_shutdown()
    assert (await figures(actor))["drift"] == 3600
    assert current_clock().time() == 0


@virtual_time
async def test_a_one_shot_worker_stopped_before_its_time_neither_runs_nor_finishes() -> None:
    job = Job()
    finished: list[object] = []
    actor = fluid.OneShotWorker(job, delay=3600, finished=finished.append)
    await actor.startup()
    await asyncio.sleep(10)
    await actor.shutdown()
    assert job.starts == []
    assert finished == []
    assert current_clock().time() == 10
    with pytest.raises(fluid.WorkerStateError, match="has not completed its run"):
        actor.result()


@virtual_time
async def test_a_failing_one_shot_worker_reports_the_error_and_still_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished: list[str] = []

    async def done(worker: fluid.OneShotWorker[None]) -> None:
        finished.append(worker.worker_name)

    actor = fluid.OneShotWorker(Job(fail=True), delay=1, finished=done, name="once")
    with caplog.at_level(logging.ERROR, logger="fluid"):
        await actor.startup()
        await actor.wait_for_shutdown()  # "log": the error is not the worker's
    assert finished == ["once"]
    assert "worker 'once' failed to handle" in caplog.text
    with pytest.raises(LookupError, match="run 1 failed"):
        actor.result()
    assert (await figures(actor))["failures"] == 1


@virtual_time
async def test_a_one_shot_worker_with_on_error_stop_ends_with_the_error() -> None:
    finished: list[object] = []
    actor = fluid.OneShotWorker(Job(fail=True), on_error="stop", finished=finished.append)
    await actor.startup()
    with pytest.raises(LookupError):
        await actor.wait_for_shutdown()
    assert finished == [actor]


@virtual_time
async def test_a_one_shot_worker_lives_in_a_tree() -> None:
    finished = asyncio.Event()

    async def warm_cache() -> str:
        return "warm"

    actor = fluid.OneShotWorker(warm_cache, delay=30, finished=lambda w: finished.set())
    tree = fluid.Workers(Idle(name="api"), actor, name="app")
    async with tree:
        assert tree.find("warm_cache") == [actor]
        await finished.wait()
        assert actor.result() == "warm"
        assert current_clock().time() == 30
    assert tree.worker_state is WorkerState.STOPPED
    assert actor.is_stopped()


@virtual_time
async def test_temporary_one_shot_and_counted_children_leave_their_tree_running() -> None:
    done = asyncio.Event()

    async def warm_cache() -> None:
        pass

    actor = fluid.OneShotWorker(warm_cache, delay=30, finished=lambda w: done.set())
    twice = fluid.ScheduledWorker(warm_cache, interval=10, max_count=2, name="twice")
    tree = fluid.Workers(Idle(name="api"), strategy="one_for_one")
    tree.add_workers(actor, twice, restart="temporary")
    async with tree:
        await done.wait()
        await asyncio.sleep(3600)
        assert actor.is_stopped()
        assert twice.is_stopped()
        assert twice.runs == 2
        assert tree.is_running()  # their ends changed nothing


# -------------------------------------------------------------- bad input


async def poll() -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of interval, delay and cron, got none"),
        ({"interval": 1, "delay": 1}, "got interval and delay"),
        ({"interval": 1, "cron": "* * * * *"}, "got interval and cron"),
        ({"interval": -1}, "interval must be a finite number >= 0"),
        ({"interval": 0}, "interval must be greater than 0"),
        ({"delay": 0}, "delay must be greater than 0"),
        ({"delay": float("nan")}, "delay must be a finite number"),
        ({"interval": 1, "initial_delay": -5}, "initial_delay must be a finite number"),
        ({"interval": 1, "max_count": 0}, "max_count must be >= 1"),
        ({"interval": 1, "missed": "later"}, "missed must be 'skip' or 'catch_up'"),
        ({"delay": 1, "missed": "catch_up"}, "a delay schedule has no slots"),
        ({"interval": 1, "tz": "UTC"}, "tz applies to a cron string only"),
        ({"cron": "61 * * * *"}, "bad minute field '61'"),
        ({"cron": "0 0 * 13 *"}, "bad month field '13'"),
        ({"cron": "0 0 * *"}, "must have 5 fields"),
        ({"cron": "0 0 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"interval": 1, "on_error": "ignore"}, "on_error must be"),
    ],
)
def test_bad_arguments_are_rejected_at_the_call(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fluid.ScheduledWorker(poll, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        fluid.scheduled(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"interval": "5"}, {"interval": True}, {"interval": 1, "max_count": 2.5}, {"cron": 5}],
)
def test_arguments_of_the_wrong_type_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        fluid.ScheduledWorker(poll, **kwargs)  # type: ignore[arg-type]


def test_a_function_that_is_not_a_coroutine_function_is_rejected() -> None:
    def sync_poll() -> None:
        pass

    with pytest.raises(TypeError, match="fn must be a coroutine function"):
        fluid.ScheduledWorker(sync_poll, interval=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be a coroutine function"):
        fluid.OneShotWorker(sync_poll)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be a coroutine function"):
        fluid.scheduled(interval=1)(sync_poll)  # type: ignore[arg-type]


def test_bad_one_shot_arguments_are_rejected_at_the_call() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="give delay or at, not both"):
        fluid.OneShotWorker(poll, delay=1, at=at)
    with pytest.raises(ValueError, match="delay must be a finite number >= 0"):
        fluid.OneShotWorker(poll, delay=-1)
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        fluid.OneShotWorker(poll, at=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="at must be a datetime"):
        fluid.OneShotWorker(poll, at=1893456000)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="finished must be callable"):
        fluid.OneShotWorker(poll, finished="done")  # type: ignore[arg-type]


# -------------------------------------------------------------- decorator


@fluid.scheduled(interval=10, max_count=2)
async def heartbeat() -> None:
    heartbeats.append(asyncio.get_running_loop().time())


heartbeats: list[float] = []


@virtual_time
async def test_the_decorator_makes_a_scheduled_worker_named_after_the_function() -> None:
    worker: fluid.ScheduledWorker = heartbeat
    assert isinstance(worker, fluid.ScheduledWorker)
    assert worker.worker_name == "heartbeat"
    heartbeats.clear()
    await worker.startup()
    await worker.wait_for_shutdown()
    assert heartbeats == [0, 10]


def test_names_default_to_the_function_name_and_repeat_in_trees() -> None:
    assert fluid.ScheduledWorker(poll, interval=1).worker_name == "poll"
    assert fluid.ScheduledWorker(poll, interval=1, name="prices").worker_name == "prices"
    tree = fluid.Workers(
        fluid.ScheduledWorker(poll, interval=1), fluid.ScheduledWorker(poll, interval=2)
    )
    assert [w.worker_name for w in tree.workers()] == ["poll", "poll-2"]
