"""TriggerWorker: run a coroutine function each time the worker is triggered.

Why it is shaped this way:

* A trigger is a flag, not a queue. A trigger that arrives while a run is in
  progress sets the flag, and the flag is cleared when the next run *starts*:
  any number of triggers during a run coalesce into exactly one more run, and
  none is lost (the run that starts after a trigger sees everything that
  happened before it). Runs never overlap.
* Waiting is one future, resolved by ``trigger()`` or by a stop request: an
  idle trigger worker costs nothing, wakes in the same loop turn, and stops at
  once.
* The flag and the waiting are ``TimedWorker``'s (``_timed.py``), shared
  with the schedules: a trigger is a poke, safe from any thread, and a burst
  of triggers from threads costs one ``call_soon_threadsafe``.
* A run cancelled by a forced stop sets the flag again, as a queue puts a
  cancelled message back: a trigger still pending when the worker stops is
  kept (``status()`` shows it) and the next start runs it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from ._policy import OnError, check_on_error, handle_error
from ._state import WorkerState
from ._status import TriggerStatus, WorkerStatus
from ._timed import TimedWorker
from ._validate import async_callable, function_name
from ._worker import STOPPING_GRACE_PERIOD

__all__ = ["EventWorker", "TriggerWorker"]

_RUNNING = WorkerState.RUNNING


class TriggerWorker(TimedWorker):
    """A worker that awaits ``fn`` once per trigger, never two runs at once.

    [`trigger`][fluid.TriggerWorker.trigger] (from the loop) or
    [`trigger_threadsafe`][fluid.TriggerWorker.trigger_threadsafe] (from any
    thread) asks for a run. Triggers that arrive while a run is in progress
    coalesce into exactly one more run: a trigger is never lost, and runs never
    overlap. Waiting for a trigger costs nothing and a stop request wakes the
    worker at once.

    A trigger sent before ``startup()``, or while the worker is stopped, is kept
    and runs once the worker starts. A stop request lets a run in progress
    finish (within the grace period) but starts no new one: a trigger still
    pending then is kept for the next start, as is the trigger of a run
    cancelled by a forced stop. If ``fn`` returns ``False`` the worker stops
    (atasker's convention); any other value goes on waiting.

    ``EventWorker`` is an alias kept for earlier code.

    Args:
        fn: the coroutine function to await on each run, without arguments.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop (a run in
            progress may finish within it).
        on_error: what a failing run leads to: ``"log"`` it and wait for the
            next trigger (default), ``"stop"`` the worker with the error, or a
            function ``(run, error)`` (sync or async), where ``run`` is the
            run's number, 1 for the first run since the worker was created.

    Raises:
        TypeError: ``fn`` surely returns no awaitable (see
            [`WorkerFunction`][fluid.WorkerFunction]).
        ValueError: ``on_error`` is not one of the accepted values.

    Example:
        ```python
        async def refresh_cache() -> None:
            print("refreshing")

        worker = fluid.TriggerWorker(refresh_cache)
        async with worker:
            worker.trigger()  # asks for a run
            worker.trigger()  # the run has not started yet: still one run
            await asyncio.sleep(1)
        ```
    """

    __slots__ = (
        "_failures",
        "_fn",
        "_in_progress",
        "_on_error",
        "_runs",
    )

    def __init__(
        self,
        fn: Callable[[], Awaitable[bool | None]],
        *,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        on_error: OnError[int] = "log",
    ) -> None:
        self._fn: Callable[[], Awaitable[bool | None]] = async_callable("fn", fn)
        check_on_error(on_error)
        super().__init__(name, stopping_grace_period)
        self._on_error = on_error
        self._in_progress = False
        self._runs = self._failures = 0

    @property
    def pending(self) -> bool:
        """True while a trigger waits for a run to start."""
        return self._poked

    def trigger(self) -> None:
        """Ask for a run; call it from the event loop's thread.

        Returns at once. If a run is in progress, one more run follows it,
        however many times ``trigger`` is called meanwhile.

        Raises:
            RuntimeError: called from another thread than the worker's loop;
                use [`trigger_threadsafe`][fluid.TriggerWorker.trigger_threadsafe].

        Example:
            ```python
            worker.trigger()
            ```
        """
        if self._thread_id and threading.get_ident() != self._thread_id:
            raise RuntimeError(
                f"trigger() of worker {self._name!r} was called from another thread "
                "than its event loop's: use trigger_threadsafe()"
            )
        self._poke()

    def trigger_threadsafe(self) -> None:
        """Ask for a run from any thread; returns at once and never blocks.

        From the loop's own thread it is [`trigger`][fluid.TriggerWorker.trigger].

        Example:
            ```python
            def on_file_changed(path: str) -> None:  # called by a watcher thread
                worker.trigger_threadsafe()
            ```
        """
        self._poke()

    async def run(self) -> None:
        """Await ``fn`` once per trigger until stopped or ``fn`` returns False."""
        self._wake_pending = False  # a wake-up lost with a closed loop must not block this run
        while self._state is _RUNNING:
            if not self._poked:
                await self._wait_for_trigger()
            elif await self._run_once() is False:
                return

    async def status(self) -> WorkerStatus:
        """The worker's status with an ``event`` entry of figures.

        Example:
            ```python
            status = await worker.status()
            assert status["event"]["runs"] >= 1
            ```
        """
        status = await super().status()
        event: TriggerStatus = {
            "runs": self._runs,
            "failures": self._failures,
            "pending": self._poked,
            "in_progress": self._in_progress,
        }
        status["event"] = event
        return status

    def default_name(self) -> str:
        return function_name(self._fn) or super().default_name()

    # ------------------------------------------------------------- internals

    async def _run_once(self) -> bool | None:
        # Cleared as the run starts: a trigger from now on asks for another run.
        self._poked = False
        self._in_progress = True
        try:
            result = await self._fn()
        except asyncio.CancelledError:
            self._poked = True  # the run did not finish: keep its trigger
            raise
        except Exception as exc:
            self._runs += 1
            self._failures += 1
            error = exc
        else:
            self._runs += 1
            return result
        finally:
            self._in_progress = False
        await handle_error(self._name, self._on_error, self._runs, error)
        return None

    async def _wait_for_trigger(self) -> None:
        waiter, handle = self._sleep_until(asyncio.get_running_loop(), None)
        try:
            await waiter
        finally:
            self._woke(handle)


# Kept for earlier code: the name it had before "event" kept one meaning.
EventWorker = TriggerWorker
