"""The books of a queue: sent = handled + failed + taken + size + in flight, always."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

import fluid
from fluid import QueueStatus

from .helpers import wait_until


def balance(books: QueueStatus) -> int:
    """What the books say went somewhere; equals ``sent`` when nothing vanished."""
    return books["handled"] + books["failed"] + books["taken"] + books["size"] + books["in_flight"]


async def test_every_message_is_handled_failed_taken_or_still_queued() -> None:
    failures: list[int] = []
    gate = asyncio.Event()

    async def handle(n: int) -> None:
        if n == 7:
            await gate.wait()  # held in flight until the forced stop
        if n % 3 == 0:
            raise ValueError(n)

    consumer = fluid.QueueConsumerWorker(
        handle, stopping_grace_period=0.05, on_error=lambda n, exc: failures.append(n)
    )
    await consumer.startup()
    for n in range(10):
        consumer.send(n)
    await wait_until(lambda: consumer.queue_status()["in_flight"] == 1)
    books = consumer.queue_status()
    assert (books["sent"], books["handled"], books["failed"], books["size"]) == (10, 4, 3, 2)
    assert balance(books) == 10
    await consumer.shutdown()  # forced: 7 goes back, 8 and 9 stay
    assert consumer.take_undelivered() == [7, 8, 9]
    books = consumer.queue_status()
    assert books == {
        "sent": 10,
        "size": 0,
        "capacity": None,
        "handled": 4,
        "failed": 3,
        "in_flight": 0,
        "taken": 3,
        "undelivered": 3,
    }
    assert failures == [0, 3, 6]


async def test_the_books_balance_while_an_async_on_error_callback_runs() -> None:
    seen: list[QueueStatus] = []

    async def fail(n: int) -> None:
        raise ValueError(n)

    async def dead_letter(n: int, exc: Exception) -> None:
        await asyncio.sleep(0)  # the callback awaits: the failure is already booked
        seen.append(consumer.queue_status())

    consumer = fluid.QueueConsumerWorker(fail, on_error=dead_letter)
    async with consumer:
        consumer.send(1)
        await wait_until(lambda: len(seen) == 1)
    assert (seen[0]["failed"], seen[0]["in_flight"]) == (1, 0)
    assert balance(seen[0]) == seen[0]["sent"] == 1


async def test_refused_and_cancelled_sends_are_not_counted() -> None:
    consumer = fluid.QueueConsumerWorker(_ignore, maxsize=2)
    consumer.send(1)
    consumer.send(2)
    with pytest.raises(fluid.QueueFull):
        consumer.send(3)
    waiting = asyncio.ensure_future(consumer.put(4))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert consumer.queue_status()["sent"] == 2
    admitted = asyncio.ensure_future(consumer.put(5))
    await asyncio.sleep(0)
    assert consumer.queue_status()["sent"] == 2  # still waiting for room
    assert consumer.take_undelivered() == [1, 2]
    await admitted  # admitted as room was made: sent now
    books = consumer.queue_status()
    assert (books["sent"], books["taken"], books["size"]) == (3, 2, 1)
    assert balance(books) == 3


async def test_a_subclass_reading_messages_counts_them_as_handled() -> None:
    class Reader(fluid.QueueConsumer[int]):
        async def run(self) -> None:
            async for _ in self.messages():
                pass

    async with Reader() as reader:
        for n in range(4):
            reader.send(n)
    books = reader.queue_status()
    assert (books["sent"], books["handled"], books["size"]) == (4, 4, 0)


async def test_the_books_balance_at_every_turn_of_the_loop_with_concurrent_handlers() -> None:
    rng = random.Random(8)

    async def handle(n: int) -> None:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        if rng.random() < 0.2:
            raise ValueError(n)

    consumer = fluid.QueueConsumerWorker(handle, concurrency=4, on_error=lambda n, exc: None)
    unbalanced: list[QueueStatus] = []
    async with consumer:
        for n in range(500):
            consumer.send(n)
            if n % 7 == 0:
                await asyncio.sleep(0)
            books = consumer.queue_status()
            if balance(books) != books["sent"]:
                unbalanced.append(books)
        while consumer.queue_status()["handled"] + consumer.queue_status()["failed"] < 500:
            await asyncio.sleep(0)
            books = consumer.queue_status()
            if balance(books) != books["sent"]:
                unbalanced.append(books)
    assert unbalanced == []
    books = consumer.queue_status()
    assert books["sent"] == books["handled"] + books["failed"] == 500
    assert books["failed"] > 0


async def test_sends_from_eight_threads_against_a_bounded_queue_are_all_accounted() -> None:
    accepted = [0] * 8
    refused = [0] * 8
    failed: list[int] = []

    async def handle(n: int) -> None:
        if n % 11 == 0:
            raise ValueError(n)

    consumer = fluid.QueueConsumerWorker(
        handle, maxsize=16, on_error=lambda n, exc: failed.append(n)
    )

    def produce(index: int) -> None:
        for i in range(2_000):
            try:
                consumer.send(index * 10_000 + i, timeout=0.001 if i % 2 else 0)
            except fluid.QueueFull:
                refused[index] += 1
            else:
                accepted[index] += 1

    async with consumer:
        threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join)
    books = consumer.queue_status()
    assert books["sent"] == sum(accepted)
    assert sum(accepted) + sum(refused) == 16_000
    assert balance(books) == books["sent"]
    assert books["failed"] == len(failed)
    assert books["size"] == books["in_flight"] == 0  # a graceful stop drains


async def _ignore(message: object) -> None:
    pass
