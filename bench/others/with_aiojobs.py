"""aiojobs' side: many short jobs, at most 16 at a time (the suite's case 11, ``bench.jobs``).

``aiojobs.Scheduler(limit=16, pending_limit=0)`` (no bound on the pending
jobs, like fluid's unbounded queue) and ``await scheduler.spawn(handler(m))``
for every message, from the loop in the same batches as the suite; the clock
runs from the first spawn until the handler has seen the last message. Same
handlers (1 ms and trivial) and sizes as ``bench.jobs``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiojobs

from .. import jobs
from .._harness import Countdown, Options, interleave_many, wait_for
from ..consumers import SlowCounter
from ._figures import Figure, NotCompared

NAME = "aiojobs"

NOT_COMPARED = [
    NotCompared(
        "every case but 11 jobs",
        "aiojobs schedules jobs; it has no workers, trees, queues, schedules or pools.",
    ),
]


def version() -> str:
    """The installed aiojobs version."""
    return importlib.metadata.version("aiojobs")


async def run_jobs(make_counter: jobs.CounterFactory, count: int) -> float:
    """Seconds for ``count`` jobs spawned on ``Scheduler(limit=LIMIT)`` to be handled."""
    counter = make_counter(count)
    scheduler = aiojobs.Scheduler(limit=jobs.LIMIT, pending_limit=0)
    start = time.perf_counter()
    for first in range(0, count, jobs.BATCH):
        for message in range(first, min(first + jobs.BATCH, count)):
            await scheduler.spawn(counter.handle(message))
        await asyncio.sleep(0)
    await wait_for(counter.done, "aiojobs jobs")
    elapsed = time.perf_counter() - start
    await scheduler.close()
    return elapsed


async def limited_jobs(options: Options) -> list[Figure]:
    """Jobs per second with the 1 ms handler and with the trivial one."""
    io_count = options.size(*jobs.IO_JOBS)
    trivial_count = options.size(*jobs.TRIVIAL_JOBS)
    (io_runs,) = await interleave_many([lambda: run_jobs(SlowCounter, io_count)], options.times(3))
    (trivial_runs,) = await interleave_many(
        [lambda: run_jobs(Countdown, trivial_count)], options.times(5)
    )
    how = f"`await scheduler.spawn(handler(m))` on `aiojobs.Scheduler(limit={jobs.LIMIT})`"
    return [
        Figure("jobs.io", io_count / min(io_runs), "msg/s", how),
        Figure("jobs.trivial", trivial_count / min(trivial_runs), "msg/s", how),
    ]


Case = Callable[[Options], Coroutine[Any, Any, list[Figure]]]
CASES: list[Case] = [limited_jobs]
