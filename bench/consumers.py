"""Case 7: consumer concurrency with an I/O handler that awaits 1 ms.

fluid: a ``QueueConsumerWorker(handler, concurrency=16)`` against the same
worker with ``concurrency=1`` (the issue's target: at least 12x the messages
per second), and against the hand-written version: 16 consumer tasks sharing
one ``asyncio.Queue``.

Every message's handler does ``await asyncio.sleep(0.001)`` and counts it; all
messages are queued before the clock starts and the clock stops when the last
one was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import fluid

from ._harness import Countdown, Options, Row, at_least, interleaved, settle, wait_for

NAME = "consumers"
CASE = "7 consumers"
IO_SECONDS = 0.001


class SlowCounter(Countdown):
    """Counts messages after awaiting ``IO_SECONDS``: a stand-in for an I/O call."""

    async def handle(self, message: object) -> None:
        await asyncio.sleep(IO_SECONDS)
        self.tick()


async def run_fluid(count: int, concurrency: int) -> float:
    """Seconds for a consumer with ``concurrency`` to handle ``count`` slow messages."""
    counter = SlowCounter(count)
    consumer = fluid.QueueConsumerWorker(counter.handle, concurrency=concurrency)
    for message in range(count):
        consumer.send(message)
    start = time.perf_counter()
    await consumer.startup()
    try:
        await wait_for(counter.done, f"fluid consumer, concurrency {concurrency}")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def consume(queue: asyncio.Queue[int], counter: SlowCounter) -> None:
    """One hand-written consumer task; it ends when cancelled."""
    while True:
        message = await queue.get()
        await counter.handle(message)


async def run_asyncio(count: int, concurrency: int) -> float:
    """Seconds for ``concurrency`` tasks sharing an ``asyncio.Queue`` to handle ``count``."""
    counter = SlowCounter(count)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for message in range(count):
        queue.put_nowait(message)
    start = time.perf_counter()
    tasks = [asyncio.create_task(consume(queue, counter)) for _ in range(concurrency)]
    try:
        await wait_for(counter.done, "asyncio consumers")
        return time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run(options: Options) -> list[Row]:
    """concurrency=16 against concurrency=1, and against 16 hand-written tasks."""
    wide, narrow = options.size(4_000, 800), options.size(300, 100)
    await settle()
    repeats = options.times(3)
    sixteen, one = await interleaved(
        lambda: run_fluid(wide, 16), lambda: run_fluid(narrow, 1), repeats
    )
    fluid16, asyncio16 = await interleaved(
        lambda: run_fluid(wide, 16), lambda: run_asyncio(wide, 16), repeats
    )
    return [
        Row(
            CASE,
            "concurrency=16 vs concurrency=1 (handler awaits 1 ms)",
            "msg/s",
            wide / min(sixteen),
            narrow / min(one),
            higher_is_better=True,
            target=at_least(12.0),
        ),
        Row(
            CASE,
            "concurrency=16 vs 16 tasks on an asyncio.Queue",
            "msg/s",
            wide / min(fluid16),
            wide / min(asyncio16),
            higher_is_better=True,
            target=at_least(0.9),
        ),
    ]
