"""The waiting toolkit (fluid/_waiting.py): each way fluid waits, at its edges.

Cancellation is tried at each point a caller can be cancelled, and again
while the cleanup it starts is still running: a wait that must end never
returns early, and the caller's cancellation is never lost.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import fluid
from fluid import WorkerState
from fluid._waiting import release, run_worker, wait_even_if_cancelled, wait_released

from .helpers import Deaf, Idle, wait_until

pytestmark = pytest.mark.interleave

EPSILON = 0.005
"""How much earlier than asked a timed wait may end (clock granularity)."""


# ------------------------------------------------------------------ release


async def test_release_resolves_a_pending_waiter_and_leaves_a_done_one_alone() -> None:
    loop = asyncio.get_running_loop()
    pending, cancelled, failed = loop.create_future(), loop.create_future(), loop.create_future()
    cancelled.cancel()
    failed.set_exception(ValueError("kept"))
    for waiter in (pending, cancelled, failed):
        release(waiter)
        release(waiter)  # twice: a late timer after the event is harmless
    assert pending.result() is None
    assert cancelled.cancelled()
    assert isinstance(failed.exception(), ValueError)


# ----------------------------------------------------------- wait_released


async def test_wait_released_returns_at_the_deadline_with_the_waiter_released() -> None:
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    await wait_released(waiter, 0.05)
    assert time.monotonic() - started >= 0.05 - EPSILON
    assert waiter.done()
    assert not waiter.cancelled()


async def test_wait_released_returns_at_the_event_and_its_timer_does_nothing_after() -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    loop.call_soon(release, waiter)
    started = time.monotonic()
    await wait_released(waiter, 30)
    assert time.monotonic() - started < 10  # the event, not the deadline
    await asyncio.sleep(0)  # a timer left behind would still be scheduled: none is
    assert not any(
        getattr(handle, "_args", None) == (waiter,) for handle in getattr(loop, "_scheduled", [])
    )


async def test_wait_released_cancelled_cancels_the_waiter_and_propagates() -> None:
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait_released(waiter, 30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiter.cancelled()


async def test_wait_released_without_timeout_waits_for_the_event_only() -> None:
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait_released(waiter, None))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    release(waiter)
    async with asyncio.timeout(10):
        await task


# --------------------------------------------------- wait_even_if_cancelled


@pytest.mark.parametrize("cancels", [1, 3])
async def test_wait_even_if_cancelled_waits_to_the_end_then_raises_once(cancels: int) -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    told: list[int] = []
    task = asyncio.create_task(wait_even_if_cancelled([first, second], lambda: told.append(1)))
    for _ in range(cancels):
        await asyncio.sleep(0)
        task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # cancelled, it still waits
    assert len(told) == cancels  # told each time, to escalate
    assert not first.cancelled()
    assert not second.cancelled()
    first.set_result(1)
    await asyncio.sleep(0)
    assert not task.done()
    second.set_result(2)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task


async def test_wait_even_if_cancelled_returns_when_done_and_not_cancelled() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    done.set_result(None)
    await wait_even_if_cancelled([done])  # already done: no wait at all
    await wait_even_if_cancelled([])
    later = loop.create_future()
    loop.call_soon(release, later)
    async with asyncio.timeout(10):
        await wait_even_if_cancelled([later])


# -------------------------------------------------------------- run_worker


class Slow(Idle):
    """An idle worker whose on_shutdown takes a while (a flush), and records that it ran."""

    def __init__(self, flush: float = 0.0) -> None:
        super().__init__(stopping_grace_period=0.05)
        self.flush = flush
        self.closed = False

    async def on_shutdown(self) -> None:
        try:
            await asyncio.sleep(self.flush)
        finally:
            self.closed = True


async def test_run_worker_returns_when_the_worker_ends_and_raises_its_error() -> None:
    class Fails(fluid.Worker):
        async def run(self) -> None:
            raise ValueError("boom")

    started: list[bool] = []
    with pytest.raises(ValueError, match="boom"):
        async with asyncio.timeout(10):
            await run_worker(Fails(), started=lambda: started.append(True))
    assert started == [True]

    worker = Idle()
    task = asyncio.create_task(run_worker(worker))
    await wait_until(worker.is_running)
    worker.gracefully_stop()  # somebody else asks it to stop
    async with asyncio.timeout(10):
        await task
    assert worker.worker_state is WorkerState.STOPPED


async def test_run_worker_shuts_the_worker_down_once_until_is_done() -> None:
    worker = Slow()
    until: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_worker(worker, until=until))
    await wait_until(worker.is_running)
    release(until)
    async with asyncio.timeout(10):
        await task
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.closed


async def test_run_worker_with_until_forces_a_worker_that_ignores_the_stop() -> None:
    worker = Deaf(stopping_grace_period=0.05)
    until: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    until.set_result(None)
    async with asyncio.timeout(10):
        await run_worker(worker, until=until)
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert worker.cancelled


async def test_run_worker_cancelled_forces_the_worker_and_waits_for_it() -> None:
    worker = Deaf(stopping_grace_period=30)  # the grace period is not waited for
    task = asyncio.create_task(run_worker(worker, reason="the test is over"))
    await wait_until(worker.is_running)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert time.monotonic() - started < 10
    assert worker.worker_state is WorkerState.FORCE_STOPPED  # ended before the cancel went on
    assert worker.cancelled


@pytest.mark.parametrize("cancels", [2, 4])
async def test_run_worker_cancelled_again_still_waits_for_the_forced_worker(cancels: int) -> None:
    worker = Slow(flush=0.1)
    task = asyncio.create_task(run_worker(worker))
    await wait_until(worker.is_running)
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0.01)  # into the forced worker's slow on_shutdown
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert worker.is_stopped()  # nothing outlives the call
    assert worker.closed


async def test_run_worker_passes_a_failed_startup_on_without_calling_started() -> None:
    class Refuses(Idle):
        async def on_startup(self) -> None:
            raise ConnectionError("down")

    started: list[bool] = []
    with pytest.raises(ConnectionError):
        await run_worker(Refuses(), started=lambda: started.append(True))
    assert started == []


async def test_run_worker_cancelled_during_startup_leaves_nothing_running() -> None:
    entered = asyncio.Event()

    class Connects(Idle):
        async def on_startup(self) -> None:
            entered.set()
            await asyncio.sleep(3600)

    worker = Connects()
    task = asyncio.create_task(run_worker(worker))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert worker.worker_state is WorkerState.STOPPED
