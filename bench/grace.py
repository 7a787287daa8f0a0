"""Case 6: CPU used while waiting out the grace period of a worker that ignores stop.

The worker's ``run`` awaits an ``asyncio.Event`` nobody sets, so only a
cancellation ends it.

fluid: ``await worker.shutdown()`` with ``stopping_grace_period=1.0``: a
graceful stop request, a 1 s wait, then a cancel.
asyncio: ``asyncio.wait({task}, timeout=1.0)``, then ``task.cancel()`` and
``await task``: the hand-written "wait, then force" stop.

The figure is ``time.process_time()`` consumed during the stop, in ms of CPU
per second of wall time (median over the runs); a second row shows the wall
time itself.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import NamedTuple

import fluid

from ._harness import (
    Options,
    Row,
    at_most,
    cancel_and_wait,
    interleave_many,
    quiet_fluid_logs,
    settle,
)

NAME = "grace"
CASE = "6 grace"
GRACE = 1.0
TARGET_CPU_MS = 5.0


class Usage(NamedTuple):
    """CPU and wall seconds spent by one stop."""

    cpu: float
    wall: float


async def ignore_stop() -> None:
    """Wait for something that never happens: only a cancel ends this."""
    await asyncio.Event().wait()


class Deaf(fluid.Worker):
    """A fluid worker that ignores stop requests."""

    async def run(self) -> None:
        """Wait until cancelled."""
        await ignore_stop()


class Clock:
    """Measures CPU and wall time from its creation to ``usage()``."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def usage(self) -> Usage:
        """CPU and wall seconds since the clock was created."""
        return Usage(time.process_time() - self.cpu, time.perf_counter() - self.wall)


async def stop_fluid() -> Usage:
    """CPU and wall time of ``shutdown()`` of a ``Deaf`` worker."""
    worker = Deaf(stopping_grace_period=GRACE)
    await worker.startup()
    await settle()
    clock = Clock()
    await worker.shutdown()
    usage = clock.usage()
    if worker.worker_state is not fluid.WorkerState.FORCE_STOPPED:
        raise RuntimeError(f"{worker!r} should have been force-stopped")
    return usage


async def stop_asyncio() -> Usage:
    """CPU and wall time of waiting ``GRACE`` seconds for a task, then cancelling it."""
    task = asyncio.create_task(ignore_stop())
    await settle()
    clock = Clock()
    done, _ = await asyncio.wait({task}, timeout=GRACE)
    if not done:
        await cancel_and_wait([task])
    return clock.usage()


def cpu_per_second(runs: list[Usage]) -> float:
    """Median ms of CPU per second of wall time."""
    return statistics.median(run.cpu / run.wall * 1e3 for run in runs)


async def run(options: Options) -> list[Row]:
    """CPU per wall second, and wall time, of a forced stop after the grace period."""
    repeats = options.times(3)
    with quiet_fluid_logs():
        fluid_runs, asyncio_runs = await interleave_many([stop_fluid, stop_asyncio], repeats)
    return [
        Row(
            CASE,
            f"CPU during {GRACE:g} s grace (median of {repeats})",
            "ms CPU/s",
            cpu_per_second(fluid_runs),
            cpu_per_second(asyncio_runs),
            higher_is_better=False,
            target=at_most(TARGET_CPU_MS, f"fluid <= {TARGET_CPU_MS:g} ms/s"),
            key="grace.cpu",
        ),
        Row(
            CASE,
            "wall time of that stop",
            "s",
            statistics.median(run.wall for run in fluid_runs),
            statistics.median(run.wall for run in asyncio_runs),
            higher_is_better=False,
            key="grace.wall",
        ),
    ]
