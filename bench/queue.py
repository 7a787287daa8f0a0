"""Case 1: queue throughput with one consumer and a trivial async handler.

fluid: a ``QueueConsumerWorker`` fed with ``consumer.send(m)``.

asyncio, the floor: the simplest correct single-consumer queue a strong
engineer writes when speed matters, ``Mailbox``: a ``collections.deque`` and
one future, created only when the deque is empty. ``send`` appends and, if
the consumer waits, resolves its future; the consumer task runs::

    while True:
        while messages:
            await handler(messages.popleft())
        waiter = loop.create_future()
        await waiter

and is cancelled at the end. This is the row with the target (issue 16:
fluid takes at most 1.25x the floor's time a message, so at least 0.80x its
messages per second).

asyncio, ``asyncio.Queue`` (``info`` rows): ``q.put_nowait(m)`` and one
consumer task doing ``while True: m = await q.get(); await handler(m)``,
what most code writes; it is about twice as slow as the floor.

Both producers send from the loop in bursts of ``BATCH`` (1,000) and of
``SMALL_BATCH`` (100) messages: a burst is ``N`` sends, then one
``await asyncio.sleep(0)``. The clock runs from the first send until the
handler has seen the last message.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial

import fluid

from ._harness import (
    Countdown,
    Options,
    Row,
    at_least,
    cancel_and_wait,
    interleave_many,
    produce,
    settle,
    wait_for,
)

NAME = "queue"
CASE = "1 queue"
BATCH = 1000
"""Messages a burst, in the rows the other libraries are compared on."""
SMALL_BATCH = 100
"""Messages a burst, in the rows with more loop turns a message."""
MESSAGES = (100_000, 10_000)
"""Messages per run: full, ``--quick``."""
TIME_TARGET = 1.25
"""fluid may take at most this many times the floor's time a message."""

Handler = Callable[[int], Awaitable[None]]


async def run_fluid(count: int, batch: int = BATCH) -> float:
    """Seconds for a ``QueueConsumerWorker`` to handle ``count`` messages."""
    counter = Countdown(count)
    consumer = fluid.QueueConsumerWorker(counter.handle, name="bench_queue")
    await consumer.startup()
    try:
        await settle()
        start = time.perf_counter()
        await produce(consumer.send, count, batch)
        await wait_for(counter.done, "fluid queue consumer")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


class Mailbox:
    """The floor: a deque, and one future only while the consumer waits on it empty."""

    __slots__ = ("messages", "waiter")

    def __init__(self) -> None:
        self.messages: deque[int] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def send(self, message: int) -> None:
        """Append ``message``; wake the consumer if it waits."""
        self.messages.append(message)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():  # cancelled with the consumer
                waiter.set_result(None)

    async def consume(self, handler: Handler) -> None:
        """Handle every message, waiting on a fresh future when empty; ends when cancelled."""
        messages = self.messages
        loop = asyncio.get_running_loop()
        while True:
            while messages:
                await handler(messages.popleft())
            self.waiter = waiter = loop.create_future()
            await waiter


async def consume(queue: asyncio.Queue[int], handler: Handler) -> None:
    """The ``asyncio.Queue`` consumer loop; it ends when cancelled."""
    while True:
        message = await queue.get()
        await handler(message)


async def run_floor(count: int, batch: int) -> float:
    """Seconds for a ``Mailbox`` and its consumer task to handle ``count`` messages."""
    counter = Countdown(count)
    mailbox = Mailbox()
    task = asyncio.create_task(mailbox.consume(counter.handle))
    try:
        await settle()
        start = time.perf_counter()
        await produce(mailbox.send, count, batch)
        await wait_for(counter.done, "deque + future consumer")
        return time.perf_counter() - start
    finally:
        await cancel_and_wait([task])


async def run_queue(count: int, batch: int) -> float:
    """Seconds for an ``asyncio.Queue`` and a consumer task to handle ``count`` messages."""
    counter = Countdown(count)
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(consume(queue, counter.handle))
    try:
        await settle()
        start = time.perf_counter()
        await produce(queue.put_nowait, count, batch)
        await wait_for(counter.done, "asyncio queue consumer")
        return time.perf_counter() - start
    finally:
        await cancel_and_wait([task])


async def run(options: Options) -> list[Row]:
    """Best throughput of fluid, the floor and ``asyncio.Queue``, for each burst size."""
    count = options.size(*MESSAGES)
    target = at_least(1 / TIME_TARGET, f">= {1 / TIME_TARGET:.2f}x (<= {TIME_TARGET}x time)")
    batches = (BATCH, SMALL_BATCH)
    sides = (run_fluid, run_floor, run_queue)
    times = await interleave_many(
        [partial(side, count, batch) for batch in batches for side in sides], options.times(5)
    )
    rows: list[Row] = []
    for index, batch in enumerate(batches):
        fluid_s, floor_s, queue_s = times[index * len(sides) : (index + 1) * len(sides)]
        fluid_rate = count / min(fluid_s)
        burst = f"{count:,} msgs in bursts of {batch:,}, 1 consumer"
        rows += [
            Row(
                CASE,
                f"{burst}, vs deque + future",
                "msg/s",
                fluid_rate,
                count / min(floor_s),
                higher_is_better=True,
                target=target,
                key="queue" if batch == BATCH else "",
            ),
            Row(
                CASE,
                f"{burst}, vs asyncio.Queue",
                "msg/s",
                fluid_rate,
                count / min(queue_s),
                higher_is_better=True,
            ),
        ]
    return rows
