"""Case 8: time from a child's crash to the child running again.

fluid: a ``Workers`` tree with ``strategy="one_for_one"`` and
``Backoff(initial=0)``; the child's ``run`` awaits a future that the bench
fails. The clock stops when the tree reports the child ``restarted`` (an
observer). Median over many crashes.

asyncio: the hand-written supervisor: a task running the child coroutine,
with a done callback that creates a new task when it ended with an error. The
clock stops when the new task runs its first step.

fluid logs every crash with its traceback, which costs more than the restart
itself (about 100 us to format); the log is silenced here so that the row
times the supervision, as the hand-written side has no log at all.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

import fluid

from ._harness import Options, Row, at_most, quiet_fluid_logs, wait_for

NAME = "supervision"
CASE = "8 restart"


class Fragile(fluid.Worker):
    """Awaits a future, as the hand-written child does; failing it crashes the worker.

    A stop request resolves the future too (through an observer of the
    worker's own ``stopping`` transition), so that the tree stops it gracefully.
    """

    def __init__(self) -> None:
        super().__init__("fragile", 1.0)
        self.doom: asyncio.Future[None] | None = None
        self.armed: asyncio.Future[None] | None = None
        self.add_observer(self.on_transition)

    def on_transition(self, transition: fluid.Transition) -> None:
        if transition.kind == "stopping" and self.doom is not None and not self.doom.done():
            self.doom.set_result(None)

    async def run(self) -> None:
        self.doom = asyncio.get_running_loop().create_future()
        if self.armed is not None and not self.armed.done():
            self.armed.set_result(None)
        await self.doom


async def fluid_latencies(crashes: int) -> list[float]:
    """Seconds from each crash to the ``restarted`` transition."""
    child = Fragile()
    tree = fluid.Workers(
        child,
        strategy="one_for_one",
        max_restarts=crashes + 1,
        backoff=fluid.Backoff(initial=0, jitter=0),
    )
    restarted: list[asyncio.Future[None]] = []

    def observe(transition: fluid.Transition) -> None:
        if transition.kind == "restarted" and restarted and not restarted[-1].done():
            restarted[-1].set_result(None)

    tree.add_observer(observe)
    latencies = []
    loop = asyncio.get_running_loop()
    with quiet_fluid_logs(logging.CRITICAL):
        async with tree:
            for _ in range(crashes):
                if child.doom is None or child.doom.done():
                    child.armed = loop.create_future()
                    await wait_for(child.armed, "fluid child running")
                assert child.doom is not None
                restarted.append(loop.create_future())
                start = time.perf_counter()
                child.doom.set_exception(RuntimeError("crash"))
                await wait_for(restarted[-1], "fluid restart")
                latencies.append(time.perf_counter() - start)
    return latencies


async def asyncio_latencies(crashes: int) -> list[float]:
    """The same with a task and a done callback that starts a new one."""
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"doom": None, "running": None, "stop": False}

    async def child() -> None:
        state["doom"] = loop.create_future()
        if state["running"] is not None and not state["running"].done():
            state["running"].set_result(None)
        await state["doom"]

    def supervise(task: asyncio.Task[None]) -> None:
        if not state["stop"] and not task.cancelled() and task.exception() is not None:
            state["task"] = loop.create_task(child())
            state["task"].add_done_callback(supervise)

    state["task"] = loop.create_task(child())
    state["task"].add_done_callback(supervise)
    latencies = []
    state["running"] = loop.create_future()
    await wait_for(state["running"], "asyncio child running")
    for _ in range(crashes):
        state["running"] = loop.create_future()
        start = time.perf_counter()
        state["doom"].set_exception(RuntimeError("crash"))
        await wait_for(state["running"], "asyncio restart")
        latencies.append(time.perf_counter() - start)
    state["stop"] = True
    state["task"].cancel()
    await asyncio.wait([state["task"]])
    return latencies


async def run(options: Options) -> list[Row]:
    """Median crash-to-running latency of each side."""
    crashes = options.size(500, 50)
    fluid_times = await fluid_latencies(crashes)
    asyncio_times = await asyncio_latencies(crashes)
    return [
        Row(
            CASE,
            f"crash detected and child running again (median of {crashes})",
            "us",
            statistics.median(fluid_times) * 1e6,
            statistics.median(asyncio_times) * 1e6,
            higher_is_better=False,
            target=at_most(1_000, "fluid <= 1 ms"),
        )
    ]
