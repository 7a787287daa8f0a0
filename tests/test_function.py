"""WorkerFunction: a coroutine function in a loop with a heartbeat."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

import fluid
from fluid import WorkerState
from fluid import _function as fluid_function

from .helpers import wait_until


async def test_the_function_runs_repeatedly_until_stopped() -> None:
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1

    worker = fluid.WorkerFunction(tick, heartbeat=0.001)
    async with worker:
        await wait_until(lambda: calls >= 3)
    assert worker.worker_state is WorkerState.STOPPED
    stopped_at = calls
    await asyncio.sleep(0.01)
    assert calls == stopped_at


async def test_a_long_heartbeat_does_not_delay_the_stop() -> None:
    async def tick() -> None:
        pass

    worker = fluid.WorkerFunction(tick, heartbeat=60)
    await worker.startup()
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        await worker.shutdown()


async def test_an_error_in_the_function_ends_the_worker_with_it() -> None:
    async def fail() -> None:
        raise LookupError("gone")

    worker = fluid.WorkerFunction(fail)
    await worker.startup()
    with pytest.raises(LookupError, match="gone"):
        await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.STOPPED


def test_name_defaults_to_the_function_name() -> None:
    async def fetch_prices() -> None:
        pass

    assert fluid.WorkerFunction(fetch_prices).worker_name == "fetch_prices"
    assert fluid.WorkerFunction(fetch_prices, name="prices").worker_name == "prices"
    lam = fluid.WorkerFunction(functools.partial(fetch_prices))
    assert lam.worker_name == "worker_function"


def test_heartbeat_is_exposed() -> None:
    async def noop() -> None:
        pass

    assert fluid.WorkerFunction(noop, heartbeat=2).heartbeat == 2.0


def test_a_sync_function_is_rejected() -> None:
    def not_async() -> None:
        pass

    with pytest.raises(TypeError, match="run_function must be a coroutine function"):
        fluid.WorkerFunction(not_async)  # type: ignore[arg-type]


def test_an_async_callable_object_is_accepted() -> None:
    class Job:
        async def __call__(self) -> None:
            pass

    assert fluid.WorkerFunction(Job()).worker_name == "worker_function"


@pytest.mark.parametrize("heartbeat", [-0.5, float("nan")])
def test_a_bad_heartbeat_is_rejected(heartbeat: float) -> None:
    async def noop() -> None:
        pass

    with pytest.raises(ValueError, match="heartbeat"):
        fluid.WorkerFunction(noop, heartbeat=heartbeat)


async def test_returning_false_stops_the_worker_without_an_error() -> None:
    answers = [None, True, False]
    calls = 0

    async def until_done() -> bool | None:
        nonlocal calls
        calls += 1
        return answers.pop(0)

    worker = fluid.WorkerFunction(until_done, heartbeat=0.001)
    await worker.startup()
    async with asyncio.timeout(2):
        await worker.wait_for_shutdown()  # raises if the worker ended with an error
    assert worker.worker_state is WorkerState.STOPPED
    assert calls == 3  # None and True go on, False stops


async def test_a_falsy_value_other_than_false_does_not_stop_the_worker() -> None:
    calls = 0

    async def zero() -> bool | None:
        nonlocal calls
        calls += 1
        return 0  # type: ignore[return-value]

    worker = fluid.WorkerFunction(zero)
    async with worker:
        await wait_until(lambda: calls >= 3)
        assert worker.is_running()


# ------------------------------------------- heartbeat=0 and a busy loop


def _busy_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "has not waited" in r.getMessage()]


async def test_a_function_that_never_waits_with_no_heartbeat_is_reported_once_per_run(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fluid_function, "_BUSY_FOR", 0.1)  # not 2 s: a test
    calls = 0

    async def spin() -> None:
        nonlocal calls
        calls += 1

    worker = fluid.WorkerFunction(spin, name="spinner")
    with caplog.at_level(logging.WARNING, logger="fluid"):
        for run in (1, 2):
            async with worker:
                await wait_until(lambda run=run: len(_busy_warnings(caplog)) == run)  # type: ignore[misc]
                # it goes on (a warning, not a stop), and warns no more in this run
                enough = calls + 2 * fluid_function._BUSY_CALLS
                await wait_until(lambda enough=enough: calls > enough)  # type: ignore[misc]
            assert len(_busy_warnings(caplog)) == run
    (message, *_) = _busy_warnings(caplog)
    assert "'spinner' has not waited for" in message
    assert "heartbeat=0" in message
    assert "give it a heartbeat" in message
    assert worker.worker_state is WorkerState.STOPPED


async def test_a_function_that_waits_with_no_heartbeat_is_not_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 calls of at least 2 ms each take at least 128 ms: over the 50 ms bound
    monkeypatch.setattr(fluid_function, "_BUSY_CALLS", 64)
    monkeypatch.setattr(fluid_function, "_BUSY_SECONDS", 0.05)
    calls = 0

    async def poll() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.002)

    with caplog.at_level(logging.WARNING, logger="fluid"):
        async with fluid.WorkerFunction(poll):
            await wait_until(lambda: calls >= 3 * 64)
    assert _busy_warnings(caplog) == []


async def test_a_function_draining_a_backlog_is_not_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fast windows that stop before _BUSY_FOR: the backlog ran out, the
    # function waits again (a slow window), and the fast pace starts over
    monkeypatch.setattr(fluid_function, "_BUSY_CALLS", 64)
    monkeypatch.setattr(fluid_function, "_BUSY_FOR", 0.5)
    queue: asyncio.Queue[int] = asyncio.Queue()
    drained = 0

    async def drain() -> None:
        nonlocal drained
        try:
            async with asyncio.timeout(0.05):  # returns when idle, so a stop is seen
                await queue.get()
        except TimeoutError:
            return
        drained += 1

    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING, logger="fluid"):
        async with fluid.WorkerFunction(drain):
            for _ in range(3):  # backlogs of 2,000 taking well under 0.5 s each
                for item in range(2000):
                    queue.put_nowait(item)
                target = drained + 2000
                await wait_until(lambda target=target: drained >= target)  # type: ignore[misc]
                pause_until = loop.time() + 0.3  # then an empty queue: slow windows
                await wait_until(lambda pause_until=pause_until: loop.time() >= pause_until)  # type: ignore[misc]
    assert _busy_warnings(caplog) == []


async def test_a_heartbeat_turns_the_pace_check_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fluid_function, "_BUSY_CALLS", 8)
    calls = 0

    async def quick() -> None:
        nonlocal calls
        calls += 1

    with caplog.at_level(logging.WARNING, logger="fluid"):
        async with fluid.WorkerFunction(quick, heartbeat=1e-6):
            await wait_until(lambda: calls >= 64)
    assert _busy_warnings(caplog) == []
