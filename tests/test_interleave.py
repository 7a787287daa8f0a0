"""The randomized-interleaving mode catches ordering assumptions and keeps asyncio's promises."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Awaitable, Callable

import pytest

from ._interleave import SWITCH_INTERVAL, ShufflingLoop, shuffling_loop_factory

SEEDS = range(1, 21)


def run_on(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Awaitable[list[str]]
) -> list[str]:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)  # type: ignore[arg-type]


async def finish_in_creation_order() -> list[str]:
    """Code with an ordering assumption: that tasks started in order finish in order."""
    done: list[str] = []

    async def job(name: str) -> None:
        await asyncio.sleep(0)  # from here on each task schedules itself: independent
        done.append(name)

    await asyncio.gather(*(job(name) for name in "abcd"))
    return done


def test_an_ordering_assumption_holds_on_asyncio_and_fails_when_shuffled() -> None:
    assert run_on(asyncio.new_event_loop, finish_in_creation_order()) == list("abcd")
    shuffled = {
        seed: run_on(shuffling_loop_factory(seed), finish_in_creation_order()) for seed in SEEDS
    }
    assert any(order != list("abcd") for order in shuffled.values()), shuffled
    for seed in (1, 2):  # the same seed, the same interleaving
        assert run_on(shuffling_loop_factory(seed), finish_in_creation_order()) == shuffled[seed]


async def one_flow() -> list[str]:
    """What a single task registers runs in that order: its waiter's wake-up, then its callbacks."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    fut: asyncio.Future[None] = loop.create_future()

    async def waiter() -> None:
        await fut
        seen.append("woken")

    async def noise(name: str) -> None:  # independent tasks, shuffled around the flow
        for _ in range(3):
            await asyncio.sleep(0)
        seen.append(name)

    tasks = [
        asyncio.create_task(waiter()),
        *(asyncio.create_task(noise(f"n{i}")) for i in range(4)),
    ]
    await asyncio.sleep(0)  # the waiter waits
    fut.set_result(None)
    for i in range(3):
        loop.call_soon(seen.append, f"cb{i}")
    await asyncio.gather(*tasks)
    return [name for name in seen if not name.startswith("n")]


@pytest.mark.parametrize("seed", SEEDS)
def test_callbacks_of_one_task_keep_their_order(seed: int) -> None:
    assert run_on(shuffling_loop_factory(seed), one_flow()) == ["woken", "cb0", "cb1", "cb2"]


async def from_a_thread() -> list[str]:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    done = asyncio.Event()

    def produce() -> None:
        for i in range(50):
            loop.call_soon_threadsafe(seen.append, str(i))
        loop.call_soon_threadsafe(done.set)

    async def noise() -> None:  # turns of other sources while the thread sends
        while not done.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0)

    spinners = [asyncio.create_task(noise()) for _ in range(3)]
    thread = threading.Thread(target=produce)
    thread.start()
    await done.wait()
    await asyncio.gather(*spinners)
    thread.join()
    return seen


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_callbacks_from_one_thread_keep_their_order(seed: int) -> None:
    assert run_on(shuffling_loop_factory(seed), from_a_thread()) == [str(i) for i in range(50)]


def test_the_loop_shuffles_and_sets_a_tiny_switch_interval_while_open() -> None:
    before = sys.getswitchinterval()
    loop = ShufflingLoop(seed=3)
    try:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        loop.run_until_complete(finish_in_creation_order())
        assert loop.shuffled > 0
    finally:
        loop.close()
    assert sys.getswitchinterval() == before


async def test_core_async_tests_run_here_under_fixed_seeds_too() -> None:
    # This module is in conftest.INTERLEAVED: its async tests run three times.
    # With FLUID_INTERLEAVE_SEED set (make stress), every async test runs on
    # the shuffling loop under that seed instead.
    loop = asyncio.get_running_loop()
    if isinstance(loop, ShufflingLoop) and "FLUID_INTERLEAVE_SEED" not in os.environ:
        assert loop.seed in (1, 2)
