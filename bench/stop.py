"""Case 5: how long stopping an idle worker takes.

fluid: ``await worker.shutdown()`` of a ``WorkerFunction(noop, heartbeat=60)``
sleeping in its heartbeat, and of an idle ``QueueConsumerWorker`` waiting for
messages.

asyncio: the simplest correct code a strong engineer writes for each. For
the function worker, a task running ``heartbeat_loop(noop, 60)`` (see
``_harness``: ``while True: await fn(); await asyncio.sleep(60)``), stopped
with ``task.cancel()`` and awaited, as case 4 stops its tasks. For the
consumer, an ``asyncio.Queue`` consumer task stopped gracefully with a
``None`` sentinel, ``q.put_nowait(None); await task``, since a consumer
stopped by a cancel could lose the message it holds.

Each run starts a fresh worker, lets it reach its wait, and times the stop
alone. The figure is the median over all runs, in microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import fluid

from ._harness import Options, Row, at_most, heartbeat_loop, interleave_many, settle

NAME = "stop"
CASE = "5 stop"
RUNS = (200, 20)
"""Stops timed per kind of worker: full, ``--quick``."""
TARGET_US = 3000.0


async def noop() -> None:
    """The idle worker's function."""


async def handle(message: object) -> None:
    """The idle consumer's handler (never called)."""


async def stop_fluid(worker: fluid.Worker) -> float:
    """Start ``worker``, let it go idle, and time ``shutdown()``."""
    await worker.startup()
    await settle()
    start = time.perf_counter()
    await worker.shutdown()
    elapsed = time.perf_counter() - start
    if not worker.is_stopped():
        raise RuntimeError(f"{worker!r} returned from shutdown() while not stopped")
    return elapsed


async def stop_function_worker() -> float:
    """Seconds to stop an idle ``WorkerFunction``."""
    return await stop_fluid(fluid.WorkerFunction(noop, heartbeat=60, name="idle"))


async def stop_queue_worker() -> float:
    """Seconds to stop an idle ``QueueConsumerWorker``."""
    return await stop_fluid(fluid.QueueConsumerWorker(handle, name="idle_consumer"))


async def stop_sleeping_task() -> float:
    """Seconds for ``task.cancel()`` and awaiting it, on an idle hand-written worker."""
    task = asyncio.create_task(heartbeat_loop(noop, 60))
    await settle()
    start = time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    elapsed = time.perf_counter() - start
    if not task.cancelled():
        raise RuntimeError("the hand-written worker did not end by its cancellation")
    return elapsed


async def sentinel_consumer(queue: asyncio.Queue[object | None]) -> None:
    """A hand-written queue consumer that ends at a ``None`` sentinel."""
    while (message := await queue.get()) is not None:
        await handle(message)


async def stop_queue_task() -> float:
    """Seconds to stop an idle hand-written queue consumer with a sentinel."""
    queue: asyncio.Queue[object | None] = asyncio.Queue()
    task = asyncio.create_task(sentinel_consumer(queue))
    await settle()
    start = time.perf_counter()
    queue.put_nowait(None)
    await task
    return time.perf_counter() - start


async def run(options: Options) -> list[Row]:
    """Median stop latency of each kind of idle worker."""
    runs = options.size(*RUNS)
    function_s, task_s, queue_s, sentinel_s = await interleave_many(
        [stop_function_worker, stop_sleeping_task, stop_queue_worker, stop_queue_task], runs
    )
    target = at_most(TARGET_US, f"fluid <= {TARGET_US:,.0f} us")

    def row(measure: str, fluid_s: list[float], asyncio_s: list[float], key: str) -> Row:
        return Row(
            CASE,
            f"{measure} (median of {runs})",
            "us",
            statistics.median(fluid_s) * 1e6,
            statistics.median(asyncio_s) * 1e6,
            higher_is_better=False,
            target=target,
            key=key,
        )

    return [
        row("idle WorkerFunction vs task.cancel()", function_s, task_s, "stop.function"),
        row("idle QueueConsumerWorker vs sentinel", queue_s, sentinel_s, "stop.queue"),
    ]
