"""Helpers for the test suite: wait on a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import fluid


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the loop until ``predicate()`` is true; fail after ``timeout`` seconds.

    The default is generous: the failure it guards is a hang, and a busy
    machine may take seconds for what an idle one does in milliseconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.001)


@contextmanager
def tiny_switch_interval() -> Iterator[None]:
    """Make threads switch as often as the interpreter allows, so races show."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def live_tasks() -> list[asyncio.Task[object]]:
    """The loop's tasks not done, but the caller's own: what a stopped worker must not leave."""
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


class Recorder:
    """An async message handler that records what it got and can be awaited."""

    def __init__(self) -> None:
        self.messages: list[object] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def __call__(self, message: object) -> None:
        self.messages.append(message)
        for count, waiter in self._waiters:
            if len(self.messages) >= count and not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` messages arrived."""
        if len(self.messages) >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        async with asyncio.timeout(timeout):
            await waiter


class Idle(fluid.Worker):
    """A worker that sleeps until asked to stop."""

    async def run(self) -> None:
        while self.is_running():
            await self.sleep(60)


class Deaf(fluid.Worker):
    """A worker that ignores stop requests: only a cancel ends it."""

    def __init__(self, name: str = "", stopping_grace_period: float = 0.05) -> None:
        super().__init__(name, stopping_grace_period)
        self.cancelled = False

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
