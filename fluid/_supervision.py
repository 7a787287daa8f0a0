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
  its last error;
* between restarts of the same child the tree waits an exponential backoff
  with jitter, capped; a child that ran ``reset_after`` seconds starts again
  from the first step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from ._errors import TooManyRestarts
from ._group import shutdown_in_reverse
from ._lifecycle import emit
from ._state import WorkerState
from ._validate import check_count, check_seconds
from ._worker import Worker

if TYPE_CHECKING:
    from ._tree import Workers

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
    """Counts restarts in a sliding window of ``period`` seconds."""

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
    """The restart policy of one tree, applied when its children end.

    The tree hands over each child that ended while it ran. The supervisor
    decides from the child's restart type and the intensity window, stops the
    rest of the restart group, and schedules the restart after the backoff
    delay with ``loop.call_later``: the tree's loop stays free meanwhile, and
    a stop request cancels the pending restarts.
    """

    __slots__ = ("backoff", "due", "intensity", "restarting", "strategy", "timers", "tree")

    def __init__(
        self,
        tree: Workers,
        strategy: Strategy,
        max_restarts: int,
        period: float,
        backoff: Backoff,
    ) -> None:
        self.tree = tree
        self.strategy = strategy
        self.intensity = Intensity(max_restarts, period)
        self.backoff = backoff
        self.due: deque[tuple[list[Worker], float]] = deque()
        self.timers: set[asyncio.TimerHandle] = set()
        self.restarting: set[Worker] = set()

    def reset(self) -> None:
        """Forget everything of a previous run of the tree."""
        self.cancel()
        self.intensity.clear()
        self.due.clear()
        self.restarting.clear()

    def cancel(self) -> None:
        """Drop the restarts waiting for their backoff delay."""
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()

    async def child_ended(self, child: Worker, error: BaseException | None) -> None:
        """Apply the policy to a child that ended (or failed to restart) with ``error``."""
        tree = self.tree
        if not should_restart(child._restart, error):
            if error is not None:
                logger.warning(
                    "%s worker %r of tree %r failed; it is not restarted",
                    child._restart,
                    child._name,
                    tree._name,
                )
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self.intensity.allow(now):
            self._give_up(child, error)
            return
        group = self._group(child)
        others = [w for w in group if w is not child]
        self.restarting.update(group)
        for worker, exc in await shutdown_in_reverse(others):
            logger.error(
                "worker %r failed while stopping for a restart", worker._name, exc_info=exc
            )
        if now - child._started_at >= self.backoff.reset_after:
            child._backoff_step = 0
        delay = self.backoff.delay(child._backoff_step)
        child._backoff_step += 1
        restart = [w for w in group if w is child or w._restart != "temporary"]
        if delay <= 0:
            self.due.append((restart, delay))
            return
        timer = loop.call_later(delay, self._restart_due, restart, delay)
        self.timers.add(timer)

    async def restart_next(self) -> None:
        """Start again the next group whose backoff delay passed."""
        group, delay = self.due.popleft()
        tree = self.tree
        for worker in group:
            self.restarting.discard(worker)
        for worker in group:
            if tree._state is not WorkerState.RUNNING:
                return
            if tree._children.get(worker._name) is not worker or not worker.is_stopped():
                continue  # removed, stopped on request or started by someone else
            if worker in tree._held:
                continue
            try:
                await worker.startup()
            except Exception as exc:
                logger.warning("worker %r failed to restart", worker._name, exc_info=exc)
                await self.child_ended(worker, exc)
                continue
            worker._restarts += 1
            emit(worker, "restarted", delay=delay)

    def _restart_due(self, group: list[Worker], delay: float) -> None:
        now = asyncio.get_running_loop().time()
        self.timers = {t for t in self.timers if t.when() > now}
        self.due.append((group, delay))
        self.tree._wake()

    def _group(self, child: Worker) -> list[Worker]:
        children = list(self.tree._children.values())
        if self.strategy == "one_for_one":
            return [child]
        group = children if self.strategy == "one_for_all" else children[children.index(child) :]
        return [w for w in group if w is child or w not in self.tree._held]

    def _give_up(self, child: Worker, error: BaseException | None) -> None:
        tree = self.tree
        count = len(self.intensity.times) - 1
        last = "" if error is None else f" (last error: {type(error).__name__}: {error})"
        exc = TooManyRestarts(
            f"worker {child._name!r} of tree {tree._name!r} ended more than "
            f"{self.intensity.max_restarts} times in {self.intensity.period}s: "
            f"giving up{last}",
            child._name,
            count,
            self.intensity.period,
        )
        exc.__cause__ = error
        logger.error("%s", exc)
        tree._fail(exc)
        tree.gracefully_stop()
