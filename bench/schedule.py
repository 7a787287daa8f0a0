"""Case 10: schedules: timing accuracy of many fixed-rate workers, idle CPU of many more.

Accuracy. fluid: a ``fluid.Workers`` tree of 1,000 ``ScheduledWorker(probe,
interval=0.01, initial_delay=0.01)`` (100 with ``--quick``); each run records
``worker.drift``, the seconds it started after its slot. asyncio: 1,000 tasks,
each a hand-written grid::

    next_t = loop.time() + interval
    while True:
        await asyncio.sleep(next_t - loop.time())
        record(loop.time() - next_t)
        next_t += interval  # and skip slots already passed, as fluid does

Both sides run for 1 s (0.3 s with ``--quick``), on a real event loop, three
times each (interleaved). All workers share the same slots, so each 10 ms the
loop has a burst of 1,000 runs to get through: the lateness measured is mostly
the time to reach a worker within its burst, the same for both sides. Figures:
median and p99 lateness in ms over every run of every repeat; an info row
gives the runs per second each side achieved (a side that skips more slots
runs less).

Idle CPU. fluid: a tree of 10,000 ``ScheduledWorker(noop, interval=60)``
(1,000 with ``--quick``), started, first runs done, then left alone for 2 s
of wall time (0.5 s). asyncio: 10,000 tasks ``while True: await noop();
await asyncio.sleep(60)``. Figure: ``time.process_time()`` per wall second
while idle, in ms of CPU per s, median of three runs (one with ``--quick``).
"""

from __future__ import annotations

import asyncio
import math
import statistics

import fluid

from ._harness import (
    Options,
    Row,
    at_least,
    at_most,
    cancel_and_wait,
    idle_cpu,
    interleave_many,
    settle,
    wait_for,
)

NAME = "schedule"
CASE = "10 schedule"
INTERVAL = 0.01
IDLE_TARGET_MS = 5.0
SCHEDULES = (1000, 100)
"""Fixed-rate schedules timed for accuracy: full, ``--quick``."""
SECONDS = (1.0, 0.3)
"""Seconds each accuracy run lasts: full, ``--quick``."""
IDLE_SCHEDULES = (10_000, 1000)
"""Idle 60 s schedules: full, ``--quick``."""
IDLE_SECONDS = (2.0, 0.5)
"""Seconds the idle schedules are left alone: full, ``--quick``."""


class Probe:
    """The scheduled function of both sides: append a lateness to a shared list."""

    __slots__ = ("lateness", "worker")

    def __init__(self, lateness: list[float]) -> None:
        self.lateness = lateness
        self.worker: fluid.ScheduledWorker | None = None

    async def __call__(self) -> None:
        assert self.worker is not None
        drift = self.worker.drift
        assert drift is not None
        self.lateness.append(drift)


async def noop() -> None:
    """The idle workers' function."""


# ---------------------------------------------------------------- accuracy


async def accuracy_fluid(count: int, seconds: float) -> list[float]:
    """Lateness of every run of ``count`` fixed-rate ScheduledWorkers over ``seconds``."""
    lateness: list[float] = []
    workers = []
    for i in range(count):
        probe = Probe(lateness)
        worker = fluid.ScheduledWorker(
            probe, interval=INTERVAL, initial_delay=INTERVAL, name=f"w{i}"
        )
        probe.worker = worker
        workers.append(worker)
    tree = fluid.Workers(*workers, name="schedules")
    await tree.startup()
    await asyncio.sleep(seconds)
    measured = lateness[:]  # not the runs made while the tree stops, one child at a time
    await wait_for(tree.shutdown(), "stopping the scheduled workers")
    return measured


async def grid_task(lateness: list[float], interval: float) -> None:
    """The hand-written fixed-rate loop, skipping slots already passed."""
    loop = asyncio.get_running_loop()
    next_t = loop.time() + interval
    while True:
        await asyncio.sleep(next_t - loop.time())
        lateness.append(loop.time() - next_t)
        next_t += interval
        now = loop.time()
        if next_t < now:
            next_t += math.ceil((now - next_t) / interval) * interval


async def accuracy_asyncio(count: int, seconds: float) -> list[float]:
    """Lateness of every tick of ``count`` hand-written grid tasks over ``seconds``."""
    lateness: list[float] = []
    tasks = [asyncio.create_task(grid_task(lateness, INTERVAL)) for _ in range(count)]
    await asyncio.sleep(seconds)
    measured = lateness[:]
    await wait_for(cancel_and_wait(tasks), "cancelling the grid tasks")
    return measured


def p99(values: list[float]) -> float:
    """The 99th percentile."""
    return statistics.quantiles(values, n=100)[98]


# ---------------------------------------------------------------- idle CPU


async def idle_fluid(count: int, seconds: float) -> float:
    """CPU seconds per wall second of a tree of ``count`` idle ScheduledWorkers."""
    tree = fluid.Workers(
        *(fluid.ScheduledWorker(noop, interval=60, name=f"s{i}") for i in range(count)),
        name="idle",
    )
    await tree.startup()
    await settle(5)  # every first run done: all wait for their next slot
    usage = await idle_cpu(seconds)
    await wait_for(tree.shutdown(), "stopping the idle schedules")
    return usage


async def sleeper() -> None:
    """The hand-written idle schedule."""
    while True:
        await noop()
        await asyncio.sleep(60)


async def idle_asyncio(count: int, seconds: float) -> float:
    """CPU seconds per wall second of ``count`` hand-written sleeping tasks."""
    tasks = [asyncio.create_task(sleeper()) for _ in range(count)]
    await settle(5)
    usage = await idle_cpu(seconds)
    await wait_for(cancel_and_wait(tasks), "cancelling the sleepers")
    return usage


# -------------------------------------------------------------------- rows


async def run(options: Options) -> list[Row]:
    """Timing accuracy of 1,000 10 ms schedules, idle CPU of 10,000 60 s schedules."""
    count = options.size(*SCHEDULES)
    seconds = options.size(*SECONDS)
    repeats = options.times(3)

    async def fluid_side() -> list[float]:
        return await accuracy_fluid(count, seconds)

    async def asyncio_side() -> list[float]:
        return await accuracy_asyncio(count, seconds)

    fluid_runs, asyncio_runs = await interleave_many([fluid_side, asyncio_side], repeats)
    fluid_late = [x for run in fluid_runs for x in run]
    asyncio_late = [x for run in asyncio_runs for x in run]

    idle_count = options.size(*IDLE_SCHEDULES)
    idle_seconds = options.size(*IDLE_SECONDS)

    async def fluid_idle() -> float:
        return await idle_fluid(idle_count, idle_seconds)

    async def asyncio_idle() -> float:
        return await idle_asyncio(idle_count, idle_seconds)

    fluid_cpu, asyncio_cpu = await interleave_many([fluid_idle, asyncio_idle], options.times(3))
    label = f"{count:,} x {INTERVAL * 1000:.0f} ms"
    wall = repeats * seconds
    return [
        Row(
            CASE,
            f"median lateness, {label}",
            "ms",
            statistics.median(fluid_late) * 1e3,
            statistics.median(asyncio_late) * 1e3,
            higher_is_better=False,
            target=at_least(0.67, ">= 0.67x"),
        ),
        Row(
            CASE,
            f"p99 lateness, {label}",
            "ms",
            p99(fluid_late) * 1e3,
            p99(asyncio_late) * 1e3,
            higher_is_better=False,
            target=at_least(0.67, ">= 0.67x"),
        ),
        Row(
            CASE,
            f"runs per second, {label}",
            "runs/s",
            len(fluid_late) / wall,
            len(asyncio_late) / wall,
            higher_is_better=True,
            key="schedule.runs",
        ),
        Row(
            CASE,
            f"idle CPU, {idle_count:,} schedules of 60 s",
            "ms CPU/s",
            statistics.median(fluid_cpu) * 1e3,
            statistics.median(asyncio_cpu) * 1e3,
            higher_is_better=False,
            target=at_most(IDLE_TARGET_MS, f"fluid <= {IDLE_TARGET_MS:.0f} ms/s"),
            key="schedule.idle_cpu",
        ),
    ]
