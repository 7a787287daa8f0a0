"""WorkerFunction: await a coroutine function in a loop, with a heartbeat between runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._validate import check_async_callable, check_seconds, default_name
from ._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = ["WorkerFunction"]


class WorkerFunction(Worker):
    """A worker that awaits ``run_function`` in a loop.

    After each call it sleeps ``heartbeat`` seconds; a stop request wakes that
    sleep at once, so the worker stops within milliseconds, not after the
    heartbeat. An exception from ``run_function`` ends the worker with that
    error (``shutdown()`` raises it; a parent tree stops).

    Args:
        run_function: the coroutine function to await on each iteration.
        heartbeat: seconds to sleep between two calls (0: just yield).
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.

    Raises:
        TypeError: ``run_function`` is not a coroutine function.
        ValueError: ``heartbeat`` or the grace period is negative.

    Example:
        ```python
        async def poll() -> None:
            print("polling")

        async with fluid.WorkerFunction(poll, heartbeat=5):
            await asyncio.sleep(12)  # polls three times
        ```
    """

    __slots__ = ("_heartbeat", "_run_function")

    def __init__(
        self,
        run_function: Callable[[], Awaitable[None]],
        *,
        heartbeat: float = 0,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        self._run_function = check_async_callable("run_function", run_function)
        self._heartbeat = check_seconds("heartbeat", heartbeat)
        fn_name = getattr(run_function, "__name__", "")
        derived = not name and fn_name.isidentifier()
        super().__init__(default_name(fn_name) if derived else name, stopping_grace_period)
        self._auto_name = not name

    @property
    def heartbeat(self) -> float:
        """Seconds slept between two calls of the function."""
        return self._heartbeat

    async def run(self) -> None:
        """Await the function, then sleep the heartbeat, until stopped."""
        run_function = self._run_function
        heartbeat = self._heartbeat
        while self.is_running():
            await run_function()
            await self.sleep(heartbeat)
