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
import time
from typing import Literal

from ._cron import CronExpression
from ._state import WorkerState
from ._validate import check_seconds

__all__ = [
    "RESYNC",
    "TOLERANCE",
    "Missed",
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
