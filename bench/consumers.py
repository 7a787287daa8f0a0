"""Case 7: consumer concurrency with an I/O handler that awaits 1 ms.

fluid: a ``QueueConsumerWorker(handler, concurrency=16)`` against the same
worker with ``concurrency=1`` (the issue's target: at least 12x the messages
per second), and against the hand-written version: 16 consumer tasks sharing
one ``asyncio.Queue``.

Every message's handler does ``await asyncio.sleep(0.001)`` and counts it; all
messages are queued before the clock starts and the clock stops when the last
one was handled.

A third row runs a trivial *sync* handler through the consumer's thread pool
(``run_in="thread", concurrency=4``) against the hand-written version: four
consumer tasks on an ``asyncio.Queue``, each doing
``await loop.run_in_executor(executor, handler, m)`` on a
``ThreadPoolExecutor(4)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fluid

from ._harness import (
    Countdown,
    Options,
    Row,
    at_least,
    cancel_and_wait,
    interleaved,
    settle,
    wait_for,
)

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
        await cancel_and_wait(tasks)


class ThreadCounter:
    """A sync handler counting from pool threads; resolves ``done`` on the loop."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.lock = threading.Lock()
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()

    def handle(self, message: object) -> None:
        with self.lock:
            self.count += 1
            last = self.count == self.target
        if last:
            self.loop.call_soon_threadsafe(self.done.set_result, None)


async def run_fluid_threads(count: int) -> float:
    """Seconds for a thread-pool consumer to handle ``count`` messages."""
    counter = ThreadCounter(count)
    consumer = fluid.QueueConsumerWorker(counter.handle, run_in="thread", concurrency=4)
    for message in range(count):
        consumer.send(message)
    start = time.perf_counter()
    await consumer.startup()
    try:
        await wait_for(counter.done, "fluid thread consumer")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def run_asyncio_threads(count: int) -> float:
    """Seconds for four ``run_in_executor`` consumer tasks to handle ``count``."""
    counter = ThreadCounter(count)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for message in range(count):
        queue.put_nowait(message)

    async def consume(executor: ThreadPoolExecutor) -> None:
        while True:
            message = await queue.get()
            await loop.run_in_executor(executor, counter.handle, message)

    with ThreadPoolExecutor(4) as executor:
        start = time.perf_counter()
        tasks = [asyncio.create_task(consume(executor)) for _ in range(4)]
        try:
            await wait_for(counter.done, "asyncio executor consumers")
            return time.perf_counter() - start
        finally:
            await cancel_and_wait(tasks)


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
    calls = options.size(20_000, 2_000)
    pooled, executor = await interleaved(
        lambda: run_fluid_threads(calls), lambda: run_asyncio_threads(calls), repeats
    )
    return [
        Row(
            CASE,
            f"sync handler, {calls:,} msgs: run_in='thread' vs run_in_executor (4 threads)",
            "msg/s",
            calls / min(pooled),
            calls / min(executor),
            higher_is_better=True,
            target=at_least(1.0),
        ),
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
