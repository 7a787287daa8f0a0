"""Case 9: sync and CPU-bound calls through threads and processes.

Rows:

* **thread adapter**: 20,000 calls (2,000 with ``--quick``) of a trivial sync
  function, from 64 caller tasks each awaiting its calls one after another.
  fluid: ``await pool.run(fn, i)`` on ``fluid.ThreadPool(4)``; asyncio:
  ``await loop.run_in_executor(executor, fn, i)`` on a
  ``ThreadPoolExecutor(4)``. Calls per second, best run. Target ``>= 1.00x``.
* **process round trip**: one caller, 1,000 calls (100) one after another of
  a trivial function, through 2 warm spawned processes. fluid:
  ``fluid.ProcessPool(2)``; asyncio: ``run_in_executor`` on a
  ``ProcessPoolExecutor(2)`` with the spawn context. Microseconds per call,
  best run. Target ``>= 1.00x``.
* **CPU-bound speed-up**: 4 calls of pure-Python arithmetic (about 0.1 s each;
  0.02 s with ``--quick``), gathered, on a warm pool of 1 process and on one of
  2 processes; the figure is time with 1 / time with 2 (2.0 is perfect on 2
  cores). fluid: ``ProcessPool``; asyncio: ``ProcessPoolExecutor``. Median
  of 3 runs. Target ``>= 0.90x`` (as good a speed-up, within noise).
* **SIGKILLed child detected** (latency): a child process is killed with
  SIGKILL; the clock runs from ``os.kill`` until the parent knows. fluid:
  until ``wait_for_shutdown()`` of a ``fluid.ProcessWorker`` raises;
  asyncio: until ``await loop.run_in_executor(executor, process.join)`` of a
  bare ``multiprocessing.Process`` returns (a thread blocked in ``waitpid``).
  Both children are killed once running. Median of 5 runs (2), in ms.
  Target fluid ``<= 100 ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import fluid

from ._harness import (
    Options,
    Row,
    at_least,
    at_most,
    interleave_many,
    interleaved,
    quiet_fluid_logs,
    wait_for,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

NAME = "executors"
CASE = "9 executors"
THREADS = 4
CALLERS = 64
PROCESSES = 2
CPU_CALLS = 4
CALLS = (20_000, 2_000)
"""Thread adapter calls per run: full, ``--quick``."""
ROUND_TRIPS = (1_000, 100)
"""Process round trips per run: full, ``--quick``."""
BURN = (2_000_000, 400_000)
"""Loop iterations of one CPU-bound call: full, ``--quick``."""

Call = Callable[..., Awaitable[Any]]
"""``await call(fn, *args)``: run ``fn(*args)`` somewhere else and return its result."""


def trivial(x: int) -> int:
    """The small sync call."""
    return x + 1


def burn(n: int) -> int:
    """Pure-Python arithmetic: CPU-bound, holds the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def nap(seconds: float) -> int:
    """Sleep in the pool's process (to make the pool start all its processes)."""
    time.sleep(seconds)
    return os.getpid()


def sleep_forever(worker: fluid.ProcessWorker) -> None:
    """A ProcessWorker target that waits until it is stopped or killed."""
    while worker.is_running():
        worker.wait_for_stop(3600)


def sleep_forever_bare(conn: Connection) -> None:
    """The same for a bare ``multiprocessing.Process``, saying when it is ready."""
    conn.send_bytes(b"ready")
    time.sleep(3600)


def executor_call(executor: Executor) -> Call:
    """``await call(fn, *args)`` through ``loop.run_in_executor``."""
    loop = asyncio.get_running_loop()

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return await loop.run_in_executor(executor, fn, *args)

    return call


# ------------------------------------------------------------------ threads


def calling_trivial(call: Call) -> Callable[[int], Awaitable[object]]:
    """``call_trivial(i)`` that does ``call(trivial, i)``, without an extra frame."""
    return functools.partial(call, trivial)


async def callers(call_trivial: Callable[[int], Awaitable[object]], total: int) -> float:
    """Seconds for ``CALLERS`` tasks to make ``total`` calls of ``trivial``, each in turn.

    ``call_trivial(i)`` runs ``trivial(i)`` in a thread (see ``calling_trivial``).
    """

    async def caller(first: int) -> None:
        for i in range(first, first + total // CALLERS):
            await call_trivial(i)

    start = time.perf_counter()
    await wait_for(asyncio.gather(*(caller(c) for c in range(CALLERS))), "thread calls")
    return time.perf_counter() - start


def thread_calls(options: Options) -> int:
    """Calls per thread adapter run: a multiple of ``CALLERS``."""
    return options.size(*CALLS) // CALLERS * CALLERS


async def thread_row(options: Options) -> Row:
    total = thread_calls(options)
    executor = ThreadPoolExecutor(THREADS)
    try:
        async with fluid.ThreadPool(THREADS) as pool:
            plain = executor_call(executor)
            fluid_s, asyncio_s = await interleaved(
                lambda: callers(calling_trivial(pool.run), total),
                lambda: callers(calling_trivial(plain), total),
                options.times(5),
            )
    finally:
        executor.shutdown()
    return Row(
        CASE,
        f"thread adapter: {total:,} calls, {CALLERS} callers, {THREADS} threads",
        "calls/s",
        total / min(fluid_s),
        total / min(asyncio_s),
        higher_is_better=True,
        target=at_least(1.0),
        key="executors.threads",
    )


# ---------------------------------------------------------------- processes


async def warm(call: Call, processes: int) -> None:
    """Make the pool start all its processes (overlapping calls)."""
    await wait_for(asyncio.gather(*(call(nap, 0.2) for _ in range(processes))), "warm-up")


async def round_trips(call: Call, count: int) -> float:
    """Seconds per call for ``count`` calls made one after another."""
    start = time.perf_counter()
    for i in range(count):
        await call(trivial, i)
    return (time.perf_counter() - start) / count


async def round_trip_row(options: Options) -> Row:
    count = options.size(*ROUND_TRIPS)
    spawn = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(PROCESSES, mp_context=spawn)
    try:
        async with fluid.ProcessPool(PROCESSES) as pool:
            plain = executor_call(executor)
            await warm(pool.run, PROCESSES)
            await warm(plain, PROCESSES)
            fluid_s, asyncio_s = await interleaved(
                lambda: round_trips(pool.run, count),
                lambda: round_trips(plain, count),
                options.times(5),
            )
    finally:
        executor.shutdown()
    return Row(
        CASE,
        f"process round trip, trivial call ({count:,} in turn)",
        "us",
        min(fluid_s) * 1e6,
        min(asyncio_s) * 1e6,
        higher_is_better=False,
        target=at_least(1.0),
        key="executors.round_trip",
    )


async def cpu_time(call: Call, n: int) -> float:
    """Seconds for ``CPU_CALLS`` gathered CPU-bound calls."""
    start = time.perf_counter()
    await wait_for(asyncio.gather(*(call(burn, n) for _ in range(CPU_CALLS))), "CPU calls")
    return time.perf_counter() - start


async def speed_up_row(options: Options) -> Row:
    n = options.size(*BURN)
    spawn = multiprocessing.get_context("spawn")
    executors = [ProcessPoolExecutor(k, mp_context=spawn) for k in (1, PROCESSES)]
    try:
        async with fluid.ProcessPool(1) as one, fluid.ProcessPool(PROCESSES) as two:
            plain_one, plain_two = (executor_call(e) for e in executors)
            for call, k in ((one.run, 1), (two.run, PROCESSES), (plain_one, 1), (plain_two, 2)):
                await warm(call, k)
            fluid_1, fluid_2, plain_1, plain_2 = await interleave_many(
                [
                    lambda: cpu_time(one.run, n),
                    lambda: cpu_time(two.run, n),
                    lambda: cpu_time(plain_one, n),
                    lambda: cpu_time(plain_two, n),
                ],
                options.times(3),
            )
    finally:
        for executor in executors:
            executor.shutdown()
    median = statistics.median
    return Row(
        CASE,
        f"CPU-bound speed-up, {CPU_CALLS} calls, 2 processes vs 1",
        "x",
        median(fluid_1) / median(fluid_2),
        median(plain_1) / median(plain_2),
        higher_is_better=True,
        target=at_least(0.9, ">= 0.90x"),
        key="executors.speed_up",
    )


# ------------------------------------------------------------- crash detection


async def kill_fluid() -> float:
    """Seconds from SIGKILL to ``wait_for_shutdown()`` of a ProcessWorker raising."""
    worker = fluid.ProcessWorker(sleep_forever, name="bench_kill")
    await worker.startup()
    assert worker.pid is not None
    start = time.perf_counter()
    os.kill(worker.pid, signal.SIGKILL)
    with contextlib.suppress(fluid.ProcessWorkerError):
        await wait_for(worker.wait_for_shutdown(), "killed ProcessWorker")
    return time.perf_counter() - start


async def kill_plain(executor: Executor) -> float:
    """Seconds from SIGKILL to ``run_in_executor(process.join)`` returning.

    The child is killed once it is running, as fluid's is (``startup()``
    returns then): a child killed while still starting dies faster.
    """
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    process = spawn.Process(target=sleep_forever_bare, args=(theirs,))
    process.start()
    theirs.close()
    loop = asyncio.get_running_loop()
    await wait_for(loop.run_in_executor(executor, ours.recv_bytes), "child ready")
    ours.close()
    joined = loop.run_in_executor(executor, process.join)
    assert process.pid is not None
    start = time.perf_counter()
    os.kill(process.pid, signal.SIGKILL)
    await wait_for(joined, "killed process joined")
    elapsed = time.perf_counter() - start
    process.close()
    return elapsed


async def kill_row(options: Options) -> Row:
    runs = options.size(5, 2)
    executor = ThreadPoolExecutor(1)  # one thread: waits for readiness, then joins
    try:
        with quiet_fluid_logs(logging.CRITICAL):
            fluid_s, asyncio_s = await interleaved(kill_fluid, lambda: kill_plain(executor), runs)
    finally:
        executor.shutdown()
    return Row(
        CASE,
        f"SIGKILLed child detected (median of {runs})",
        "ms",
        statistics.median(fluid_s) * 1e3,
        statistics.median(asyncio_s) * 1e3,
        higher_is_better=False,
        target=at_most(100.0, "fluid <= 100 ms"),
    )


async def run(options: Options) -> list[Row]:
    """The four rows described in the module docstring."""
    return [
        await thread_row(options),
        await round_trip_row(options),
        await speed_up_row(options),
        await kill_row(options),
    ]
