"""TimedWorker: a worker that sleeps on one future, woken by a timer, a poke or a stop.

The waiting primitive of the schedules, one-shot actors and event workers.
``_poke()`` says "something changed" (a trigger, a pause, a resume) and is
safe from any thread: it sets a flag, then looks for a waiter; the worker
publishes its waiter, then looks at the flag. Whatever the interleaving,
either the worker sees the flag or the poker sees the waiter, and a burst of
pokes from threads costs one ``call_soon_threadsafe``. An idle worker holds
one future and at most one timer handle: no task wakes up, nothing polls.
"""

from __future__ import annotations

import asyncio
import threading

from ._state import WorkerState
from ._waiting import release
from ._worker import Worker

__all__ = ["TimedWorker"]

_RUNNING = WorkerState.RUNNING


class TimedWorker(Worker):
    """Base of the timed and triggered workers: one future to sleep on."""

    __slots__ = ("_poked", "_waiter", "_wake_pending")

    def __init__(self, name: str, stopping_grace_period: float) -> None:
        super().__init__(name, stopping_grace_period)
        self._waiter: asyncio.Future[None] | None = None
        self._poked = False
        self._wake_pending = False

    def _poke(self) -> None:
        """Something changed: wake the worker if it sleeps. Safe from any thread.

        The flag is set before looking for a waiter, and the worker publishes
        its waiter before looking at the flag: either it sees the flag or the
        caller sees the waiter. A burst of pokes from threads is one wake-up.
        """
        self._poked = True
        if self._waiter is None:
            return
        if threading.get_ident() == self._thread_id:
            self._wake()
        elif not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nothing waits any more
                self._wake_pending = False

    def _wake(self) -> None:
        self._wake_pending = False
        waiter = self._waiter
        if waiter is not None:
            release(waiter)

    def _stop_requested(self) -> None:
        super()._stop_requested()
        self._wake()

    def _sleep_until(
        self, loop: asyncio.AbstractEventLoop, when: float | None
    ) -> tuple[asyncio.Future[None], asyncio.TimerHandle | None]:
        """A future to sleep on until loop time ``when`` (None: no timer), a poke or a stop.

        The caller awaits the future, then calls ``_woke(handle)`` in a
        ``finally``. (Not a coroutine of its own: that would cost a coroutine
        per wait, and waits are the hot path of ten thousand schedules.)
        """
        waiter = loop.create_future()
        self._waiter = waiter
        if self._poked or self._state is not _RUNNING:  # a poke came before the waiter
            waiter.set_result(None)
            return waiter, None
        return waiter, None if when is None else loop.call_at(when, release, waiter)

    def _woke(self, handle: asyncio.TimerHandle | None) -> None:
        self._waiter = None
        if handle is not None:
            handle.cancel()
