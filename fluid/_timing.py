"""The building blocks of timed workers: the clocks, the sleeping base class, the status shape.

* Time is the loop's monotonic clock (``loop.time()``) throughout. The wall
  clock is read only to place cron times and ``at=`` times, and even then the
  wait itself is a ``loop.call_at`` timer; a wait for a wall time lasts at
  most ``RESYNC`` (an hour) before the wall clock is read again, so a stepped
  system clock is noticed within the hour.
* A loop may supply its own wall clock with a ``wall_time()`` method: that is
  how ``fluid.testing``'s virtual-time loop makes cron and ``at=`` schedules
  testable.
* An idle timed worker is one task awaiting one future plus one timer handle.
  A stop request or a poke (``trigger()``, ``pause()``, ``resume()``) resolves
  the future, the timer resolves it when the time comes. Nothing ticks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Literal

from ._cron import CronExpression
from ._state import WorkerState
from ._validate import check_seconds
from ._worker import Worker, _release

__all__ = [
    "RESYNC",
    "TOLERANCE",
    "Missed",
    "TimedWorker",
    "check_missed",
    "check_mode",
    "wall_time",
]

Missed = Literal["skip", "catch_up"]

TOLERANCE = 1e-6  # seconds: a slot this close to now is due, not missed
RESYNC = 3600.0  # seconds: the longest wait for a wall-clock time
_RUNNING = WorkerState.RUNNING


def wall_time(loop: asyncio.AbstractEventLoop) -> float:
    """The wall clock of ``loop``: its ``wall_time()`` if it has one, else ``time.time()``."""
    clock = getattr(loop, "wall_time", None)
    return float(clock()) if clock is not None else time.time()


class TimedWorker(Worker):
    """Base of the schedules: one future to sleep on, woken by its timer, a stop or a poke."""

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
            _release(waiter)

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
        return waiter, None if when is None else loop.call_at(when, _release, waiter)

    def _woke(self, handle: asyncio.TimerHandle | None) -> None:
        self._waiter = None
        if handle is not None:
            handle.cancel()


def check_mode(
    interval: object, delay: object, cron: object, tz: object
) -> tuple[float | None, float | None, CronExpression | None]:
    """Validate the choice of schedule: exactly one of interval, delay and cron."""
    given = [
        k for k, v in (("interval", interval), ("delay", delay), ("cron", cron)) if v is not None
    ]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise ValueError(f"give exactly one of interval, delay and cron, got {what}")
    if tz is not None and not isinstance(cron, str):
        raise ValueError(f"tz applies to a cron string only, got tz={tz!r}")
    if interval is not None:
        return _positive("interval", interval), None, None
    if delay is not None:
        return None, _positive("delay", delay), None
    if isinstance(cron, CronExpression):
        return None, None, cron
    return None, None, CronExpression(cron, tz)  # type: ignore[arg-type]


def check_missed(missed: object, delay: object) -> Missed:
    """Validate the missed-run policy."""
    if missed not in ("skip", "catch_up"):
        raise ValueError(f"missed must be 'skip' or 'catch_up', got {missed!r}")
    if missed == "catch_up" and delay is not None:
        raise ValueError("missed='catch_up' needs interval or cron: a delay schedule has no slots")
    return "catch_up" if missed == "catch_up" else "skip"


def _positive(what: str, value: object) -> float:
    seconds = check_seconds(what, value)
    if seconds == 0:
        raise ValueError(f"{what} must be greater than 0, got {value!r}")
    return seconds
