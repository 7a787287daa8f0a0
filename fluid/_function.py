"""WorkerFunction: await a coroutine function in a loop, with a heartbeat between runs."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from inspect import CO_COROUTINE
from types import FunctionType

from ._validate import async_callable, check_seconds, function_name
from ._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = ["WorkerFunction"]

logger = logging.getLogger("fluid")

# With no heartbeat, a function that never waits makes the loop call it
# again at once, for ever: one core at 100% and nothing else to see. Every
# _BUSY_CALLS calls the worker looks at the clock: a window of calls that
# took less than _BUSY_SECONDS is fast (under 60 us a call, yield included),
# and when fast windows follow one another for _BUSY_FOR seconds, it warns,
# once per run. A function that polls something (a socket, a queue that is
# often empty) is slower, since it waits; one draining a backlog is fast
# only until the backlog is gone.
_BUSY_CALLS = 4096
_BUSY_SECONDS = 0.25
_BUSY_FOR = 2.0
_INF = math.inf


class WorkerFunction(Worker):
    """A worker that awaits ``run_function`` in a loop.

    After each call it sleeps ``heartbeat`` seconds; a stop request wakes that
    sleep at once, so the worker stops within milliseconds, not after the
    heartbeat. With the default ``heartbeat=0`` it only yields to the loop
    between two calls: right for a function that waits for its work (a
    queue, a socket), a busy loop for one that never waits. Such a worker
    logs a warning once per run, when its calls have come faster than one
    every 60 microseconds for 2 seconds. An exception from ``run_function``
    ends the worker with that error (``shutdown()`` raises it; a parent tree
    stops).

    If ``run_function`` returns ``False`` (that exact value, not just a falsy
    one) the worker stops by itself and ends ``STOPPED`` without an error, as
    in atasker: a job that knows it is done says so. ``None`` and every other
    value go on.

    Args:
        run_function: the coroutine function (or any callable returning an
            awaitable, such as a lambda wrapping a coroutine) to await on
            each iteration;
            returning ``False`` stops the worker.
        heartbeat: seconds to sleep between two calls (0: just yield).
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.

    Raises:
        TypeError: ``run_function`` surely returns no awaitable (not
            callable, a built-in, a generator function, or a plain function
            annotated ``-> None``). A plain function that returns something
            else than an awaitable fails the worker at its first call, with
            a ``TypeError`` naming it.
        ValueError: ``heartbeat`` or the grace period is negative.

    Example:
        ```python
        async def poll() -> None:
            print("polling")

        async with fluid.WorkerFunction(poll, heartbeat=5):
            await asyncio.sleep(12)  # polls three times

        pages = iter(range(3))

        async def fetch_next() -> bool:
            page = next(pages, None)
            print("fetched", page)
            return page is not None  # False once there is nothing left: stop

        fetcher = fluid.WorkerFunction(fetch_next)
        await fetcher.startup()
        await fetcher.wait_for_shutdown()  # returns after the fourth call
        ```
    """

    __slots__ = ("_heartbeat", "_run_function")

    def __init__(
        self,
        run_function: Callable[[], Awaitable[bool | None]],
        *,
        heartbeat: float = 0,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        # The common case is checked here, without a call: an ``async def``
        # and a float in range (a tree builds ten thousand of these); the
        # checks of _validate give anything else its verdict and its message.
        if type(run_function) is FunctionType and run_function.__code__.co_flags & CO_COROUTINE:
            self._run_function: Callable[[], Awaitable[bool | None]] = run_function
        else:
            self._run_function = async_callable("run_function", run_function)
        if type(heartbeat) is float and 0.0 <= heartbeat < _INF:
            self._heartbeat = heartbeat
        else:
            self._heartbeat = check_seconds("heartbeat", heartbeat)
        super().__init__(name, stopping_grace_period)  # a Worker mixin may follow in the MRO

    def default_name(self) -> str:
        return function_name(self._run_function) or super().default_name()

    @property
    def heartbeat(self) -> float:
        """Seconds slept between two calls of the function."""
        return self._heartbeat

    async def run(self) -> None:
        """Await the function, then sleep the heartbeat, until stopped or it returns False."""
        run_function = self._run_function
        heartbeat = self._heartbeat
        if not heartbeat:
            await self._run_without_heartbeat()
            return
        # every idle worker of a tree waits in this frame: it holds no more
        # locals than this loop needs (the one above has its own frame)
        while self.is_running():
            if await run_function() is False:
                return
            await self.sleep(heartbeat)

    async def _run_without_heartbeat(self) -> None:
        """The loop with no heartbeat, with a look at its pace every _BUSY_CALLS calls."""
        run_function = self._run_function
        clock = asyncio.get_running_loop().time
        calls = 0
        since = fast_since = clock()
        while self.is_running():
            if await run_function() is False:
                return
            await self.sleep(0)
            calls += 1
            if calls == _BUSY_CALLS:
                now = clock()
                if now - since >= _BUSY_SECONDS:
                    fast_since = now  # a slow window: the pace is fine
                elif now - fast_since >= _BUSY_FOR:
                    logger.warning(
                        "worker %r has not waited for %.1f s: its function, called "
                        "with heartbeat=0, returns at once (%d calls a second), so "
                        "it keeps a core busy; if it polls, give it a heartbeat",
                        self.worker_name,
                        now - fast_since,
                        calls / (now - since),
                    )
                    break  # once per run: the plain loop goes on
                calls = 0
                since = now
        while self.is_running():
            if await run_function() is False:
                return
            await self.sleep(0)
