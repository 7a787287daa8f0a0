"""Shared helpers: options, repeated timing, result rows, the table and the JSON file.

Every case compares fluid with a hand-written asyncio version doing the same
work in the same process. The helpers here make the two sides run under the
same conditions: same event loop implementation, ``gc.collect()`` before every
run, fluid and baseline runs interleaved (alternating which goes first), and a
check that no task or thread outlives a case.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import fluid

LoopName = Literal["asyncio", "uvloop"]
Run = Callable[[], Awaitable[float]]
Send = Callable[[int], object]
T = TypeVar("T")

WAIT_TIMEOUT = 120.0
"""Seconds any wait of a benchmark may take before it is reported as a hang."""


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class Options:
    """How the suite runs: event loop, size, repeats and where to write JSON."""

    loop: LoopName = "asyncio"
    quick: bool = False
    repeats: int = 5
    json_path: str | None = None

    def size(self, full: T, quick: T) -> T:
        """``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def times(self, full: int) -> int:
        """How many repeats a case with ``full`` default repeats makes.

        ``--repeats`` scales every case relative to the default of 5;
        ``--quick`` makes a single run.
        """
        if self.quick:
            return 1
        return max(1, round(full * self.repeats / 5))


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Target:
    """A pass mark: a minimum ratio, or a maximum for fluid's own figure."""

    kind: Literal["min_ratio", "max_fluid"]
    value: float
    label: str

    def met(self, ratio: float | None, fluid_value: float | None) -> bool:
        """Whether a row's ratio (or fluid figure) meets this target."""
        if self.kind == "min_ratio":
            return ratio is not None and ratio >= self.value
        return fluid_value is not None and fluid_value <= self.value


def at_least(ratio: float, label: str = "") -> Target:
    """A target on the ratio: fluid is at least ``ratio`` times as good."""
    return Target("min_ratio", ratio, label or f">= {ratio:.2f}x")


def at_most(value: float, label: str) -> Target:
    """A target on fluid's own figure: at most ``value`` (in the row's unit)."""
    return Target("max_fluid", value, label)


@dataclass(frozen=True)
class Row:
    """One line of the results table.

    ``higher_is_better`` says which way the unit goes; the ratio is always
    oriented so that > 1 means fluid is better: ``fluid / asyncio`` for a
    throughput, ``asyncio / fluid`` for a time, a memory or a CPU figure.
    """

    case: str
    measure: str
    unit: str
    fluid: float | None
    asyncio: float | None
    higher_is_better: bool
    target: Target | None = None
    key: str = ""
    """A stable name for the row (e.g. ``"tree.start"``), for rows that the
    other libraries (``python -m bench.others``) are compared on; empty otherwise."""

    @property
    def ratio(self) -> float | None:
        """fluid against asyncio, > 1 when fluid is better."""
        if self.fluid is None or self.asyncio is None or min(self.fluid, self.asyncio) <= 0:
            return None
        if self.higher_is_better:
            return self.fluid / self.asyncio
        return self.asyncio / self.fluid

    @property
    def status(self) -> str:
        """``ok``, ``MISS``, or ``info`` for a row without a target."""
        if self.target is None:
            return "info"
        return "ok" if self.target.met(self.ratio, self.fluid) else "MISS"

    def as_dict(self) -> dict[str, Any]:
        """The row as plain data for the JSON file."""
        return {
            "key": self.key,
            "case": self.case,
            "measure": self.measure,
            "unit": self.unit,
            "fluid": self.fluid,
            "asyncio": self.asyncio,
            "higher_is_better": self.higher_is_better,
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.label,
            "status": self.status,
        }


# ------------------------------------------------------------------ timing


async def interleaved(
    fluid_run: Run, asyncio_run: Run, repeats: int
) -> tuple[list[float], list[float]]:
    """Run both sides ``repeats`` times, alternating which goes first.

    ``gc.collect()`` runs before every run. Returns the figures of each side.
    """
    fluid_figures, asyncio_figures = await interleave_many([fluid_run, asyncio_run], repeats)
    return fluid_figures, asyncio_figures


async def interleave_many(
    runs: Sequence[Callable[[], Awaitable[T]]], repeats: int
) -> tuple[list[T], ...]:
    """Run each of ``runs`` ``repeats`` times, rotating the order every repeat.

    ``gc.collect()`` runs before every run. Returns the results of each run.
    """
    results: list[list[T]] = [[] for _ in runs]
    for repeat in range(repeats):
        shift = repeat % len(runs)
        for index in [*range(shift, len(runs)), *range(shift)]:
            gc.collect()
            results[index].append(await runs[index]())
    return tuple(results)


async def settle(turns: int = 3) -> None:
    """Give the loop a few turns so that freshly created tasks reach their first wait."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def wait_for(awaitable: Awaitable[object], what: str) -> None:
    """Await ``awaitable``, failing loudly instead of hanging after ``WAIT_TIMEOUT``."""
    try:
        async with asyncio.timeout(WAIT_TIMEOUT):
            await awaitable
    except TimeoutError:
        raise RuntimeError(f"benchmark hung: {what} not done after {WAIT_TIMEOUT}s") from None


class Countdown:
    """Counts calls and resolves ``done`` when the expected number is reached.

    The same instance type backs the handlers of both sides of a case, so the
    work per message is identical.
    """

    __slots__ = ("count", "done", "target")

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def tick(self) -> None:
        """Count one call."""
        self.count += 1
        if self.count == self.target:
            self.done.set_result(None)

    async def handle(self, message: object) -> None:
        """A trivial async message handler: count the message."""
        self.tick()

    async def mark(self) -> None:
        """A trivial async function without arguments: count the call."""
        self.tick()


async def produce(send: Send, count: int, batch: int) -> None:
    """Send ``count`` messages from the loop, ``batch`` at a time, yielding in between."""
    for first in range(0, count, batch):
        for message in range(first, min(first + batch, count)):
            send(message)
        await asyncio.sleep(0)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the hand-written side's tasks and wait for them to end.

    A task that ended with an error other than its cancellation raises it here.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def heartbeat_loop(fn: Callable[[], Awaitable[object]], heartbeat: float) -> None:
    """The hand-written idle worker: call ``fn``, sleep ``heartbeat``, forever; cancel to stop.

    The simplest correct code for the work of ``fluid.WorkerFunction(fn,
    heartbeat=heartbeat)``: no event and no timeout, ``task.cancel()`` stops it
    in its sleep.
    """
    while True:
        await fn()
        await asyncio.sleep(heartbeat)


async def idle_cpu(seconds: float) -> float:
    """CPU seconds used per second of wall time while this task sleeps ``seconds``.

    ``time.process_time()``: the whole process, so whatever else runs on the
    loop (or in its threads) meanwhile is counted.
    """
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def traced_bytes(start: Callable[[], Awaitable[T]]) -> tuple[int, T]:
    """Bytes that ``await start()`` leaves allocated (tracemalloc), and what it returned.

    Memory cases start N workers with it, then stop them and divide by N.
    """
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        running = await start()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, running
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def quiet_fluid_logs(level: int = logging.ERROR) -> Iterator[None]:
    """Hide fluid's expected logs below ``level`` (e.g. a forced stop) while a case runs.

    ``logging.CRITICAL`` silences crash reports too, for cases that crash on purpose.
    """
    logger = logging.getLogger("fluid")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


# ------------------------------------------------------------ running cases


def loop_factory(name: LoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor for ``--loop``."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_case(case: Callable[[Options], Coroutine[Any, Any, T]], options: Options) -> T:
    """Run one case in a fresh event loop; fail if it leaves a task or a thread."""
    threads = set(threading.enumerate())
    with asyncio.Runner(loop_factory=loop_factory(options.loop)) as runner:
        rows = runner.run(_no_leftover_tasks(case(options)))
    _check_threads(threads)
    return rows


async def _no_leftover_tasks(coro: Coroutine[Any, Any, T]) -> T:
    rows = await coro
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in left:
        task.cancel()
    if left:
        raise RuntimeError(f"benchmark case left {len(left)} tasks running: {left[:3]}")
    return rows


def _check_threads(before: set[threading.Thread]) -> None:
    deadline = time.monotonic() + 2.0
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    if left:
        raise RuntimeError(f"benchmark case left threads running: {left}")


# ------------------------------------------------------------------ output


def loop_description(name: LoopName) -> str:
    """The loop's name, module and class, and uvloop's version."""
    loop = loop_factory(name)()
    text = f"{name} ({type(loop).__module__}.{type(loop).__name__})"
    loop.close()
    if name == "uvloop":
        text += f", uvloop {importlib.metadata.version('uvloop')}"
    return text


def cpu_model() -> str:
    """The processor's model name, when the system tells it (Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(options: Options) -> list[str]:
    """The lines printed above the table: interpreter, loop, machine, settings."""
    return [
        f"fluid {fluid.__version__} benchmarks",
        f"python   {platform.python_implementation()} {sys.version.split()[0]}",
        f"loop     {loop_description(options.loop)}",
        f"cpus     {os.cpu_count()} ({platform.machine()}, {platform.system()})",
        f"mode     {'quick' if options.quick else 'full'}, repeats scale {options.repeats}/5",
    ]


COLUMNS = (
    "case",
    "measure",
    "unit",
    "fluid",
    "asyncio",
    "ratio (>1: fluid better)",
    "target",
    "result",
)


def table(rows: Sequence[Row]) -> str:
    """The results as a plain-text table with aligned columns."""
    cells = [COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [_line(line, widths) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.case,
        row.measure,
        row.unit,
        number(row.fluid),
        number(row.asyncio),
        ratio_text(row.ratio),
        "-" if row.target is None else row.target.label,
        row.status,
    )


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    left = 3  # case, measure and unit are text: left-aligned; figures right-aligned
    parts = [
        cell.ljust(width) if i < left or i >= len(widths) - 2 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(parts).rstrip()


def number(value: float | None) -> str:
    """A figure with three significant digits (whole numbers from 100 on)."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:#.3g}"


def ratio_text(ratio: float | None) -> str:
    """A ratio with two decimals, or two significant digits when tiny."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def summary(rows: Sequence[Row]) -> str:
    """One line counting the targets met and missed."""
    checked = [row for row in rows if row.target is not None]
    missed = [row for row in checked if row.status == "MISS"]
    text = f"{len(checked) - len(missed)} of {len(checked)} targets met"
    if missed:
        text += "; missed: " + ", ".join(f"{r.case} {r.measure}" for r in missed)
    return text


def write_json(
    path: str, options: Options, rows: Sequence[Row], seconds: float | None = None
) -> None:
    """Write the header facts, every row and the run's duration to ``path`` as JSON."""
    data = {
        "fluid": fluid.__version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "loop": options.loop,
        "loop_description": loop_description(options.loop),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "quick": options.quick,
        "repeats": options.repeats,
        "seconds": seconds,
        "rows": [row.as_dict() for row in rows],
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
