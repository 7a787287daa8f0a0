"""Consumers whose handler runs in a thread pool or a process pool (issue 3)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import fluid
from fluid import WorkerState

from . import _process_targets as targets
from .helpers import wait_until


async def test_a_sync_handler_runs_in_the_worker_threads_with_its_results() -> None:
    threads: set[int] = set()
    results: list[tuple[int, int]] = []

    def handle(number: int) -> int:
        threads.add(threading.get_ident())
        return number * 10

    consumer = fluid.QueueConsumerWorker(
        handle, run_in="thread", concurrency=3, on_result=lambda m, r: results.append((m, r))
    )
    assert consumer.run_in == "thread"
    async with consumer:
        for number in range(20):
            consumer.send(number)
    assert sorted(results) == [(n, n * 10) for n in range(20)]
    assert threading.get_ident() not in threads
    assert 1 <= len(threads) <= 3


async def test_thread_handlers_keep_at_most_concurrency_in_flight() -> None:
    running = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def handle(number: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1

    consumer = fluid.QueueConsumerWorker(handle, run_in="thread", concurrency=2)
    async with consumer:
        for number in range(6):
            consumer.send(number)
        await wait_until(lambda: running == 2)
        assert (await consumer.status())["queue"]["in_flight"] == 2
        release.set()
    assert most == 2
    assert (await consumer.status())["queue"]["handled"] == 6


async def test_a_cpu_bound_handler_runs_in_processes() -> None:
    results: dict[int, int] = {}

    async def keep(number: int, result: int) -> None:
        results[number] = result

    consumer = fluid.QueueConsumerWorker(
        targets.square, run_in="process", concurrency=2, on_result=keep
    )
    async with consumer:
        for number in range(10):
            consumer.send(number)
    assert results == {n: n * n for n in range(10)}


async def test_an_unpicklable_message_fails_clearly_and_the_next_is_handled() -> None:
    errors: list[tuple[object, Exception]] = []
    results: list[int] = []
    consumer = fluid.QueueConsumerWorker[Any](
        targets.square,
        run_in="process",
        on_error=lambda m, e: errors.append((m, e)),
        on_result=lambda m, r: results.append(r),
    )
    async with consumer:
        consumer.send(threading.Lock())  # cannot be pickled to the child
        consumer.send(7)
    assert results == [49]
    ((message, error),) = errors
    assert isinstance(message, type(threading.Lock()))
    assert "pickle" in str(error).lower()


async def test_a_failing_result_callback_is_the_messages_failure() -> None:
    errors: list[Exception] = []

    def broken(message: int, result: int) -> None:
        raise ValueError(f"could not store {result}")

    consumer = fluid.QueueConsumerWorker(
        lambda n: n + 1, run_in="thread", on_result=broken, on_error=lambda m, e: errors.append(e)
    )
    async with consumer:
        consumer.send(1)
    assert [str(e) for e in errors] == ["could not store 2"]
    assert (await consumer.status())["queue"]["failed"] == 1


async def test_an_async_result_callback_for_a_loop_handler() -> None:
    seen: list[tuple[int, int]] = []

    async def double(number: int) -> int:
        return number * 2

    async def keep(number: int, result: int) -> None:
        seen.append((number, result))

    consumer = fluid.QueueConsumerWorker(double, on_result=keep)
    async with consumer:
        consumer.send(4)
    assert seen == [(4, 8)]


async def test_a_forced_stop_puts_a_thread_message_back() -> None:
    release = threading.Event()
    consumer = fluid.QueueConsumerWorker[str](
        lambda n: release.wait(5), run_in="thread", stopping_grace_period=0.05
    )
    await consumer.startup()
    consumer.send("stuck")
    await wait_until(lambda: consumer.queue_size() == 0)
    stop = asyncio.create_task(consumer.shutdown())
    await wait_until(lambda: consumer.worker_state is WorkerState.FORCE_STOPPED, timeout=3)
    release.set()  # the thread finishes its call in the background
    await stop
    assert consumer.take_undelivered() == ["stuck"]


@pytest.mark.parametrize(
    ("handler", "run_in", "error", "match"),
    [
        (print, "loop", TypeError, "on_message must be a coroutine function"),
        (targets.fluid_sleep_forever, "thread", TypeError, "must be a plain function"),
        (lambda m: m, "process", TypeError, "must pickle"),
        (print, "fiber", ValueError, "run_in must be"),
    ],
)
def test_bad_handlers_are_rejected(
    handler: object, run_in: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        fluid.QueueConsumerWorker(handler, run_in=run_in)  # type: ignore[arg-type]


def test_on_result_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_result must be callable"):
        fluid.QueueConsumerWorker(print, run_in="thread", on_result=3)  # type: ignore[arg-type]
