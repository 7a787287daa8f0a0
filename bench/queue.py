"""Case 1: queue throughput with one consumer and a trivial async handler.

fluid: a ``QueueConsumerWorker`` fed with ``consumer.send(m)``.
asyncio: an ``asyncio.Queue`` fed with ``q.put_nowait(m)`` and one consumer
task doing ``while True: m = await q.get(); await handler(m)``.

Both producers send from the loop in batches of ``BATCH`` messages with an
``await asyncio.sleep(0)`` after each batch; the clock runs from the first
send until the handler has seen the last message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import fluid

from ._harness import (
    Countdown,
    Options,
    Row,
    at_least,
    cancel_and_wait,
    interleaved,
    produce,
    settle,
    wait_for,
)

NAME = "queue"
BATCH = 1000
MESSAGES = (200_000, 20_000)
"""Messages per run: full, ``--quick``."""


async def run_fluid(count: int) -> float:
    """Seconds for a ``QueueConsumerWorker`` to handle ``count`` messages."""
    counter = Countdown(count)
    consumer = fluid.QueueConsumerWorker(counter.handle, name="bench_queue")
    await consumer.startup()
    try:
        await settle()
        start = time.perf_counter()
        await produce(consumer.send, count, BATCH)
        await wait_for(counter.done, "fluid queue consumer")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def consume(queue: asyncio.Queue[int], handler: Callable[[int], Awaitable[None]]) -> None:
    """The hand-written consumer loop; it ends when cancelled."""
    while True:
        message = await queue.get()
        await handler(message)


async def run_asyncio(count: int) -> float:
    """Seconds for an ``asyncio.Queue`` and a consumer task to handle ``count`` messages."""
    counter = Countdown(count)
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(consume(queue, counter.handle))
    try:
        await settle()
        start = time.perf_counter()
        await produce(queue.put_nowait, count, BATCH)
        await wait_for(counter.done, "asyncio queue consumer")
        return time.perf_counter() - start
    finally:
        await cancel_and_wait([task])


async def run(options: Options) -> list[Row]:
    """Best throughput of each side over the repeats."""
    count = options.size(*MESSAGES)
    fluid_times, asyncio_times = await interleaved(
        lambda: run_fluid(count), lambda: run_asyncio(count), options.times(5)
    )
    return [
        Row(
            "1 queue",
            f"{count:,} msgs, 1 consumer",
            "msg/s",
            count / min(fluid_times),
            count / min(asyncio_times),
            higher_is_better=True,
            target=at_least(0.7),
            key="queue",
        )
    ]
