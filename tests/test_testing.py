"""fluid.testing: the virtual clock itself, its loop, and the ways to run tests on it."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import fluid
import fluid.testing
from fluid.testing import VirtualClock, VirtualTimeLoop, current_clock, virtual_time


def real_seconds(run: object) -> float:
    start = time.perf_counter()
    assert callable(run)
    run()
    return time.perf_counter() - start


# ------------------------------------------------------------- the clock


def test_a_day_of_sleeping_takes_milliseconds_and_ends_at_the_exact_time() -> None:
    seen: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(86400)
        seen.append(loop.time())

    assert real_seconds(lambda: fluid.testing.run(main())) < 1
    assert seen == [86400]


@virtual_time
async def test_timers_fire_in_the_order_and_at_the_times_of_real_time() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []

    def note(name: str) -> None:
        fired.append((name, loop.time()))

    loop.call_later(30, note, "c")
    loop.call_later(10, note, "a")
    loop.call_at(20, note, "b")
    loop.call_later(10, note, "a2")  # same time: in the order scheduled
    await asyncio.sleep(31)
    assert fired == [("a", 10), ("a2", 10), ("b", 20), ("c", 30)]


@virtual_time
async def test_timeouts_run_on_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.Event().wait()
    assert loop.time() == 5
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.sleep(100), timeout=2.5)
    assert loop.time() == 7.5


@virtual_time
async def test_ready_callbacks_run_before_time_moves() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def busy() -> None:
        for _ in range(100):
            await asyncio.sleep(0)
        order.append(f"busy done at {loop.time()}")

    task = asyncio.create_task(busy())
    await asyncio.sleep(1)
    order.append(f"slept until {loop.time()}")
    await task
    assert order == ["busy done at 0.0", "slept until 1.0"]


@virtual_time
async def test_ready_io_runs_before_time_moves() -> None:
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.setblocking(False)
        right.send(b"ping")
        data = await asyncio.wait_for(loop.sock_recv(left, 4), timeout=60)
    assert data == b"ping"
    assert loop.time() == 0  # the data was there: no jump to the 60 s timeout


def test_jump_moves_time_and_runs_what_became_due() -> None:
    clock = VirtualClock(autojump_threshold=math.inf)  # time moves only by jump()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.call_soon(clock.jump, 10)
        await asyncio.sleep(10)  # due once the jump happened
        return loop.time()

    assert fluid.testing.run(main(), clock=clock) == 10
    with pytest.raises(ValueError, match="seconds must be a number of seconds >= 0"):
        clock.jump(-1)


def test_the_wall_clock_moves_with_virtual_time() -> None:
    start = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)
    clock = VirtualClock(start=100.0, wall=start)
    assert clock.time() == 100.0
    assert clock.now() == start
    clock.jump(3600)
    assert clock.now() == start + timedelta(hours=1)
    assert clock.wall_time() == start.timestamp() + 3600
    clock.set_wall(start)  # stepped back: monotonic time does not move
    assert clock.now() == start
    assert clock.time() == 3700.0
    assert "VirtualClock time=3700.0" in repr(clock)


def test_the_default_wall_clock_starts_at_the_real_time() -> None:
    before = time.time()
    clock = VirtualClock()
    assert before <= clock.wall_time() <= time.time()
    assert clock.time() == 0.0


def test_bad_clock_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="wall must be timezone-aware"):
        VirtualClock(wall=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="autojump_threshold must be"):
        VirtualClock(autojump_threshold=-1)
    clock = VirtualClock()
    with pytest.raises(ValueError, match="autojump_threshold must be"):
        clock.autojump_threshold = float("nan")


def test_a_thread_is_waited_for_only_with_an_autojump_threshold() -> None:
    async def slow_thread_with_timeout() -> None:
        await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.05), timeout=10)

    with pytest.raises(TimeoutError):  # the clock jumped to the timeout at once
        fluid.testing.run(slow_thread_with_timeout())
    patient = VirtualClock(autojump_threshold=5)
    fluid.testing.run(slow_thread_with_timeout(), clock=patient)
    assert patient.time() == 0


# --------------------------------------------------- ways to run on it


def test_the_loop_class_is_a_loop_factory() -> None:
    async def main() -> float:
        await asyncio.sleep(42)
        return current_clock().time()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        assert runner.run(main()) == 42
        loop = runner.get_loop()
        assert isinstance(loop, VirtualTimeLoop)
        assert loop.time() == 42
        assert loop.wall_time() == loop.clock.wall_time()


def test_a_clock_makes_loops_that_share_it() -> None:
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        runner.run(asyncio.sleep(5))
    assert clock.time() == 5


def test_run_returns_the_result_and_fails_on_tasks_left_running() -> None:
    async def answer() -> int:
        await asyncio.sleep(1)
        return 42

    assert fluid.testing.run(answer()) == 42

    async def leaky() -> None:
        asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten")

    with pytest.raises(AssertionError, match=r"left 1 task.*forgotten"):
        fluid.testing.run(leaky())

    async def tick() -> None:
        await asyncio.sleep(1)

    async def forgotten_worker() -> None:
        await fluid.ScheduledWorker(tick, interval=60).startup()

    with pytest.raises(AssertionError, match="name='tick'"):
        fluid.testing.run(forgotten_worker())


async def test_current_clock_needs_a_virtual_loop() -> None:
    with pytest.raises(RuntimeError, match=r"is not a fluid\.testing\.VirtualTimeLoop"):
        current_clock()


@virtual_time(wall=datetime(2030, 1, 1, tzinfo=UTC))
async def test_the_decorator_gives_each_test_its_own_clock(tmp_path: Path) -> None:
    clock = current_clock()
    assert clock.time() == 0
    assert clock.now() == datetime(2030, 1, 1, tzinfo=UTC)
    assert isinstance(tmp_path, Path)  # fixtures pass through


def test_the_decorator_keeps_the_test_name_and_runs_each_call_afresh() -> None:
    times: list[float] = []

    @virtual_time
    async def sample() -> None:
        await asyncio.sleep(len(times) + 1)
        times.append(current_clock().time())

    assert sample.__name__ == "sample"
    sample()
    sample()
    assert times == [1, 2]


PLUGIN_CONFTEST = """
import fluid.testing

def pytest_asyncio_loop_factories(config, item):
    return {"virtual": fluid.testing.VirtualTimeLoop}
"""

PLUGIN_TEST = """
import asyncio
import fluid
import fluid.testing

async def test_an_hour_of_schedule() -> None:
    runs = []

    async def tick() -> None:
        runs.append(asyncio.get_running_loop().time())

    async with fluid.ScheduledWorker(tick, interval=600):
        await asyncio.sleep(3599)
    assert runs == [0, 600, 1200, 1800, 2400, 3000]
    assert fluid.testing.current_clock().time() == 3599
"""


def test_pytest_asyncio_runs_tests_on_virtual_time_through_a_conftest_hook(
    tmp_path: Path,
) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(PLUGIN_CONFTEST))
    (tmp_path / "test_virtual.py").write_text(textwrap.dedent(PLUGIN_TEST))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=20,  # below the test's own timeout
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
