"""Case 3: fan each message out to 10 trivial async handlers.

fluid: an ``AsyncConsumer`` whose ``AsyncDispatcher`` holds 10 handlers for
one event type (``bench.h0`` ... ``bench.h9``).
asyncio: the simplest correct fan-out a strong engineer writes, an
``asyncio.Queue`` consumer task that awaits the 10 handlers in turn for each
message (``while True: m = await q.get(); for h in handlers: await h(m)``),
cancelled at the end. It does not isolate one handler's error from the
others, as fluid's dispatcher does: it is the minimal loop. The queue is the
one such code reaches for; the queue case (``bench/queue.py``) measures
fluid's queue against the faster deque + future floor. An ``info`` row
compares with a consumer that runs the handlers concurrently with
``asyncio.gather`` (one task per handler per message, so it runs on a tenth of
the messages; the figures are per second).

Messages are sent from the loop as in the queue case, in bursts of ``BATCH``
(1,000) and of ``SMALL_BATCH`` (100) messages: ``N`` sends, then one
``await asyncio.sleep(0)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

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

NAME = "fanout"
HANDLERS = 10
BATCH = 1000
"""Messages a burst, in the rows the other libraries are compared on."""
SMALL_BATCH = 100
"""Messages a burst, in the rows with more loop turns a message."""
MESSAGES = (50_000, 5_000)
"""Messages per run: full, ``--quick``."""

Handler = Callable[[int], Awaitable[None]]


def make_handler(counter: Countdown) -> Handler:
    """One trivial handler: count the call."""

    async def handler(message: int) -> None:
        counter.tick()

    return handler


def make_handlers(counter: Countdown) -> list[Handler]:
    """``HANDLERS`` distinct handler functions sharing one counter."""
    return [make_handler(counter) for _ in range(HANDLERS)]


def event_type(message: int) -> str:
    """Every message is of the one event type the handlers are registered for."""
    return "bench"


async def run_fluid(count: int, batch: int = BATCH) -> float:
    """Seconds for an ``AsyncConsumer`` to dispatch ``count`` messages to every handler."""
    counter = Countdown(count * HANDLERS)
    dispatcher = fluid.AsyncDispatcher[int](message_type=event_type)
    for index, handler in enumerate(make_handlers(counter)):
        dispatcher.register_handler(f"bench.h{index}", handler)
    consumer = fluid.AsyncConsumer(dispatcher, name="bench_fanout")
    await consumer.startup()
    try:
        await settle()
        start = time.perf_counter()
        await produce(consumer.send, count, batch)
        await wait_for(counter.done, "fluid fan-out")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def in_turn(queue: asyncio.Queue[int], handlers: Sequence[Handler]) -> None:
    """Hand-written fan-out: await each handler in turn; ends when cancelled."""
    while True:
        message = await queue.get()
        for handler in handlers:
            await handler(message)


async def gathered(queue: asyncio.Queue[int], handlers: Sequence[Handler]) -> None:
    """Hand-written fan-out: run the handlers concurrently; ends when cancelled."""
    while True:
        message = await queue.get()
        await asyncio.gather(*[handler(message) for handler in handlers])


Consumer = Callable[[asyncio.Queue[int], Sequence[Handler]], Coroutine[Any, Any, None]]


async def run_asyncio(count: int, consumer: Consumer, batch: int = BATCH) -> float:
    """Seconds for a hand-written consumer to fan ``count`` messages out."""
    counter = Countdown(count * HANDLERS)
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(consumer(queue, make_handlers(counter)))
    try:
        await settle()
        start = time.perf_counter()
        await produce(queue.put_nowait, count, batch)
        await wait_for(counter.done, "asyncio fan-out")
        return time.perf_counter() - start
    finally:
        await cancel_and_wait([task])


async def run(options: Options) -> list[Row]:
    """Best throughput of fluid and the in-turn loop for each burst size, and the gather loop."""
    count = options.size(*MESSAGES)
    gather_count = count // 10
    fluid_times, turn_times, gather_times, fluid_small, turn_small = await interleave_many(
        [
            lambda: run_fluid(count),
            lambda: run_asyncio(count, in_turn),
            lambda: run_asyncio(gather_count, gathered),
            lambda: run_fluid(count, SMALL_BATCH),
            lambda: run_asyncio(count, in_turn, SMALL_BATCH),
        ],
        options.times(5),
    )
    fluid_rate = count / min(fluid_times)
    what = f"{count:,} msgs x {HANDLERS} handlers"
    return [
        Row(
            "3 fanout",
            f"{what}, bursts of {BATCH:,}, vs in turn",
            "msg/s",
            fluid_rate,
            count / min(turn_times),
            higher_is_better=True,
            target=at_least(0.5),
            key="fanout",
        ),
        Row(
            "3 fanout",
            f"{what}, bursts of {SMALL_BATCH:,}, vs in turn",
            "msg/s",
            count / min(fluid_small),
            count / min(turn_small),
            higher_is_better=True,
            target=at_least(0.5),
        ),
        Row(
            "3 fanout",
            f"bursts of {BATCH:,}, vs gather (asyncio on {gather_count:,} msgs)",
            "msg/s",
            fluid_rate,
            gather_count / min(gather_times),
            higher_is_better=True,
            key="fanout.gather",
        ),
    ]
