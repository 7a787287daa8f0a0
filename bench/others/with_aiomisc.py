"""aiomisc's side: the suite rows where aiomisc does the same job as fluid.

Each case uses the suite's own workload functions and sizes
(``bench.executors``, ``bench.tree``, ``bench.schedule``), so only the
library differs:

* ``threads``: 4 threads ``put`` messages into aiomisc's thread-to-async
  channel, ``FromThreadChannel``, and one consumer task on the loop does
  ``while True: m = await channel.get(); await handler(m)`` (aiomisc has no
  consumer worker: the channel is what it offers for this).
* ``executors.threads``: ``aiomisc.threaded(trivial)`` called by the same 64
  caller tasks, on an ``aiomisc.ThreadPoolExecutor(4)`` set as the loop's
  default executor (what aiomisc's entrypoint does with its own pool).
* ``executors.round_trip`` and ``executors.speed_up``:
  ``await pool.create_task(fn, *args)`` on ``aiomisc.WorkerPool(2)`` (and
  ``WorkerPool(1)``), warmed up like fluid's ``ProcessPool``.
* ``tree.*``: 10,000 ``aiomisc.Service`` objects in one ``aiomisc.Entrypoint``
  (``async with`` used on the running loop). Each service's ``start()`` sets
  its ``start_event`` and then sleeps in a loop of 60 s: aiomisc's
  long-running service, idle like the suite's ``WorkerFunction(heartbeat=60)``.
  Leaving the entrypoint cancels these tasks and calls every ``stop()``.
* ``schedule.runs`` and ``schedule.idle_cpu``: ``aiomisc.PeriodicCallback``.
  It sleeps ``interval`` after each run instead of keeping a fixed rate, so
  only the runs per second and the idle CPU are compared, not the lateness.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

import aiomisc
from aiomisc.thread_pool import FromThreadChannel

from .. import executors, schedule, threads, tree
from .._harness import (
    Countdown,
    Options,
    cancel_and_wait,
    idle_cpu,
    interleave_many,
    settle,
    traced_bytes,
    wait_for,
)
from ._figures import Figure, NotCompared

NAME = "aiomisc"

NOT_COMPARED = [
    NotCompared("1 queue, 3 fanout", "aiomisc has no queue consumer worker."),
    NotCompared("7 consumers, 11 jobs", "aiomisc has no consumer with a concurrency limit."),
    NotCompared(
        "5 stop, 6 grace",
        "an aiomisc service is stopped by cancelling its task; there is no graceful "
        "stop request or grace period per service to time.",
    ),
    NotCompared("8 restart", "aiomisc does not restart a service that crashed."),
    NotCompared(
        "10 schedule (lateness)",
        "PeriodicCallback sleeps its interval after each run, so it has no fixed-rate "
        "slots to be late for; its runs per second and idle CPU are compared instead.",
    ),
]


def version() -> str:
    """The installed aiomisc version."""
    return importlib.metadata.version("aiomisc")


# ------------------------------------------------------------------ threads


async def channel_run(per_thread: int) -> float:
    """Seconds for a consumer task to handle what 4 threads put into a channel."""
    counter = Countdown(threads.THREADS * per_thread)
    channel = FromThreadChannel()

    async def consume() -> None:
        while True:
            message = await channel.get()
            await counter.handle(message)

    task = asyncio.create_task(consume())
    try:
        await settle()
        return await threads.timed_threads(channel.put, counter, per_thread)
    finally:
        await cancel_and_wait([task])
        channel.close()


async def thread_sends(options: Options) -> list[Figure]:
    """Messages per second from 4 producer threads through ``FromThreadChannel``."""
    per_thread = options.size(*threads.PER_THREAD)
    (runs,) = await interleave_many([lambda: channel_run(per_thread)], options.times(5))
    how = (
        f"{threads.THREADS} threads `put` into an `aiomisc.thread_pool.FromThreadChannel`; "
        "a consumer task awaits `channel.get()`"
    )
    return [Figure("threads", threads.THREADS * per_thread / min(runs), "msg/s", how)]


async def thread_calls(options: Options) -> list[Figure]:
    """Thread adapter calls per second: ``threaded`` on aiomisc's thread pool."""
    total = executors.thread_calls(options)
    pool = aiomisc.ThreadPoolExecutor(executors.THREADS)
    asyncio.get_running_loop().set_default_executor(pool)
    call = aiomisc.threaded(executors.trivial)
    try:
        (runs,) = await interleave_many([lambda: executors.callers(call, total)], options.times(5))
    finally:
        pool.shutdown()
    how = f"`aiomisc.threaded` on `aiomisc.ThreadPoolExecutor({executors.THREADS})`"
    return [Figure("executors.threads", total / min(runs), "calls/s", how)]


# ---------------------------------------------------------------- processes


async def round_trip(options: Options) -> list[Figure]:
    """Microseconds per trivial call through a warm ``WorkerPool(2)``."""
    count = options.size(*executors.ROUND_TRIPS)
    async with aiomisc.WorkerPool(executors.PROCESSES) as pool:
        await executors.warm(pool.create_task, executors.PROCESSES)
        (runs,) = await interleave_many(
            [lambda: executors.round_trips(pool.create_task, count)], options.times(5)
        )
    how = f"`await pool.create_task(fn, i)` on `aiomisc.WorkerPool({executors.PROCESSES})`"
    return [Figure("executors.round_trip", min(runs) * 1e6, "us", how)]


async def speed_up(options: Options) -> list[Figure]:
    """CPU-bound speed-up of ``WorkerPool(2)`` over ``WorkerPool(1)``."""
    n = options.size(*executors.BURN)
    async with (
        aiomisc.WorkerPool(1) as one,
        aiomisc.WorkerPool(executors.PROCESSES) as two,
    ):
        await executors.warm(one.create_task, 1)
        await executors.warm(two.create_task, executors.PROCESSES)
        ones, twos = await interleave_many(
            [
                lambda: executors.cpu_time(one.create_task, n),
                lambda: executors.cpu_time(two.create_task, n),
            ],
            options.times(3),
        )
    how = f"`aiomisc.WorkerPool({executors.PROCESSES})` against `WorkerPool(1)`"
    speed = statistics.median(ones) / statistics.median(twos)
    return [Figure("executors.speed_up", speed, "x", how)]


# --------------------------------------------------------------------- tree


class IdleService(aiomisc.Service):
    """A long-running aiomisc service that wakes every 60 s until cancelled."""

    def __init__(self, started: Countdown | None = None) -> None:
        super().__init__()
        self.started = started

    async def start(self) -> None:
        """Tell the entrypoint it started, count it, then idle."""
        self.start_event.set()
        if self.started is not None:
            self.started.tick()
        while True:  # noqa: ASYNC110 - wakes every 60 s, like the suite's idle workers
            await asyncio.sleep(60)


def build(count: int, started: Countdown) -> aiomisc.Entrypoint:
    """``count`` idle services in an entrypoint that leaves logging and signals alone."""
    services = [IdleService(started) for _ in range(count)]
    return aiomisc.entrypoint(*services, log_config=False, catch_signals=())


class Phases(NamedTuple):
    """Seconds spent building, starting (until all run) and stopping."""

    build: float
    start: float
    stop: float


async def cycle(count: int) -> Phases:
    """Build, start and stop the services, timing each phase."""
    started = Countdown(count)
    t0 = time.perf_counter()
    entrypoint = build(count, started)
    t1 = time.perf_counter()
    await entrypoint.__aenter__()
    await wait_for(started.done, "aiomisc services start")
    t2 = time.perf_counter()
    await entrypoint.__aexit__(None, None, None)
    t3 = time.perf_counter()
    return Phases(t1 - t0, t2 - t1, t3 - t2)


async def memory(count: int) -> float:
    """Traced bytes per running service, as ``bench.tree.memory_fluid`` measures it."""

    async def start() -> aiomisc.Entrypoint:
        started = Countdown(count)
        entrypoint = build(count, started)
        await entrypoint.__aenter__()
        await wait_for(started.done, "aiomisc services start")
        return entrypoint

    used, entrypoint = await traced_bytes(start)
    await entrypoint.__aexit__(None, None, None)
    return used / count


async def services(options: Options) -> list[Figure]:
    """Build, start, stop and memory of 10,000 idle services in one entrypoint."""
    count = options.size(*tree.WORKERS)
    (cycles,) = await interleave_many([lambda: cycle(count)], options.times(5))
    best = Phases(*(min(phase) for phase in zip(*cycles, strict=True)))
    used = await memory(count)
    what = f"{count:,} `aiomisc.Service`s sleeping 60 s in a loop, in one `aiomisc.Entrypoint`"
    return [
        Figure("tree.build", best.build * 1e3, "ms", f"{what}: create them"),
        Figure("tree.start", best.start * 1e3, "ms", f"{what}: enter it"),
        Figure("tree.stop", best.stop * 1e3, "ms", f"{what}: exit it (cancels them all)"),
        Figure("tree.memory", used, "bytes", what),
    ]


# ----------------------------------------------------------------- schedules


async def periodic_runs(count: int, seconds: float) -> int:
    """Runs made by ``count`` ``PeriodicCallback``s of ``INTERVAL`` in ``seconds``."""
    runs = 0

    async def probe() -> None:
        nonlocal runs
        runs += 1

    callbacks = [aiomisc.PeriodicCallback(probe) for _ in range(count)]
    for callback in callbacks:
        callback.start(schedule.INTERVAL, delay=schedule.INTERVAL)
    await asyncio.sleep(seconds)
    measured = runs
    await wait_for(
        asyncio.gather(*(c.stop(return_exceptions=True) for c in callbacks)),
        "stopping the periodic callbacks",
    )
    return measured


async def periodic_idle(count: int, seconds: float) -> float:
    """CPU seconds per wall second of ``count`` idle ``PeriodicCallback``s of 60 s."""
    callbacks = [aiomisc.PeriodicCallback(schedule.noop) for _ in range(count)]
    for callback in callbacks:
        callback.start(60)
    await settle(5)
    usage = await idle_cpu(seconds)
    await wait_for(
        asyncio.gather(*(c.stop(return_exceptions=True) for c in callbacks)),
        "stopping the idle callbacks",
    )
    return usage


async def periodic(options: Options) -> list[Figure]:
    """Runs per second of 1,000 10 ms callbacks, idle CPU of 10,000 60 s callbacks."""
    count = options.size(*schedule.SCHEDULES)
    seconds = options.size(*schedule.SECONDS)
    repeats = options.times(3)
    (runs,) = await interleave_many([lambda: periodic_runs(count, seconds)], repeats)
    idle_count = options.size(*schedule.IDLE_SCHEDULES)
    idle_seconds = options.size(*schedule.IDLE_SECONDS)
    (cpu,) = await interleave_many(
        [lambda: periodic_idle(idle_count, idle_seconds)], options.times(3)
    )
    interval_ms = schedule.INTERVAL * 1e3
    return [
        Figure(
            "schedule.runs",
            sum(runs) / (repeats * seconds),
            "runs/s",
            f"{count:,} `aiomisc.PeriodicCallback`s started with interval "
            f"{interval_ms:g} ms (it sleeps the interval after each run)",
        ),
        Figure(
            "schedule.idle_cpu",
            statistics.median(cpu) * 1e3,
            "ms CPU/s",
            f"{idle_count:,} `aiomisc.PeriodicCallback`s of 60 s",
        ),
    ]


Case = Callable[[Options], Coroutine[Any, Any, list[Figure]]]
CASES: list[Case] = [thread_sends, thread_calls, round_trip, speed_up, services, periodic]
