"""aio-fluid's side: a script run by path in aio-fluid's own virtualenv, isolated.

    .venv-aiofluid/bin/python -I bench/others/with_aiofluid.py --loop uvloop --plan '{...}'

PyPI's ``aio-fluid`` installs a top-level package named ``fluid``, like this
project. So this runs in a virtualenv that has aio-fluid and not this project,
with ``python -I`` (no current directory or script directory on ``sys.path``),
from a directory outside the repository: ``import fluid`` is aio-fluid's.
It cannot import the ``bench`` package either (that would put this project's
``fluid`` on the path); it loads ``bench/_harness.py`` by its file path for the
shared helpers (``Countdown``, ``produce``, the interleaved runs, the leak
checks), which import nothing but ``fluid`` for its ``__version__``.

The sizes come from ``python -m bench.others`` in ``--plan`` (JSON), read from
the suite's modules, so they are the suite's. The results go to stdout as one
JSON document, in the fields of ``bench/others/_figures.py``; progress goes to
stderr.

aio-fluid's ``fluid.utils.worker`` (read in 2.5.0, the newest release for
Python 3.11; 2.12.1's differs only in error messages and in how ``get_message``
treats a cancel while stopping) behaves in ways that decide what can be
measured:

* a ``WorkerFunction`` sleeps its whole ``heartbeat`` before it looks at its
  state again, so an idle worker (heartbeat 60 s) does not stop on request: it
  is cancelled when its grace period ends. Its workers here get a grace period
  of ``GRACE`` (1 s; aio-fluid's default is 10 s), so their stop times are
  about that long by construction;
* a ``QueueConsumer`` polls its queue with a 0.5 s timeout, so it notices a stop
  request within 0.5 s;
* ``shutdown()`` waits for the worker in a loop of ``await asyncio.sleep(0)``,
  which keeps the CPU busy for as long as the worker takes to stop;
* every worker logs a warning when it stops. Logs below CRITICAL from the
  ``fluid`` logger are silenced while measuring, as the suite silences
  fluid's expected warnings, so that writing 10,000 lines to stderr is not
  what is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import importlib.util
import json
import logging
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import fluid
from fluid.utils.dispatcher import AsyncDispatcher
from fluid.utils.worker import (
    AsyncConsumer,
    QueueConsumerWorker,
    Worker,
    WorkerFunction,
    Workers,
)

NAME = "aio-fluid"
GRACE = 1.0
"""The grace period of the workers measured here, in seconds."""
TREE_GRACE = 60.0
"""The grace period of a ``Workers`` tree: longer than its children's, so the
tree is never cancelled while its children are still being stopped."""
STOP_RUNS = 5
"""Stops timed per kind of worker (each takes up to ``GRACE``), instead of the suite's 200."""

NOT_COMPARED = [
    {
        "case": "2 threads",
        "reason": "`send()` is `asyncio.Queue.put_nowait`, which is not thread-safe: "
        "sending from other threads is not a supported use, so it is not measured.",
    },
    {
        "case": "7 consumers, 11 jobs",
        "reason": "a consumer handles one message at a time: there is no concurrency "
        "option, and no thread or process handlers.",
    },
    {
        "case": "8 restart",
        "reason": "`Workers` does not restart a child: when one stops, it stops them all.",
    },
    {
        "case": "9 executors",
        "reason": "`fluid.utils.worker` has no thread or process pool; aio-fluid's task "
        "queue (`fluid.scheduler`) runs CPU-bound tasks in subprocesses but needs Redis.",
    },
    {
        "case": "10 schedule (lateness)",
        "reason": "its periodic worker, `WorkerFunction`, sleeps its heartbeat after each "
        "run, so it has no fixed-rate slots to be late for (the scheduler in "
        "`fluid.scheduler` needs Redis); runs per second and idle CPU are compared instead.",
    },
]


def load_harness() -> ModuleType:
    """``bench/_harness.py``, loaded by file path (see the module docstring)."""
    path = Path(__file__).resolve().parent.parent / "_harness.py"
    spec = importlib.util.spec_from_file_location("bench_harness", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


H = load_harness()
Plan = dict[str, Any]


class Figure(NamedTuple):
    """One figure, as ``bench/others/_figures.py``'s ``Figure``."""

    key: str
    value: float
    unit: str
    how: str


# -------------------------------------------------------------------- queue


async def queue_run(count: int, batch: int) -> float:
    """Seconds for a ``QueueConsumerWorker`` to handle ``count`` messages."""
    counter = H.Countdown(count)
    consumer: QueueConsumerWorker[int] = QueueConsumerWorker(
        counter.handle, name="bench_queue", stopping_grace_period=GRACE
    )
    await consumer.startup()
    try:
        await H.settle()
        start = time.perf_counter()
        await H.produce(consumer.send, count, batch)
        await H.wait_for(counter.done, "aio-fluid queue consumer")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def queue(options: Any, plan: Plan) -> list[Figure]:
    """Messages per second through one ``QueueConsumerWorker``."""
    count = plan["queue"]
    (runs,) = await H.interleave_many([lambda: queue_run(count, plan["batch"])], options.times(5))
    how = "`QueueConsumerWorker(handler)` fed with `consumer.send(m)`"
    return [Figure("queue", count / min(runs), "msg/s", how)]


# ------------------------------------------------------------------- fanout


class BenchDispatcher(AsyncDispatcher[int]):
    """Every message is of the one event type the handlers are registered for."""

    def event_type(self, message: int) -> str:
        return "bench"


def make_handler(counter: Any) -> Callable[[int], Coroutine[Any, Any, None]]:
    """One trivial handler: count the call."""

    async def handler(message: int) -> None:
        counter.tick()

    return handler


async def fanout_run(count: int, handlers: int, batch: int) -> float:
    """Seconds for an ``AsyncConsumer`` to dispatch ``count`` messages to every handler."""
    counter = H.Countdown(count * handlers)
    dispatcher = BenchDispatcher()
    for index in range(handlers):
        dispatcher.register_handler(f"bench.h{index}", make_handler(counter))
    consumer = AsyncConsumer(dispatcher, name="bench_fanout", stopping_grace_period=GRACE)
    await consumer.startup()
    try:
        await H.settle()
        start = time.perf_counter()
        await H.produce(consumer.send, count, batch)
        await H.wait_for(counter.done, "aio-fluid fan-out")
        return time.perf_counter() - start
    finally:
        await consumer.shutdown()


async def fanout(options: Any, plan: Plan) -> list[Figure]:
    """Messages per second, each dispatched to 10 handlers."""
    count, handlers = plan["fanout"], plan["handlers"]
    (runs,) = await H.interleave_many(
        [lambda: fanout_run(count, handlers, plan["fanout_batch"])], options.times(5)
    )
    how = (
        f"`AsyncConsumer` with an `AsyncDispatcher` of {handlers} handlers "
        "(which it runs with `asyncio.gather`)"
    )
    return [Figure("fanout", count / min(runs), "msg/s", how)]


# --------------------------------------------------------------------- tree


class Phases(NamedTuple):
    """Seconds spent building, starting (until all run) and stopping."""

    build: float
    start: float
    stop: float


def build_tree(count: int, function: Callable[[], Coroutine[Any, Any, None]]) -> Workers:
    """A tree of ``count`` idle ``WorkerFunction(function, heartbeat=60)`` children."""
    return Workers(
        *[
            WorkerFunction(function, heartbeat=60, name=f"w{i}", stopping_grace_period=GRACE)
            for i in range(count)
        ],
        name="bench_tree",
        stopping_grace_period=TREE_GRACE,
    )


async def stop_tree(tree: Workers) -> None:
    """``shutdown()``, then check that every child stopped."""
    await H.wait_for(tree.shutdown(), "aio-fluid tree stop")
    if not all(worker.is_stopped() for worker in tree.workers()):
        raise RuntimeError("aio-fluid tree returned from shutdown() with workers not stopped")


async def tree_cycle(count: int) -> Phases:
    """Build, start and stop a tree, timing each phase."""
    started = H.Countdown(count)
    t0 = time.perf_counter()
    tree = build_tree(count, started.mark)
    t1 = time.perf_counter()
    await tree.startup()
    await H.wait_for(started.done, "aio-fluid tree start")
    t2 = time.perf_counter()
    await stop_tree(tree)
    t3 = time.perf_counter()
    return Phases(t1 - t0, t2 - t1, t3 - t2)


async def tree_memory(count: int) -> float:
    """Traced bytes per worker of a running tree."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        started = H.Countdown(count)
        tree = build_tree(count, started.mark)
        await tree.startup()
        await H.wait_for(started.done, "aio-fluid tree start")
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    await stop_tree(tree)
    return used / count


async def tree(options: Any, plan: Plan) -> list[Figure]:
    """Build, start, stop and memory of a tree of idle workers."""
    count = plan["tree"]
    (cycles,) = await H.interleave_many([lambda: tree_cycle(count)], options.times(5))
    best = Phases(*(min(phase) for phase in zip(*cycles, strict=True)))
    used = await tree_memory(count)
    what = f"`Workers` of {count:,} `WorkerFunction(f, heartbeat=60)`"
    return [
        Figure(
            "tree.build",
            best.build * 1e3,
            "ms",
            f"{what}: construct them (`add_workers` looks each new worker up in the list "
            "of those already added, so building grows with the square of the count)",
        ),
        Figure("tree.start", best.start * 1e3, "ms", f"{what}: `startup()` until all ran"),
        Figure(
            "tree.stop",
            best.stop * 1e3,
            "ms",
            f"{what}: `shutdown()`; the idle children are cancelled when their "
            f"{GRACE:g} s grace period ends",
        ),
        Figure("tree.memory", used, "bytes", what),
    ]


# --------------------------------------------------------------------- stop


async def noop() -> None:
    """The idle worker's function."""


async def ignore(message: int) -> None:
    """The idle consumer's handler (never called)."""


async def stop_time(worker: Worker) -> float:
    """Start ``worker``, let it go idle, and time ``shutdown()``."""
    await worker.startup()
    await H.settle()
    start = time.perf_counter()
    await worker.shutdown()
    elapsed = time.perf_counter() - start
    if not worker.is_stopped():
        raise RuntimeError(f"{worker!r} returned from shutdown() while not stopped")
    return elapsed


async def stop(options: Any, plan: Plan) -> list[Figure]:
    """Median stop time of an idle ``WorkerFunction`` and an idle ``QueueConsumerWorker``."""
    runs = min(plan["stop_runs"], STOP_RUNS)
    function_s, queue_s = await H.interleave_many(
        [
            lambda: stop_time(WorkerFunction(noop, heartbeat=60, stopping_grace_period=GRACE)),
            lambda: stop_time(QueueConsumerWorker(ignore, stopping_grace_period=GRACE)),
        ],
        runs,
    )
    return [
        Figure(
            "stop.function",
            statistics.median(function_s) * 1e6,
            "us",
            f"`WorkerFunction(noop, heartbeat=60)`, median of {runs}: it is cancelled "
            f"at the end of its {GRACE:g} s grace period",
        ),
        Figure(
            "stop.queue",
            statistics.median(queue_s) * 1e6,
            "us",
            f"idle `QueueConsumerWorker`, median of {runs}: it sees the stop at its "
            "next 0.5 s poll of the queue",
        ),
    ]


# -------------------------------------------------------------------- grace


class Deaf(Worker):
    """A worker that ignores stop requests: only a cancel ends it."""

    async def run(self) -> None:
        await asyncio.Event().wait()


async def grace_run(grace: float) -> tuple[float, float]:
    """CPU and wall seconds of ``shutdown()`` of a ``Deaf`` worker."""
    worker = Deaf(stopping_grace_period=grace)
    await worker.startup()
    await H.settle()
    cpu, wall = time.process_time(), time.perf_counter()
    await worker.shutdown()
    return time.process_time() - cpu, time.perf_counter() - wall


async def grace(options: Any, plan: Plan) -> list[Figure]:
    """CPU per wall second while waiting out a grace period, and that stop's wall time."""
    (runs,) = await H.interleave_many([lambda: grace_run(plan["grace"])], options.times(3))
    how = (
        f"`shutdown()` of a worker that ignores stop, grace period {plan['grace']:g} s "
        "(`shutdown()` waits in a loop of `await asyncio.sleep(0)`)"
    )
    return [
        Figure("grace.cpu", statistics.median(c / w * 1e3 for c, w in runs), "ms CPU/s", how),
        Figure("grace.wall", statistics.median(w for _, w in runs), "s", how),
    ]


# ----------------------------------------------------------------- schedules


async def periodic_runs(count: int, interval: float, seconds: float) -> int:
    """Runs made by ``count`` ``WorkerFunction(probe, heartbeat=interval)`` in ``seconds``."""
    runs = 0

    async def probe() -> None:
        nonlocal runs
        runs += 1

    workers = Workers(
        *[
            WorkerFunction(probe, heartbeat=interval, name=f"w{i}", stopping_grace_period=GRACE)
            for i in range(count)
        ],
        name="schedules",
        stopping_grace_period=TREE_GRACE,
    )
    await workers.startup()
    await asyncio.sleep(seconds)
    measured = runs
    await stop_tree(workers)
    return measured


async def periodic_idle(count: int, seconds: float) -> float:
    """CPU seconds per wall second of a tree of ``count`` idle workers of heartbeat 60 s."""
    started = H.Countdown(count)
    workers = build_tree(count, started.mark)
    await workers.startup()
    await H.wait_for(started.done, "aio-fluid idle tree start")
    await H.settle(5)
    usage: float = await H.idle_cpu(seconds)
    await stop_tree(workers)
    return usage


async def schedule(options: Any, plan: Plan) -> list[Figure]:
    """Runs per second of 1,000 10 ms workers, idle CPU of 10,000 60 s workers."""
    count, seconds, interval = plan["schedules"], plan["seconds"], plan["interval"]
    repeats = options.times(3)
    (runs,) = await H.interleave_many([lambda: periodic_runs(count, interval, seconds)], repeats)
    idle_count = plan["idle_schedules"]
    (cpu,) = await H.interleave_many(
        [lambda: periodic_idle(idle_count, plan["idle_seconds"])], options.times(3)
    )
    return [
        Figure(
            "schedule.runs",
            sum(runs) / (repeats * seconds),
            "runs/s",
            f"`Workers` of {count:,} `WorkerFunction(f, heartbeat={interval:g})` "
            "(it sleeps the heartbeat after each run)",
        ),
        Figure(
            "schedule.idle_cpu",
            statistics.median(cpu) * 1e3,
            "ms CPU/s",
            f"`Workers` of {idle_count:,} `WorkerFunction(f, heartbeat=60)` "
            "(the tree checks its children every 0.1 s)",
        ),
    ]


# ------------------------------------------------------------------ running

Case = Callable[[Any, Plan], Coroutine[Any, Any, list[Figure]]]
CASES: list[Case] = [queue, fanout, tree, stop, grace, schedule]


def main() -> int:
    """Run every case in a fresh loop and print the results as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plan", required=True, help="the suite's sizes, as JSON")
    args = parser.parse_args()
    plan: Plan = json.loads(args.plan)
    options = H.Options(args.loop, args.quick, args.repeats)
    project_fluid = Path(__file__).resolve().parents[2] / "fluid"
    if Path(fluid.__file__).resolve().parent == project_fluid:
        raise SystemExit(f"this project's fluid was imported ({fluid.__file__}), not aio-fluid")
    figures: list[Figure] = []
    with H.quiet_fluid_logs(logging.CRITICAL):
        for case in CASES:
            print(f"  aio-fluid {case.__name__} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            figures.extend(H.run_case(lambda o, case=case: case(o, plan), options))
            print(f"    {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    result = {
        "name": NAME,
        "version": importlib.metadata.version("aio-fluid"),
        "module": fluid.__file__,
        "python": sys.version.split()[0],
        "figures": [figure._asdict() for figure in figures],
        "not_compared": NOT_COMPARED,
    }
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
