"""Case 2: thread-safe sends from several producer threads to one consumer.

fluid: each thread calls ``consumer.send(m)`` on a ``QueueConsumerWorker``.
asyncio: each thread calls ``loop.call_soon_threadsafe(q.put_nowait, m)``, the
documented way to hand data to a loop from another thread, and one consumer
task drains the ``asyncio.Queue``.

The clock runs from starting the threads until the handler (on the loop) has
seen every message.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable

import fluid

from ._harness import (
    Countdown,
    Options,
    Row,
    Send,
    at_least,
    cancel_and_wait,
    interleaved,
    settle,
    wait_for,
)
from .queue import consume

NAME = "threads"
THREADS = 4
PER_THREAD = (50_000, 5_000)
"""Messages each producer thread sends: full, ``--quick``."""


def send_all(send: Send, first: int, count: int) -> None:
    """A producer thread's job: send ``count`` messages."""
    for message in range(first, first + count):
        send(message)


async def timed_threads(send: Send, counter: Countdown, per_thread: int) -> float:
    """Start ``THREADS`` producers and time until ``counter`` saw every message."""
    threads = [
        threading.Thread(target=send_all, args=(send, i * per_thread, per_thread))
        for i in range(THREADS)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        await wait_for(counter.done, "consumer fed by threads")
        return time.perf_counter() - start
    finally:
        for thread in threads:
            thread.join()


async def run_fluid(per_thread: int) -> float:
    """Seconds for a ``QueueConsumerWorker`` to handle what the threads send."""
    counter = Countdown(THREADS * per_thread)
    consumer = fluid.QueueConsumerWorker(counter.handle, name="bench_threads")
    await consumer.startup()
    try:
        await settle()
        return await timed_threads(consumer.send, counter, per_thread)
    finally:
        await consumer.shutdown()


async def run_asyncio(per_thread: int) -> float:
    """Seconds for an ``asyncio.Queue`` consumer fed via ``call_soon_threadsafe``."""
    counter = Countdown(THREADS * per_thread)
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(consume(queue, counter.handle))
    call_soon_threadsafe: Callable[..., object] = asyncio.get_running_loop().call_soon_threadsafe
    send = functools.partial(call_soon_threadsafe, queue.put_nowait)
    try:
        await settle()
        return await timed_threads(send, counter, per_thread)
    finally:
        await cancel_and_wait([task])


async def run(options: Options) -> list[Row]:
    """Best throughput of each side over the repeats."""
    per_thread = options.size(*PER_THREAD)
    count = THREADS * per_thread
    fluid_times, asyncio_times = await interleaved(
        lambda: run_fluid(per_thread), lambda: run_asyncio(per_thread), options.times(5)
    )
    return [
        Row(
            "2 threads",
            f"{THREADS} threads x {per_thread:,} msgs",
            "msg/s",
            count / min(fluid_times),
            count / min(asyncio_times),
            higher_is_better=True,
            target=at_least(1.0),
            key="threads",
        )
    ]
