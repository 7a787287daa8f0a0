"""Plan: when a schedule runs next. Its slots, the missed-run policy, and the figures.

A ``Plan`` is made when a ``ScheduledWorker`` starts and knows nothing of
tasks or futures: the worker asks it whether a slot is due, tells it when a
run starts and ends, and sleeps until ``timer()``.

* Fixed-rate slots are ``anchor + k * interval`` on the loop's clock,
  computed from ``k``, never accumulated, so they do not drift. Cron slots
  are POSIX timestamps of the wall clock. A fixed delay has no slots: the
  next run is planned when a run ends.
* Fixed-rate slots *anchored to the epoch* (``anchored=True``, what a
  cluster-wide schedule needs) are ``k * interval`` in POSIX time: every
  replica computes the same slots whatever its start time, as with cron.
* A slot is *missed* when it passed while a run was in progress, or when the
  worker woke so late that the next slot was due too. ``"skip"`` drops missed
  slots and waits for the next slot ahead, so runs keep starting on the grid;
  ``"catch_up"`` keeps them pending, to run late, back to back. Either way
  each missed slot is counted once in ``overruns``.
* The pending slot moves on when a run *starts*, so the next run is known
  during a run, and a run that overran is found by comparing that slot with
  the time the run ended.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable
from typing import Literal

from ._clock import RESYNC, TOLERANCE, wall_time
from ._cron import CronExpression
from ._validate import check_seconds

__all__ = ["Missed", "Plan", "check_missed", "check_mode"]

Missed = Literal["skip", "catch_up"]

_MAX_COUNTED = 100_000  # missed cron slots counted one by one, at most


class Grid:
    """Fixed-rate slots ``anchor + k * interval`` on the loop's clock."""

    __slots__ = ("anchor", "interval")

    def __init__(self, anchor: float, interval: float) -> None:
        self.anchor = anchor
        self.interval = interval

    def first(self, t: float) -> float:
        """The first slot at or after ``t``."""
        k = max(0, math.ceil((t - TOLERANCE - self.anchor) / self.interval))
        return self.anchor + k * self.interval

    def next(self, slot: float) -> float:
        return self.anchor + (round((slot - self.anchor) / self.interval) + 1) * self.interval

    def count(self, start: float, end: float) -> int:
        """How many slots lie in ``[start, end)``, both being slots."""
        return max(0, round((end - start) / self.interval))

    def timer(self, slot: float, loop: asyncio.AbstractEventLoop) -> float:
        return slot

    def wall(self, slot: float, loop: asyncio.AbstractEventLoop) -> float:
        return wall_time(loop) + slot - loop.time()


def _wall_timer(slot: float, loop: asyncio.AbstractEventLoop) -> float:
    # Sleep on the loop's clock, but read the wall clock again within the
    # hour: a stepped system clock is followed, and nothing runs early.
    return loop.time() + min(max(slot - wall_time(loop), 0.0), RESYNC)


class EpochGrid(Grid):
    """Fixed-rate slots ``k * interval`` of the wall clock (POSIX time): alike on every host."""

    __slots__ = ()

    def __init__(self, interval: float) -> None:
        super().__init__(0.0, interval)

    def timer(self, slot: float, loop: asyncio.AbstractEventLoop) -> float:
        return _wall_timer(slot, loop)

    def wall(self, slot: float, loop: asyncio.AbstractEventLoop) -> float:
        return slot


class CronLine:
    """Cron slots: POSIX timestamps of the wall clock."""

    __slots__ = ("cron",)

    def __init__(self, cron: CronExpression) -> None:
        self.cron = cron

    def first(self, t: float) -> float:
        return self.cron.next_timestamp(t - TOLERANCE)

    def next(self, slot: float) -> float:
        return self.cron.next_timestamp(slot)

    def count(self, start: float, end: float) -> int:
        n = 0
        while start < end - TOLERANCE and n < _MAX_COUNTED:
            n += 1
            start = self.next(start)
        return n

    def timer(self, slot: float, loop: asyncio.AbstractEventLoop) -> float:
        return _wall_timer(slot, loop)

    def wall(self, slot: float, loop: asyncio.AbstractEventLoop) -> float:
        return slot


class Plan:
    """The slots of one run of a schedule, from its start to its stop."""

    __slots__ = (
        "delay",
        "drift",
        "line",
        "loop",
        "mark",
        "missed",
        "now",
        "overruns",
        "pending",
        "skipped",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float | None,
        delay: float | None,
        cron: CronExpression | None,
        initial_delay: float,
        missed: Missed,
        anchored: bool = False,
    ) -> None:
        self.loop = loop
        self.delay = delay
        self.missed = missed
        self.drift: float | None = None
        self.overruns = self.skipped = 0
        self.mark = -math.inf  # slots before it were counted as missed already
        # What a slot is compared with: the loop's clock, or the wall clock for
        # wall-clock slots (cron, or a grid anchored to the epoch).
        self.now: Callable[[], float] = loop.time
        start = loop.time() + initial_delay
        self.line: Grid | CronLine | None = None
        self.pending: float | None = start
        if interval is not None and not anchored:
            self.line = Grid(start, interval)
            return
        if interval is not None:
            self.line = EpochGrid(interval)
        elif cron is not None:
            self.line = CronLine(cron)
        else:
            return
        # Wall-clock slots: the first is the first slot after the initial delay.
        self.now = functools.partial(wall_time, loop)
        self.pending = self.line.first(wall_time(loop) + initial_delay)

    def resume(self) -> None:
        """Go on after a pause with the next slot ahead (a fixed delay: ``delay`` from now)."""
        line = self.line
        if line is None:
            assert self.delay is not None
            self.pending = self.loop.time() + self.delay
        else:
            self.pending = self.mark = line.first(self.now())

    def timer(self) -> float | None:
        """The loop time to wake up at for the pending slot."""
        pending, line = self.pending, self.line
        if pending is None or line is None:
            return pending
        return line.timer(pending, self.loop)

    def take_due(self) -> float | None:
        """The slot to run now, if one is due; drops slots the worker woke too late for."""
        line, pending = self.line, self.pending
        assert pending is not None
        now = self.now()
        if pending > now + TOLERANCE:
            return None
        if line is None:
            return pending
        if line.next(pending) <= now + TOLERANCE:  # the next slot is due too: we are late
            ahead = line.first(now)
            self._missed(pending, ahead)
            if self.missed == "skip":
                self.pending = pending = ahead
                if pending > now + TOLERANCE:
                    return None
        return pending

    def start(self, slot: float | None) -> None:
        """A run starts, for ``slot`` or triggered (None): note the drift, move on."""
        line = self.line
        if slot is not None:
            self.drift = self.now() - slot
            self.pending = line.next(slot) if line else None
        elif line is None:
            self.pending = None  # fixed delay: the next run is planned when this one ends

    def forgo(self, slot: float) -> None:
        """``slot`` runs elsewhere, or nowhere: move on to the next without a run."""
        line = self.line
        assert line is not None
        self.pending = line.next(slot)

    def gap(self, slot: float) -> float:
        """Seconds from ``slot`` to the slot after it."""
        line = self.line
        assert line is not None
        return line.next(slot) - slot

    def end(self) -> None:
        """A run ended: plan the next, and note the slots that passed meanwhile."""
        line, pending = self.line, self.pending
        if line is None:
            assert self.delay is not None
            self.pending = self.loop.time() + self.delay
            return
        assert pending is not None
        now = self.now()
        if pending < now - TOLERANCE:  # slots passed while the run was in progress
            ahead = line.first(now)
            self._missed(pending, ahead)
            if self.missed == "skip":
                self.pending = ahead

    def wall(self, slot: float | None, started: float) -> float:
        """The wall-clock time a run was due at: its slot's, or when it started if triggered."""
        line, loop = self.line, self.loop
        if slot is not None and line is not None:
            return line.wall(slot, loop)
        due = started if slot is None else slot  # a fixed-delay slot or a trigger: loop times
        return wall_time(loop) - (loop.time() - due)

    def next_wall(self) -> float | None:
        """The wall-clock time of the pending slot, if there is one."""
        pending, line, loop = self.pending, self.line, self.loop
        if pending is None:
            return None
        return line.wall(pending, loop) if line else wall_time(loop) + pending - loop.time()

    def _missed(self, start: float, end: float) -> None:
        # Count the slots in [start, end) as missed, each once: catching up
        # looks at the same missed slots again until it has run them.
        line = self.line
        assert line is not None
        counted = max(start, self.mark)
        if counted < end:
            self.overruns += line.count(counted, end)
            self.mark = end
        if self.missed == "skip":
            self.skipped += line.count(start, end)


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
