"""Case 4: a tree of 10,000 idle workers: build, start, stop, memory, build linearity.

fluid: ``fluid.Workers`` holding 10,000 ``WorkerFunction(mark, heartbeat=60)``
children; ``mark`` counts its first call, so "running" means every child's
task has really started, not just that ``startup()`` returned.

asyncio: 10,000 tasks each running ``idle_task`` (see ``_harness``): a loop
of ``async with asyncio.timeout(60): await ev.wait()`` on its own
``asyncio.Event``, so each can be stopped on its own. Building is creating
the events; starting is creating the tasks and waiting until each has run
its first step; stopping sets each event and awaits its task, last started
first (the order fluid's tree stops in). An extra row stops them all at once
(set every event, then ``gather``).

Memory is measured with ``tracemalloc``: traced bytes with everything
running minus before building, divided by the number of workers.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import NamedTuple

import fluid

from ._harness import (
    Countdown,
    Options,
    Row,
    at_least,
    at_most,
    idle_task,
    interleave_many,
    traced_bytes,
    wait_for,
)

NAME = "tree"
CASE = "4 tree"
WORKERS = (10_000, 1_000)
"""Workers in the tree: full, ``--quick``."""


class Phases(NamedTuple):
    """Seconds spent building, starting (until all run) and stopping."""

    build: float
    start: float
    stop: float


class Fleet(NamedTuple):
    """The hand-written counterpart of a tree: one event and one task per worker."""

    events: list[asyncio.Event]
    tasks: list[asyncio.Task[None]]


async def noop() -> None:
    """The function of the workers built for the linearity check."""


def build_fluid(count: int, started: Countdown | None = None) -> fluid.Workers:
    """A tree of ``count`` idle ``WorkerFunction`` children."""
    function = noop if started is None else started.mark
    return fluid.Workers(
        *[fluid.WorkerFunction(function, heartbeat=60, name=f"w{i}") for i in range(count)],
        name="bench_tree",
    )


def build_asyncio(count: int) -> list[asyncio.Event]:
    """The hand-written build: one stop event per worker."""
    return [asyncio.Event() for _ in range(count)]


def start_asyncio(events: list[asyncio.Event], started: Countdown) -> Fleet:
    """One ``idle_task`` per event."""
    return Fleet(events, [asyncio.create_task(idle_task(event, started)) for event in events])


async def stop_in_reverse(fleet: Fleet) -> None:
    """Stop the tasks one at a time, last started first."""
    for event, task in zip(reversed(fleet.events), reversed(fleet.tasks), strict=True):
        event.set()
        await task


async def stop_concurrently(fleet: Fleet) -> None:
    """Set every event, then wait for all the tasks."""
    for event in fleet.events:
        event.set()
    await asyncio.gather(*fleet.tasks)


async def cycle_fluid(count: int) -> Phases:
    """Build, start and stop a fluid tree, timing each phase."""
    started = Countdown(count)
    t0 = time.perf_counter()
    tree = build_fluid(count, started)
    t1 = time.perf_counter()
    await tree.startup()
    await wait_for(started.done, "fluid tree start")
    t2 = time.perf_counter()
    await tree.shutdown()
    t3 = time.perf_counter()
    if not all(worker.is_stopped() for worker in tree.workers()):
        raise RuntimeError("fluid tree returned from shutdown() with workers not stopped")
    return Phases(t1 - t0, t2 - t1, t3 - t2)


async def cycle_asyncio(count: int, *, concurrent: bool) -> Phases:
    """Build, start and stop the hand-written fleet, timing each phase."""
    started = Countdown(count)
    t0 = time.perf_counter()
    events = build_asyncio(count)
    t1 = time.perf_counter()
    fleet = start_asyncio(events, started)
    await wait_for(started.done, "asyncio tasks start")
    t2 = time.perf_counter()
    await (stop_concurrently(fleet) if concurrent else stop_in_reverse(fleet))
    t3 = time.perf_counter()
    return Phases(t1 - t0, t2 - t1, t3 - t2)


async def memory_fluid(count: int) -> float:
    """Traced bytes per worker of a running fluid tree."""

    async def start() -> fluid.Workers:
        started = Countdown(count)
        tree = build_fluid(count, started)
        await tree.startup()
        await wait_for(started.done, "fluid tree start")
        return tree

    used, tree = await traced_bytes(start)
    await tree.shutdown()
    return used / count


async def memory_asyncio(count: int) -> float:
    """Traced bytes per worker of the running hand-written fleet."""

    async def start() -> Fleet:
        started = Countdown(count)
        fleet = start_asyncio(build_asyncio(count), started)
        await wait_for(started.done, "asyncio tasks start")
        return fleet

    used, fleet = await traced_bytes(start)
    await stop_in_reverse(fleet)
    return used / count


async def build_time_fluid(count: int) -> float:
    """Seconds to build a fluid tree of ``count`` workers (never started)."""
    start = time.perf_counter()
    build_fluid(count)
    return time.perf_counter() - start


async def build_time_asyncio(count: int) -> float:
    """Seconds to build the hand-written fleet's events."""
    start = time.perf_counter()
    build_asyncio(count)
    return time.perf_counter() - start


async def run(options: Options) -> list[Row]:
    """The phases and memory of a 10,000-worker tree, then the build linearity rows."""
    count = options.size(*WORKERS)
    rows = await phase_rows(count, options)
    rows.append(await memory_row(count))
    rows.extend(await linearity_rows(options))
    return rows


async def phase_rows(count: int, options: Options) -> list[Row]:
    """Best time of each phase for fluid, reverse stop and concurrent stop."""
    fluid_runs, reverse_runs, gather_runs = await interleave_many(
        [
            lambda: cycle_fluid(count),
            lambda: cycle_asyncio(count, concurrent=False),
            lambda: cycle_asyncio(count, concurrent=True),
        ],
        options.times(5),
    )
    fluid_best = best_phases(fluid_runs)
    reverse_best = best_phases(reverse_runs)
    gather_best = best_phases(gather_runs)
    at_most_150 = at_least(1 / 1.5, ">= 0.67x (<= 1.5x time)")

    def row(measure: str, fluid_s: float, asyncio_s: float, *, target: bool, key: str) -> Row:
        return Row(
            CASE,
            measure,
            "ms",
            fluid_s * 1e3,
            asyncio_s * 1e3,
            higher_is_better=False,
            target=at_most_150 if target else None,
            key=key,
        )

    return [
        row(
            f"{count:,} workers: build (asyncio: Events)",
            fluid_best.build,
            reverse_best.build,
            target=False,
            key="tree.build",
        ),
        row(
            "start until all running",
            fluid_best.start,
            reverse_best.start,
            target=True,
            key="tree.start",
        ),
        row(
            "stop, asyncio in reverse order",
            fluid_best.stop,
            reverse_best.stop,
            target=True,
            key="tree.stop",
        ),
        row(
            "stop, asyncio set all + gather",
            fluid_best.stop,
            gather_best.stop,
            target=False,
            key="tree.stop_gather",
        ),
    ]


def best_phases(runs: list[Phases]) -> Phases:
    """The best time of each phase, independently."""
    return Phases(*(min(phase) for phase in zip(*runs, strict=True)))


async def memory_row(count: int) -> Row:
    """Bytes per running worker, fluid against the hand-written task."""
    fluid_bytes, asyncio_bytes = await interleave_many(
        [lambda: memory_fluid(count), lambda: memory_asyncio(count)], 1
    )
    return Row(
        CASE,
        "memory per running worker",
        "bytes",
        fluid_bytes[0],
        asyncio_bytes[0],
        higher_is_better=False,
        target=at_least(1 / 1.4, ">= 0.71x (<= 1.4x memory)"),
        key="tree.memory",
    )


async def linearity_rows(options: Options) -> list[Row]:
    """Build time per worker for growing trees, and how much it grows."""
    sizes = [options.size(n, n // 10) for n in (2_500, 5_000, 10_000, 20_000)]
    per_worker: list[tuple[float, float]] = []
    for size in sizes:
        fluid_s, asyncio_s = await interleave_many(
            [partial(build_time_fluid, size), partial(build_time_asyncio, size)],
            options.times(2),
        )
        per_worker.append((min(fluid_s) / size * 1e6, min(asyncio_s) / size * 1e6))
    rows = [
        Row(CASE, f"build {size:,} workers", "us/worker", f, a, higher_is_better=False)
        for size, (f, a) in zip(sizes, per_worker, strict=True)
    ]
    growth = f"build time per worker, {sizes[-1]:,} / {sizes[0]:,}"
    first, last = per_worker[0], per_worker[-1]
    rows.append(
        Row(
            CASE,
            growth,
            "x",
            last[0] / first[0],
            last[1] / first[1],
            higher_is_better=False,
            target=at_most(1.5, "fluid <= 1.5 (flat)"),
        )
    )
    return rows
