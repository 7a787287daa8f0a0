"""Restart policy of a supervising tree: restart types, strategies, intensity, backoff.

Modelled on Erlang/OTP's supervisor, with the backoff it lacks:

* each child has a restart type: ``permanent`` (always restarted),
  ``transient`` (restarted only after an error) or ``temporary`` (never);
* the tree has a strategy: ``one_for_one`` restarts the child that ended,
  ``one_for_all`` stops and restarts every child, ``rest_for_one`` the child
  and those started after it;
* restart intensity: more than ``max_restarts`` restarts within ``period``
  seconds and the tree gives up: it stops and fails with
  [`TooManyRestarts`][fluid.TooManyRestarts], naming the child and carrying
  its last error. A restart counts when the tree decides it, as the child
  ends, not when it is made after its backoff: the intensity measures how
  often children fail, as in Erlang where a restart follows its failure at
  once. Counted when made, the backoff would space the count out (each
  count one delay later, the delays growing), and a child failing at once
  on every start could stay under the limit for ever instead of escalating.
  Giving up drops the restarts still waiting for their backoff, so a tree
  that gives up may have made fewer than ``max_restarts`` restarts; every
  decision is logged at INFO;
* between restarts of the same child the tree waits an exponential backoff
  with jitter, capped; a child that ran ``reset_after`` seconds starts again
  from the first step;
* a tree that starts again (restarted by its own parent) starts with a fresh
  intensity window and its children's backoff from the first step, as an
  Erlang supervisor restarts its children afresh. A child that keeps failing
  then takes the restarted tree down again within its intensity, and the
  parent counts that: the failure escalates level by level, in bounded time,
  up to a tree that gives up for good.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from ._errors import TooManyRestarts
from ._group import shutdown_in_reverse
from ._lifecycle import emit
from ._validate import check_count, check_seconds
from ._worker import Worker

if TYPE_CHECKING:
    from ._slot import Slot

__all__ = [
    "Backoff",
    "Intensity",
    "RestartType",
    "Strategy",
    "Supervisor",
    "check_restart",
    "check_strategy",
    "should_restart",
]

logger = logging.getLogger("fluid")

RestartType: TypeAlias = Literal["permanent", "transient", "temporary"]
"""When a child that ended is restarted: always, after an error, or never."""

Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]
"""Which children a restart takes: the one that ended, all, or it and the later ones."""

_RESTART_TYPES = ("permanent", "transient", "temporary")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


def check_restart(value: object) -> RestartType:
    """Return a valid restart type or raise ``ValueError``."""
    if value not in _RESTART_TYPES:
        raise ValueError(f"restart must be one of {', '.join(_RESTART_TYPES)}; got {value!r}")
    return value  # type: ignore[return-value]


def check_strategy(value: object) -> Strategy | None:
    """Return a valid strategy (or None: no supervision) or raise ``ValueError``."""
    if value is not None and value not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}; got {value!r}")
    return value  # type: ignore[return-value]


def should_restart(restart: str, error: BaseException | None) -> bool:
    """Whether a child of this restart type that ended with ``error`` is restarted."""
    return restart == "permanent" or (restart == "transient" and error is not None)


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait between restarts of the same child: exponential, jittered, capped.

    The n-th consecutive restart waits ``min(maximum, initial * factor**n)``
    seconds, spread by up to ``jitter`` (a fraction) either way so that
    children that crashed together do not restart in lockstep. A child that
    ran at least ``reset_after`` seconds before ending starts from n = 0.

    Args:
        initial: seconds before the first restart (0: at once).
        maximum: the cap.
        factor: the growth per consecutive restart (>= 1).
        jitter: the spread, a fraction of the delay between 0 and 1.
        reset_after: seconds of running that reset the backoff.

    Raises:
        ValueError: a negative or non-finite value, ``factor`` < 1 or
            ``jitter`` > 1.

    Example:
        ```python
        tree = fluid.Workers(
            consumer,
            strategy="one_for_one",
            backoff=fluid.Backoff(initial=0.5, maximum=30),
        )
        ```
    """

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.1
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "factor", "jitter", "reset_after"):
            check_seconds(name, getattr(self, name))
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if self.jitter > 1:
            raise ValueError(f"jitter must be a fraction between 0 and 1, got {self.jitter!r}")

    def delay(self, step: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the restart number ``step`` (0-based) of a child."""
        exponent = min(step, 64)  # past this the cap has long been reached
        base = min(self.maximum, self.initial * math.pow(self.factor, exponent))
        if not self.jitter or not base:
            return base
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


class Intensity:
    """Counts restarts in a sliding window of ``period`` seconds, when they are decided."""

    __slots__ = ("max_restarts", "period", "times")

    def __init__(self, max_restarts: int, period: float) -> None:
        self.max_restarts = check_count("max_restarts", max_restarts, 0)
        self.period = check_seconds("period", period)
        self.times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a restart at ``now``; False if it is one too many for the window."""
        times = self.times
        while times and now - times[0] > self.period:
            times.popleft()
        times.append(now)
        return len(times) <= self.max_restarts

    def clear(self) -> None:
        """Forget past restarts (a new run of the tree)."""
        self.times.clear()


class Supervisor:
    """The restart policy of one tree, applied to the slots of its children that ended.

    The tree hands over the slot of each child that ended while it ran (see
    ``_slot.py``). The supervisor decides from the slot's restart type and the
    intensity window, stops the rest of the restart group, and schedules the
    restart after the backoff delay with ``loop.call_later``: the tree's loop
    stays free meanwhile, and a stop request cancels the pending restarts.

    It never touches the tree itself: it reads the current members through
    ``members``, wakes the tree with ``wake`` when a restart is due, and
    returns [`TooManyRestarts`][fluid.TooManyRestarts] for the tree to fail
    with when the intensity is exceeded.
    """

    __slots__ = ("_members", "_wake", "backoff", "due", "intensity", "strategy", "timers", "tree")

    def __init__(
        self,
        tree: Worker,
        strategy: Strategy,
        max_restarts: int,
        period: float,
        backoff: Backoff,
        *,
        members: Callable[[], Sequence[Slot]],
        wake: Callable[[], None],
    ) -> None:
        self.tree = tree
        self.strategy = strategy
        self.intensity = Intensity(max_restarts, period)
        self.backoff = backoff
        self.due: deque[tuple[list[Slot], float]] = deque()
        self.timers: set[asyncio.TimerHandle] = set()
        self._members = members
        self._wake = wake

    def reset(self) -> None:
        """Forget everything of a previous run of the tree."""
        self.cancel()
        self.intensity.clear()
        self.due.clear()

    def cancel(self) -> None:
        """Drop the restarts waiting for their backoff delay."""
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()

    async def child_ended(self, slot: Slot, error: BaseException | None) -> TooManyRestarts | None:
        """Apply the policy to a child that ended (or failed to restart) with ``error``.

        Nothing is decided once the tree is asked to stop (a start that
        failed while it stopped comes here after the request): the failure
        was logged, nothing is restarted, nothing counts.

        Returns:
            The error to fail the tree with if this restart is one too many.
        """
        worker = slot.worker
        if not self.tree.is_running():
            return None
        if not should_restart(slot.restart, error):
            if error is not None:
                logger.warning(
                    "%s worker %r of tree %r failed; it is not restarted",
                    slot.restart,
                    worker.worker_name,
                    self.tree.worker_name,
                )
            return None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self.intensity.allow(now):
            return self._give_up(slot, error)
        if now - worker._started_at >= self.backoff.reset_after:
            slot.backoff_step = 0
        delay = self.backoff.delay(slot.backoff_step)
        slot.backoff_step += 1
        logger.info(
            "worker %r of tree %r ended: restarting it in %.3gs (%d of at most %d restarts in %ss)",
            worker.worker_name,
            self.tree.worker_name,
            delay,
            len(self.intensity.times),
            self.intensity.max_restarts,
            self.intensity.period,
        )
        group = self._group(slot)
        restart = [s for s in group if s is slot or s.restart != "temporary"]
        for member in group:
            member.restarting = True  # their ends, from here on, are this restart's doing
        # Only siblings still running are stopped: one that already ended was
        # dealt with when it did (its error logged then), and shutting it down
        # again would only raise that old error once more.
        others = [s.worker for s in group if s is not slot and _running(s.worker)]
        for stopped, exc in await shutdown_in_reverse(others):
            logger.error(
                "worker %r failed while stopping for a restart", stopped.worker_name, exc_info=exc
            )
        for member in group:
            if member not in restart:
                member.restarting = False  # a temporary sibling stays stopped
        if delay <= 0:
            self.due.append((restart, delay))
            return None
        timer = loop.call_later(delay, self._restart_due, restart, delay)
        self.timers.add(timer)
        return None

    async def restart_next(self) -> TooManyRestarts | None:
        """Start again the next group whose backoff delay passed.

        Returns:
            The error to fail the tree with if a child failed to restart once
            too often.
        """
        group, delay = self.due.popleft()
        for slot in group:
            slot.restarting = False
        for slot in group:
            if not self.tree.is_running():
                return None
            worker = slot.worker
            if not slot.member or slot.held or not worker.is_stopped():
                continue  # removed, stopped on request or started by someone else
            if slot.restarting:
                # A member of this group failed to start just before: the new
                # restart decided for it took this one too (the group of a
                # failed child includes the siblings after it), so it waits
                # for that restart instead of starting before the one it
                # comes after.
                continue
            try:
                await worker.startup()
            except Exception as exc:
                if not slot.watched:
                    continue  # removed or stopped on request while it started
                logger.warning("worker %r failed to restart", worker.worker_name, exc_info=exc)
                gave_up = await self.child_ended(slot, exc)
                if gave_up is not None:
                    return gave_up
                continue
            slot.restarts += 1
            emit(worker, "restarted", delay=delay)
        return None

    def _restart_due(self, group: list[Slot], delay: float) -> None:
        now = asyncio.get_running_loop().time()
        self.timers = {t for t in self.timers if t.when() > now}
        self.due.append((group, delay))
        self._wake()

    def _group(self, slot: Slot) -> list[Slot]:
        """The restart group of ``slot``: members only, and no sibling stopped on request."""
        if self.strategy == "one_for_one":
            return [slot]
        members = list(self._members())
        if self.strategy == "rest_for_one":
            members = members[members.index(slot) :]  # slot is a member: the tree checked
        return [s for s in members if s is slot or not s.held]

    def _give_up(self, slot: Slot, error: BaseException | None) -> TooManyRestarts:
        name = slot.worker.worker_name
        count = len(self.intensity.times) - 1
        last = "" if error is None else f" (last error: {type(error).__name__}: {error})"
        exc = TooManyRestarts(
            f"worker {name!r} of tree {self.tree.worker_name!r} ended more than "
            f"{self.intensity.max_restarts} times in {self.intensity.period}s: "
            f"giving up{last}",
            name,
            count,
            self.intensity.period,
        )
        exc.__cause__ = error
        logger.error("%s", exc)
        return exc


def _running(worker: Worker) -> bool:
    return worker.has_started() and not worker.is_stopped()
