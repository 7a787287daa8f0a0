"""Case 11: many short jobs, at most 16 handled at a time.

Every message is a job for an async handler, and at most ``LIMIT`` handlers
run at once.

fluid: a ``QueueConsumerWorker(handler, concurrency=16)`` fed with
``consumer.send(m)``.
asyncio: a task per message, ``asyncio.create_task(job(m))``, each doing
``async with semaphore: await handler(m)`` on one ``asyncio.Semaphore(16)``;
the tasks are kept in a set until done (the documented way to keep a
background task alive).

Both hand the messages over from the loop in batches of ``BATCH`` with an
``await asyncio.sleep(0)`` after each batch (as in case 1); the clock runs from
the first hand-over until the handler has seen the last message. Two
handlers: one that awaits ``asyncio.sleep(0.001)`` (an I/O call), and a
trivial one (the cost of the machinery itself).

This is the job aiojobs' ``Scheduler(limit=16).spawn()`` does; the report of
``make bench`` compares it on these rows (``bench/others``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import fluid

from ._harness import Countdown, Options, Row, interleaved, produce, settle, wait_for
from .consumers import SlowCounter

NAME = "jobs"
CASE = "11 jobs"
LIMIT = 16
BATCH = 1000
IO_JOBS = (4_000, 800)
"""Jobs whose handler awaits 1 ms, per run: full, ``--quick``."""
TRIVIAL_JOBS = (100_000, 10_000)
"""Jobs with a trivial handler, per run: full, ``--quick``."""

CounterFactory = Callable[[int], Countdown]
"""``Countdown`` (trivial handler) or ``SlowCounter`` (handler awaiting 1 ms)."""


async def run_fluid(make_counter: CounterFactory, count: int) -> float:
    """Seconds for a consumer with ``concurrency=LIMIT`` to handle ``count`` messages."""
    counter = make_counter(count)
    consumer = fluid.QueueConsumerWorker(counter.handle, name="bench_jobs", concurrency=LIMIT)
    await consumer.startup()
    try:
        await settle()
        start = time.perf_counter()
        await produce(consumer.send, count, BATCH)
        await wait_for(counter.done, "fluid consumer, concurrency 16")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def run_asyncio(make_counter: CounterFactory, count: int) -> float:
    """Seconds for a task per message under a ``Semaphore(LIMIT)`` to handle ``count``."""
    counter = make_counter(count)
    semaphore = asyncio.Semaphore(LIMIT)
    tasks: set[asyncio.Task[None]] = set()

    async def job(message: int) -> None:
        async with semaphore:
            await counter.handle(message)

    def spawn(message: int) -> None:
        task = asyncio.create_task(job(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    start = time.perf_counter()
    await produce(spawn, count, BATCH)
    await wait_for(counter.done, "asyncio tasks under a semaphore")
    elapsed = time.perf_counter() - start
    await asyncio.gather(*tasks)
    return elapsed


async def run(options: Options) -> list[Row]:
    """Best throughput of each side, with the 1 ms handler and the trivial one."""
    io_count = options.size(*IO_JOBS)
    trivial_count = options.size(*TRIVIAL_JOBS)
    io_fluid, io_asyncio = await interleaved(
        lambda: run_fluid(SlowCounter, io_count),
        lambda: run_asyncio(SlowCounter, io_count),
        options.times(3),
    )
    trivial_fluid, trivial_asyncio = await interleaved(
        lambda: run_fluid(Countdown, trivial_count),
        lambda: run_asyncio(Countdown, trivial_count),
        options.times(5),
    )
    return [
        Row(
            CASE,
            f"{io_count:,} jobs awaiting 1 ms, {LIMIT} at a time: "
            f"concurrency={LIMIT} vs Semaphore + a task each",
            "msg/s",
            io_count / min(io_fluid),
            io_count / min(io_asyncio),
            higher_is_better=True,
            key="jobs.io",
        ),
        Row(
            CASE,
            f"{trivial_count:,} trivial jobs, {LIMIT} at a time: same",
            "msg/s",
            trivial_count / min(trivial_fluid),
            trivial_count / min(trivial_asyncio),
            higher_is_better=True,
            key="jobs.trivial",
        ),
    ]
