"""Case 4: a tree of 10,000 idle workers: build, start, stop, memory, build linearity.

fluid: ``fluid.Workers`` holding 10,000 ``WorkerFunction(mark, heartbeat=60)``
children; ``mark`` counts its first call, so "running" means every child's
task has really started, not just that ``startup()`` returned.

asyncio: the simplest correct code a strong engineer writes for the same
job, one task per worker running ``heartbeat_loop`` (see ``_harness``)::

    while True:
        await fn()
        await asyncio.sleep(heartbeat)

with the same ``fn`` (``mark``) and ``heartbeat`` (60 s), stopped by
``task.cancel()``. No event, no timeout, no name: a task cancelled in its
sleep is the lightest idle worker asyncio has.

* build: the list of the workers' names (``f"w{i}"``, the names fluid's
  children are given). Such code has nothing else to build: it creates each
  coroutine in the call that makes its task (holding coroutines that never
  run would only earn a "never awaited" warning), so the start rows of both
  sides create a coroutine and a task per worker. The build row is ``info``;
  the build target is fluid's own time a worker, shown beside this figure.
* start: ``asyncio.create_task(heartbeat_loop(mark, 60))`` per worker, until
  each task has run its first step (called ``mark``).
* stop, in reverse order (the order fluid's tree stops in): for each task,
  last started first, ``task.cancel()`` then await it.
* stop, all at once (``info``): cancel every task, then ``gather`` them.

Memory is measured with ``tracemalloc``: traced bytes with everything
running minus before building, divided by the number of workers.

The targets are those of issue 16: at most 1.2x the hand-written memory per
running worker, start time and reverse stop time, and at most 1.2 us to
build a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial
from typing import NamedTuple

import fluid

from ._harness import (
    Countdown,
    Options,
    Row,
    Target,
    at_least,
    at_most,
    heartbeat_loop,
    interleave_many,
    traced_bytes,
    wait_for,
)

NAME = "tree"
CASE = "4 tree"
WORKERS = (10_000, 1_000)
"""Workers in the tree: full, ``--quick``."""
HEARTBEAT = 60.0
"""Seconds each idle worker sleeps between two calls of its function (both sides)."""
RATIO_TARGET = 1.2
"""fluid may take at most this many times the hand-written memory, start and stop time."""
BUILD_TARGET_US = 1.2
"""fluid may take at most this many microseconds to build a worker."""


class Phases(NamedTuple):
    """Seconds spent building, starting (until all run) and stopping."""

    build: float
    start: float
    stop: float


async def noop() -> None:
    """The function of the workers built for the linearity check."""


def build_fluid(count: int, started: Countdown | None = None) -> fluid.Workers:
    """A tree of ``count`` idle ``WorkerFunction`` children."""
    function = noop if started is None else started.mark
    return fluid.Workers(
        *[fluid.WorkerFunction(function, heartbeat=HEARTBEAT, name=f"w{i}") for i in range(count)],
        name="bench_tree",
    )


def build_asyncio(count: int) -> list[str]:
    """The hand-written build: the workers' names, nothing else."""
    return [f"w{i}" for i in range(count)]


def start_asyncio(names: list[str], started: Countdown) -> list[asyncio.Task[None]]:
    """One ``heartbeat_loop`` task per worker."""
    return [asyncio.create_task(heartbeat_loop(started.mark, HEARTBEAT)) for _ in names]


async def stop_in_reverse(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks one at a time, last started first, awaiting each."""
    for task in reversed(tasks):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stop_concurrently(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel every task, then wait for all of them."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def check_cancelled(tasks: list[asyncio.Task[None]]) -> None:
    """Fail unless every hand-written task ended by its cancellation."""
    if not all(task.cancelled() for task in tasks):
        raise RuntimeError("a hand-written worker did not end by its cancellation")


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
    """Build, start and stop the hand-written tasks, timing each phase."""
    started = Countdown(count)
    t0 = time.perf_counter()
    names = build_asyncio(count)
    t1 = time.perf_counter()
    tasks = start_asyncio(names, started)
    await wait_for(started.done, "asyncio tasks start")
    t2 = time.perf_counter()
    await (stop_concurrently(tasks) if concurrent else stop_in_reverse(tasks))
    t3 = time.perf_counter()
    check_cancelled(tasks)
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
    """Traced bytes per worker of the running hand-written tasks."""

    async def start() -> list[asyncio.Task[None]]:
        started = Countdown(count)
        tasks = start_asyncio(build_asyncio(count), started)
        await wait_for(started.done, "asyncio tasks start")
        return tasks

    used, tasks = await traced_bytes(start)
    await stop_in_reverse(tasks)
    check_cancelled(tasks)
    return used / count


async def build_time_fluid(count: int) -> float:
    """Seconds to build a fluid tree of ``count`` workers (never started)."""
    start = time.perf_counter()
    build_fluid(count)
    return time.perf_counter() - start


async def build_time_asyncio(count: int) -> float:
    """Seconds to build the hand-written workers' names."""
    start = time.perf_counter()
    build_asyncio(count)
    return time.perf_counter() - start


async def run(options: Options) -> list[Row]:
    """The phases and memory of a 10,000-worker tree, then the build linearity rows."""
    count = options.size(*WORKERS)
    rows = await phase_rows(count, options)
    rows.append(await memory_row(count))
    rows.extend(await linearity_rows(count, options))
    return rows


def ratio_target(what: str) -> Target:
    """At most ``RATIO_TARGET`` times the hand-written ``what`` (time or memory)."""
    return at_least(1 / RATIO_TARGET, f">= {1 / RATIO_TARGET:.2f}x (<= {RATIO_TARGET}x {what})")


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
    within = ratio_target("time")

    def row(measure: str, fluid_s: float, asyncio_s: float, *, target: bool, key: str) -> Row:
        return Row(
            CASE,
            measure,
            "ms",
            fluid_s * 1e3,
            asyncio_s * 1e3,
            higher_is_better=False,
            target=within if target else None,
            key=key,
        )

    return [
        row(
            f"{count:,} workers: build (asyncio: names)",
            fluid_best.build,
            reverse_best.build,
            target=False,
            key="tree.build",
        ),
        row(
            "start until all running (asyncio: create_task each)",
            fluid_best.start,
            reverse_best.start,
            target=True,
            key="tree.start",
        ),
        row(
            "stop in reverse order (asyncio: cancel + await each)",
            fluid_best.stop,
            reverse_best.stop,
            target=True,
            key="tree.stop",
        ),
        row(
            "stop, asyncio cancel all + gather",
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
        target=ratio_target("memory"),
        key="tree.memory",
    )


async def linearity_rows(count: int, options: Options) -> list[Row]:
    """Build time per worker for growing trees, and how much it grows.

    The row of the tree's own size (10,000 workers) carries the absolute
    build target on fluid's figure.
    """
    sizes = [options.size(n, n // 10) for n in (2_500, 5_000, 10_000, 20_000)]
    per_worker: list[tuple[float, float]] = []
    for size in sizes:
        fluid_s, asyncio_s = await interleave_many(
            [partial(build_time_fluid, size), partial(build_time_asyncio, size)],
            options.times(3),
        )
        per_worker.append((min(fluid_s) / size * 1e6, min(asyncio_s) / size * 1e6))
    build_target = at_most(BUILD_TARGET_US, f"fluid <= {BUILD_TARGET_US} us")
    rows = [
        Row(
            CASE,
            f"build {size:,} workers (asyncio: names)",
            "us/worker",
            f,
            a,
            higher_is_better=False,
            target=build_target if size == count else None,
        )
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
