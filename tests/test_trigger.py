"""TriggerWorker: one run per trigger, coalesced, never overlapping, never lost."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping

import pytest

import fluid
from fluid import WorkerState

from .helpers import wait_until


class Job:
    """A trigger function that counts its runs and can be held inside a run."""

    def __init__(self) -> None:
        self.runs = 0
        self.active = 0
        self.most_active = 0
        self.gate: asyncio.Event | None = None  # set: runs wait on it
        self.started = asyncio.Event()
        self.done = asyncio.Event()

    async def __call__(self) -> None:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.runs += 1
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.active -= 1
        self.done.set()

    async def wait_runs(self, count: int) -> None:
        await wait_until(lambda: self.runs >= count and self.active == 0)


async def trigger_figures(worker: fluid.TriggerWorker) -> object:
    status: Mapping[str, object] = await worker.status()
    return status["event"]


async def test_each_trigger_causes_a_run() -> None:
    job = Job()
    worker = fluid.TriggerWorker(job)
    async with worker:
        await asyncio.sleep(0)
        assert job.runs == 0  # nothing runs without a trigger
        worker.trigger()
        await job.wait_runs(1)
        worker.trigger()
        await job.wait_runs(2)
    assert job.runs == 2


async def test_triggers_during_a_run_coalesce_into_exactly_one_more_run() -> None:
    job = Job()
    job.gate = asyncio.Event()
    pending_in_second_run: list[bool] = []

    async def check() -> None:
        await job()
        pending_in_second_run.append(worker.pending)

    worker = fluid.TriggerWorker(check)
    async with worker:
        worker.trigger()
        await job.started.wait()  # the first run is held on the gate
        for _ in range(5):
            worker.trigger()
        assert worker.pending
        job.gate.set()
        await wait_until(lambda: len(pending_in_second_run) == 2)
        assert await trigger_figures(worker) == {
            "runs": 2,
            "failures": 0,
            "pending": False,
            "in_progress": False,
        }
    # The second run started after the five triggers: none was left for a third.
    assert job.runs == 2
    assert pending_in_second_run == [True, False]
    assert job.most_active == 1


async def test_a_trigger_during_the_extra_run_is_not_lost() -> None:
    job = Job()
    first = job.gate = asyncio.Event()
    worker = fluid.TriggerWorker(job)
    async with worker:
        worker.trigger()
        await job.started.wait()  # held in the first run
        worker.trigger()
        second = job.gate = asyncio.Event()
        first.set()
        await wait_until(lambda: job.runs == 2)  # held in the second run
        worker.trigger()  # after the second run started: asks for a third
        second.set()
        await job.wait_runs(3)
    assert job.runs == 3
    assert job.most_active == 1


async def test_trigger_threadsafe_from_a_thread_wakes_the_waiting_worker() -> None:
    job = Job()
    worker = fluid.TriggerWorker(job)
    async with worker:
        await asyncio.sleep(0)
        assert worker._waiter is not None  # idle, asleep on its future
        thread = threading.Thread(target=worker.trigger_threadsafe)
        thread.start()
        async with asyncio.timeout(2):
            await job.done.wait()
        thread.join()
    assert job.runs == 1


async def test_a_burst_of_threadsafe_triggers_during_a_run_is_one_more_run() -> None:
    job = Job()
    job.gate = asyncio.Event()
    worker = fluid.TriggerWorker(job)
    async with worker:
        worker.trigger()
        await job.started.wait()

        def burst() -> None:
            for _ in range(200):
                worker.trigger_threadsafe()

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert worker.pending
        job.gate.set()
        await job.wait_runs(2)
        assert not worker.pending
    assert job.runs == 2


async def test_trigger_threadsafe_from_the_loop_thread_is_a_trigger() -> None:
    job = Job()
    worker = fluid.TriggerWorker(job)
    async with worker:
        await asyncio.sleep(0)
        worker.trigger_threadsafe()
        await job.wait_runs(1)


async def test_trigger_from_another_thread_is_refused_with_a_hint() -> None:
    worker = fluid.TriggerWorker(Job())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            worker.trigger()
        except RuntimeError as exc:
            errors.append(exc)

    async with worker:
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert "use trigger_threadsafe()" in str(errors[0])


async def test_a_stop_wakes_the_idle_worker_at_once() -> None:
    worker = fluid.TriggerWorker(Job(), stopping_grace_period=30)
    await worker.startup()
    await asyncio.sleep(0)
    async with asyncio.timeout(0.5):
        await worker.shutdown()
    assert worker.worker_state is WorkerState.STOPPED


async def test_a_trigger_before_startup_runs_once_started() -> None:
    job = Job()
    worker = fluid.TriggerWorker(job)
    worker.trigger()
    worker.trigger_threadsafe()
    assert job.runs == 0
    async with worker:
        await job.wait_runs(1)
    assert job.runs == 1


async def test_returning_false_stops_the_worker() -> None:
    runs = 0

    async def once() -> bool:
        nonlocal runs
        runs += 1
        return False

    worker = fluid.TriggerWorker(once)
    await worker.startup()
    worker.trigger()
    async with asyncio.timeout(2):
        await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.STOPPED
    assert runs == 1


async def test_returning_true_or_none_keeps_waiting() -> None:
    results: list[bool | None] = [True, None]

    async def answer() -> bool | None:
        return results.pop(0)

    worker = fluid.TriggerWorker(answer)
    async with worker:
        worker.trigger()
        await wait_until(lambda: len(results) == 1)
        worker.trigger()
        await wait_until(lambda: not results)
        assert worker.is_running()


async def test_an_error_is_logged_and_the_worker_waits_for_the_next_trigger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LookupError("first run fails")

    worker = fluid.TriggerWorker(flaky, name="flaky")
    async with worker:
        worker.trigger()
        await wait_until(lambda: calls == 1)
        worker.trigger()
        await wait_until(lambda: calls == 2)
        assert worker.is_running()
        assert await trigger_figures(worker) == {
            "runs": 2,
            "failures": 1,
            "pending": False,
            "in_progress": False,
        }
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'flaky' failed to handle 1" in errors[0].getMessage()


async def test_on_error_stop_ends_the_worker_with_the_error() -> None:
    async def fail() -> None:
        raise LookupError("boom")

    worker = fluid.TriggerWorker(fail, on_error="stop")
    await worker.startup()
    worker.trigger()
    with pytest.raises(LookupError, match="boom"):
        await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.STOPPED


async def test_on_error_callback_gets_the_run_number_and_the_error() -> None:
    seen: list[tuple[int, str]] = []

    async def fail() -> None:
        raise LookupError("boom")

    async def record(run: int, error: Exception) -> None:
        seen.append((run, str(error)))

    worker = fluid.TriggerWorker(fail, on_error=record)
    async with worker:
        worker.trigger()
        await wait_until(lambda: len(seen) == 1)
        worker.trigger()
        await wait_until(lambda: len(seen) == 2)
    assert seen == [(1, "boom"), (2, "boom")]


async def test_a_forced_stop_during_a_run_keeps_the_trigger_for_the_next_start() -> None:
    job = Job()
    job.gate = asyncio.Event()  # never set: the run hangs until cancelled
    worker = fluid.TriggerWorker(job, stopping_grace_period=0.01)
    async with worker:
        worker.trigger()
        await job.started.wait()
        assert await trigger_figures(worker) == {
            "runs": 0,
            "failures": 0,
            "pending": False,
            "in_progress": True,
        }
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert worker.pending
    job.gate.set()
    async with worker:
        await job.wait_runs(2)
    assert not worker.pending


async def test_a_graceful_stop_finishes_the_run_and_keeps_a_pending_trigger() -> None:
    job = Job()
    job.gate = asyncio.Event()
    worker = fluid.TriggerWorker(job)
    await worker.startup()
    worker.trigger()
    await job.started.wait()
    worker.trigger()  # pending behind the run in progress
    worker.gracefully_stop()
    job.gate.set()
    await worker.shutdown()
    assert worker.worker_state is WorkerState.STOPPED  # the run finished: not forced
    assert job.runs == 1
    assert worker.pending


async def test_status_has_the_name_state_and_trigger_figures() -> None:
    async def noop() -> None:
        pass

    worker = fluid.TriggerWorker(noop)
    worker.trigger()
    status: Mapping[str, object] = await worker.status()
    assert (status["name"], status["state"], status["error"]) == ("noop", WorkerState.INIT, None)
    assert status["event"] == {"runs": 0, "failures": 0, "pending": True, "in_progress": False}


async def test_the_earlier_names_are_the_new_objects() -> None:
    # EventWorker and EventStatus were renamed so that "event" keeps one
    # meaning (the dispatcher's routing key); code written for them still
    # runs, and the status keeps its "event" key.
    from fluid import EventStatus, EventWorker

    assert EventWorker is fluid.TriggerWorker
    assert fluid.EventWorker is fluid.TriggerWorker
    assert EventStatus is fluid.TriggerStatus
    assert "EventWorker" not in fluid.__all__
    assert "EventStatus" not in fluid.__all__

    job = Job()
    worker = EventWorker(job)
    assert type(worker) is fluid.TriggerWorker
    async with worker:
        worker.trigger()
        await job.wait_runs(1)
    figures: EventStatus = (await worker.status())["event"]
    assert figures == {"runs": 1, "failures": 0, "pending": False, "in_progress": False}


def test_name_defaults_to_the_function_name() -> None:
    async def refresh_cache() -> None:
        pass

    assert fluid.TriggerWorker(refresh_cache).worker_name == "refresh_cache"
    assert fluid.TriggerWorker(refresh_cache, name="cache").worker_name == "cache"


def test_a_sync_function_is_rejected() -> None:
    def not_async() -> None:
        pass

    with pytest.raises(TypeError, match="fn must be a coroutine function"):
        fluid.TriggerWorker(not_async)  # type: ignore[arg-type]


def test_a_bad_error_policy_is_rejected() -> None:
    async def noop() -> None:
        pass

    with pytest.raises(ValueError, match="on_error must be"):
        fluid.TriggerWorker(noop, on_error="ignore")  # type: ignore[arg-type]


def test_a_negative_grace_period_is_rejected() -> None:
    async def noop() -> None:
        pass

    with pytest.raises(ValueError, match="stopping_grace_period"):
        fluid.TriggerWorker(noop, stopping_grace_period=-1)
