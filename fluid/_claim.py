"""Slot claims: each slot of a schedule runs on one replica of a cluster.

A [`ScheduledWorker`][fluid.ScheduledWorker] given ``claim=`` places its slots
on the wall clock (a fixed rate becomes ``k * interval`` in POSIX time, cron
already is), so that every replica computes the same slots whatever its start
time. When a slot is due, each replica asks the claim for the slot's key; the
one answered ``True`` runs the slot, the others move on to the next.

Why it is shaped this way:

* The core knows no broker. A claim is anything with
  ``async def claim(key, ttl) -> bool`` ([`SlotClaim`][fluid.SlotClaim]);
  ``fluid.redis.RedisSlotClaim`` is one ``SET key owner NX PX ttl``.
* The key is the schedule's name and the slot's time in integer milliseconds
  since the epoch: what every replica computes alike, never the moment a
  replica gets round to it.
* A claim lives ``ttl = gap + CLAIM_MARGIN + max_skew`` seconds, ``gap``
  being the time to the next slot, and a replica runs a slot it won only if
  the answer came back before ``slot + gap + CLAIM_MARGIN`` on its own clock.
  That makes "no slot twice" hold whatever the delays, as long as no two
  replicas' clocks differ by more than ``max_skew``: the first claim is made
  no earlier than ``slot - a`` in true time (``a``: the clock most ahead), so
  the key lives until at least ``slot - a + ttl``; a later claim that won
  because the key had expired was answered after that, when its replica's
  clock (behind by at most ``b``, ``a + b <= max_skew``) read at least
  ``slot + gap + CLAIM_MARGIN``: too late, so it is not run (``late``).
* Each slot runs at most once: a winner that crashes mid-run leaves the key,
  and nobody runs that slot again. A claim that cannot be made (the store is
  unreachable, or does not answer before the slot's window closes) skips the
  slot: running it anyway would risk every replica running it. The first
  failure is logged, the ones after it only counted, until a claim goes
  through again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, TypedDict, cast

from ._clock import wall_time
from ._validate import check_async_callable, check_seconds

__all__ = ["CLAIM_MARGIN", "MAX_SKEW", "ClaimStatus", "Claims", "SlotClaim", "check_claim"]

logger = logging.getLogger("fluid")

CLAIM_MARGIN = 1.0
"""Seconds past a slot's gap within which a won claim is still run."""
MAX_SKEW = 1.0
"""Seconds two replicas' wall clocks may differ by, unless ``max_skew`` says otherwise."""
MIN_INTERVAL = 0.001
"""The shortest claimed interval: keys are the slots' times in milliseconds."""


class SlotClaim(Protocol):
    """What a cluster-wide schedule asks before it runs a slot: "is it mine?".

    ``claim(key, ttl)`` returns ``True`` for exactly one caller of a given
    ``key`` among all replicas, as long as the claim lives ``ttl`` seconds;
    ``False`` for every other. It raises if it cannot tell (the store is
    unreachable): the schedule then skips the slot. A claim may also have an
    ``async def aclose()``: each worker using it awaits it when its run ends.

    Example:
        ```python
        class LocalClaim:  # one process: a set of keys (tests, single host)
            def __init__(self) -> None:
                self.keys: set[str] = set()

            async def claim(self, key: str, ttl: float) -> bool:
                if key in self.keys:
                    return False
                self.keys.add(key)
                return True

        fluid.ScheduledWorker(report, interval=60, claim=LocalClaim())
        ```
    """

    async def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds: ``True`` for the one caller that got it."""
        ...


class ClaimStatus(TypedDict):
    """Slot claims of a cluster-wide schedule, since the worker last started.

    Attributes:
        won: slots this replica claimed, and ran.
        lost: slots another replica had claimed (run there, not here).
        failed: slots skipped because the claim could not be made.
        late: slots won too late to be sure no other replica runs them
            (skipped; see ``max_skew``).
        failing: the last claim failed.

    Example:
        ```python
        status = await report.status()
        print(status["schedule"]["claims"])  # {"won": 3, "lost": 6, ...}
        ```
    """

    won: int
    lost: int
    failed: int
    late: int
    failing: bool


class Claims:
    """The claim side of one schedule: its claim, its skew bound, its figures."""

    __slots__ = ("claim", "failed", "failing", "late", "lost", "max_skew", "streak", "won")

    def __init__(self, claim: SlotClaim, max_skew: float) -> None:
        self.claim = claim
        self.max_skew = max_skew
        self.reset()

    def reset(self) -> None:
        self.won = self.lost = self.failed = self.late = 0
        self.streak = 0  # slots skipped since the claims began to fail
        self.failing = False

    def figures(self) -> ClaimStatus:
        return {
            "won": self.won,
            "lost": self.lost,
            "failed": self.failed,
            "late": self.late,
            "failing": self.failing,
        }

    async def take(
        self, name: str, slot: float, gap: float, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """Claim the slot at wall time ``slot`` of schedule ``name``: True to run it here.

        Never raises but ``CancelledError``: a failed claim is counted and
        the slot skipped.
        """
        key = f"{name}:{round(slot * 1000)}"
        closes = slot + gap + CLAIM_MARGIN  # on this replica's clock
        left = closes - wall_time(loop)
        if left <= 0:  # the loop was blocked past the slot's window
            self.late += 1
            return False
        try:
            async with asyncio.timeout(left):
                won = await self.claim.claim(key, gap + CLAIM_MARGIN + self.max_skew)
        except Exception as exc:  # any failure skips the slot
            self._failure(name, key, exc)
            return False
        if self.failing:
            self.failing = False
            logger.info("schedule %r claims slots again (%d skipped)", name, self.streak)
        if not won:
            self.lost += 1
            return False
        if wall_time(loop) >= closes:
            self.late += 1
            logger.warning(
                "schedule %r won slot %s too late to be the only one to run it: skipped",
                name,
                key,
            )
            return False
        self.won += 1
        return True

    async def close(self, name: str) -> None:
        """Await the claim's ``aclose()``, if it has one; log what it raises."""
        aclose = getattr(self.claim, "aclose", None)
        if aclose is None:
            return
        try:
            await aclose()
        except Exception:
            logger.exception("closing the slot claim of schedule %r failed", name)

    def _failure(self, name: str, key: str, exc: Exception) -> None:
        self.failed += 1
        if self.failing:
            self.streak += 1
        else:
            self.failing = True
            self.streak = 1
            logger.warning(
                "schedule %r could not claim slot %s, skipped; slots are skipped "
                "until a claim goes through again",
                name,
                key,
                exc_info=exc,
            )


def check_claim(
    claim: object, max_skew: object, interval: float | None, delay: float | None, missed: str
) -> Claims | None:
    """Validate ``claim`` and ``max_skew`` against the schedule they go with."""
    if claim is None:
        if max_skew is not None:
            raise ValueError(f"max_skew applies with claim only, got max_skew={max_skew!r}")
        return None
    check_async_callable("claim.claim", getattr(claim, "claim", None))
    if delay is not None:
        raise ValueError(
            "claim needs interval or cron: a delay schedule has no slots that replicas "
            "agree on (each run is placed after the previous run of its own replica)"
        )
    if missed != "skip":
        raise ValueError(
            f"claim runs missed='skip' only, got missed={missed!r}: in a cluster, another "
            "replica runs the slots this one missed, and a slot is claimed only while it is due"
        )
    if interval is not None and interval < MIN_INTERVAL:
        raise ValueError(
            f"interval must be at least {MIN_INTERVAL} with claim (slots are keyed by their "
            f"time in milliseconds), got {interval!r}"
        )
    skew = MAX_SKEW if max_skew is None else check_seconds("max_skew", max_skew)
    return Claims(cast(SlotClaim, claim), skew)
