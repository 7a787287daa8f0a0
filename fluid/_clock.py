"""The clocks of timed workers: the loop's monotonic clock, and a wall clock for dates.

* Waiting is on the loop's monotonic clock (``loop.time()``) throughout: a
  wait is a ``loop.call_at`` timer.
* The wall clock is read only to place wall-clock times (cron slots, a
  one-shot's ``at=``). A wait for a wall-clock time lasts at most ``RESYNC``
  (an hour) before the wall clock is read again, so a system clock that is
  stepped forward or back is followed within the hour.
* A loop may supply its own wall clock with a ``wall_time()`` method: that is
  how ``fluid.testing``'s virtual-time loop makes cron and ``at=`` schedules
  testable.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["RESYNC", "TOLERANCE", "wall_time"]

TOLERANCE = 1e-6  # seconds: a slot this close to now is due, not missed
RESYNC = 3600.0  # seconds: the longest wait for a wall-clock time


def wall_time(loop: asyncio.AbstractEventLoop) -> float:
    """The wall clock of ``loop``: its ``wall_time()`` if it has one, else ``time.time()``."""
    clock = getattr(loop, "wall_time", None)
    return float(clock()) if clock is not None else time.time()
