"""StreamConsumer: a queue consumer whose messages come from a broker's stream.

It is built on public names only: ``QueueConsumer``'s consuming engine
(``consume()``: concurrency, books, ``on_error``, drain, a cancelled
handler's message put back) and the worker protocol (``on_stop_requested``).
The broker side is ``fluid/_broker.py``'s protocol; Redis Streams is
``fluid/redis``.

How an entry travels, and why nothing is lost:

* **Held.** An entry read (``read_new``), read again (``read_own``, at
  start: what this consumer's name was given before a crash) or claimed
  (``claim_idle``: a dead peer's) is *held* until it is acked, released or
  dead-lettered. The reader asks for at most the free room (``maxsize``
  minus what is held and what a read in progress may return): the entries
  a consumer has not acked are bounded, and so are the duplicates a crash
  can cause.
* **Acked after the handler.** A handler that returned queues the entry's
  id for the acker, which sends one ack for everything queued since its
  last one (one ``XACK`` per batch, sent at once when idle). A crash before
  the ack means a second delivery, never a loss.
* **Renewed while held.** The keeper resets the idle time of held entries
  once they were held ``min_idle / 3`` seconds, so that a long handler, or a long buffer,
  is not taken over by a peer while it still works.
* **Failures.** A failing handler's entry is released for another delivery
  after ``retry_delay`` (a handler may ask for its own delay by raising
  [`Retry`][fluid.redis.Retry]; a delay longer than ``min_idle`` parks the
  entry, renewed until ``min_idle`` before its time); once delivered
  ``max_deliveries`` times it goes to the dead letters with the error.
* **Deliveries are counted as handlers start**, not as entries are read:
  an entry read again or claimed is taken without counting, and counted
  (``count_delivery``) when its handler starts. So an entry that crashes
  its consumers reaches ``max_deliveries`` and goes to the dead letters
  unhandled, while those buffered behind it (never started) do not.
* **Stop.** A stop cancels the read in progress (on the reader's own
  connection), lets the engine drain the buffer within the grace period,
  sends the last acks, then releases whatever this consumer still has
  pending so that a peer takes it at its next claim. A forced stop puts the
  cancelled handlers' entries back in the buffer first: they are released
  too. The consumer is never deleted from its group: its pending entries,
  if the broker could not be reached, are recovered by its next start under
  the same name or by a peer's claim.
* **Connection loss.** Every loop reports it (``status()["stream"]
  ["connected"]``, ``ready`` False, so status routes answer 503), backs off
  and tries again; what it holds stays held and is renewed once the broker
  is back, and the reader reads its own pending list again: a read whose
  reply the outage cut gave it entries it never saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._broker import Broker, Entry, describe
from ._policy import OnError, check_on_error
from ._queue import QueueConsumer
from ._status import StreamStatus, WorkerStatus
from ._validate import async_callable, check_count, check_seconds, function_name
from ._waiting import wait_even_if_cancelled
from ._worker import STOPPING_GRACE_PERIOD

__all__ = ["BROKER_ERRORS", "Retry", "StreamConsumer"]

logger = logging.getLogger("fluid")

BROKER_ERRORS = (OSError,)
"""What an unreachable broker raises: ``ConnectionError`` and ``TimeoutError`` are
kinds of ``OSError``, and a backend turns its client's own errors into them."""

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0
_WIND_DOWN_MAX = 5.0  # the most a stop waits for the broker to take acks and releases
_WIND_DOWN_MIN = 0.5


class Retry(Exception):  # a request, not an error: named as arq and saq name theirs
    """Raised by a handler: deliver this entry again, ``delay`` seconds from now.

    Not a failure: ``on_error`` does not hear of it and the entry is not
    counted failed; it is released for another delivery, which counts
    towards ``max_deliveries``.

    Example:
        ```python
        async def charge(order: dict) -> None:
            if not await payments.ready():
                raise fluid.redis.Retry(delay=30)
            await payments.charge(order)
        ```
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = check_seconds("delay", delay)
        super().__init__(f"retry in {self.delay}s")


class StreamConsumer(QueueConsumer[Entry]):
    """A consumer of a broker's stream; see the module docstring for the model.

    Use [`fluid.redis.StreamConsumerWorker`][fluid.redis.StreamConsumerWorker],
    which gives it a Redis broker; this class takes any object that follows
    the broker protocol (``fluid/_broker.py``).
    """

    __slots__ = (
        "_acked",
        "_acker_wake",
        "_acks",
        "_block",
        "_broker",
        "_claim_interval",
        "_claimed",
        "_closing",
        "_connected",
        "_dead_lettered",
        "_handler",
        "_held",
        "_max_deliveries",
        "_min_idle",
        "_parked",
        "_read",
        "_reader",
        "_released",
        "_retry_delay",
        "_room",
        "_stream_maxsize",
    )

    def __init__(
        self,
        broker: Broker,
        handler: Callable[[Any], Awaitable[object]],
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        *,
        on_error: OnError[Any] = "log",
        concurrency: int = 1,
        maxsize: int = 100,
        drain: bool = True,
        min_idle: float = 30.0,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        retry_delay: float = 0.0,
        block: float = 5.0,
    ) -> None:
        self._handler = async_callable("handler", handler)
        check_on_error(on_error)
        self._broker = broker
        self._stream_maxsize = check_count("maxsize", maxsize, 1)
        self._min_idle = check_seconds("min_idle", min_idle)
        if self._min_idle <= 0:
            raise ValueError(f"min_idle must be more than 0 seconds, got {min_idle!r}")
        if claim_interval is None:
            claim_interval = min(self._min_idle / 2, 5.0)
        self._claim_interval = check_seconds("claim_interval", claim_interval)
        if self._claim_interval <= 0:
            raise ValueError(f"claim_interval must be more than 0 seconds, got {claim_interval!r}")
        self._max_deliveries = check_count("max_deliveries", max_deliveries, 1)
        self._retry_delay = check_seconds("retry_delay", retry_delay)
        self._block = check_seconds("block", block)
        if self._block <= 0:
            raise ValueError(f"block must be more than 0 seconds, got {block!r}")
        super().__init__(
            name,
            stopping_grace_period,
            on_error=_on_data(on_error),
            drain=drain,
            # unbounded here: the reader asks for the free room only, so the
            # buffer stays within maxsize, and the channel's unbounded send
            # takes no lock (a tenth of an entry's cost)
            maxsize=0,
            concurrency=concurrency,
        )
        self._held: dict[str, float] = {}  # id -> when last taken or renewed (monotonic)
        # retries later than min_idle: id -> (renewed until, last renewed)
        self._parked: dict[str, tuple[float, float]] = {}
        self._acks: list[str] = []
        self._closing = False
        self._connected = False
        self._read = self._claimed = self._acked = self._released = self._dead_lettered = 0
        self._room: asyncio.Event | None = None
        self._acker_wake: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None

    def default_name(self) -> str:
        return function_name(self._handler) or super().default_name()

    @property
    def maxsize(self) -> int:
        """The most entries held unacked at once: buffered, in flight or waiting for the ack."""
        return self._stream_maxsize

    # ------------------------------------------------------------- producing

    def send(self, message: Any, *, timeout: float = 0.0) -> None:
        """Refused: a stream consumer's messages come from its stream.

        Raises:
            TypeError: always; append to the stream with a producer
                ([`fluid.redis.StreamProducer`][fluid.redis.StreamProducer]).
        """
        raise TypeError(
            f"worker {self.worker_name!r} consumes a stream: send messages "
            "to the stream with a producer, not to the consumer"
        )

    async def put(self, message: Any) -> None:
        """Refused, as [`send`][fluid.redis.StreamConsumerWorker.send] is."""
        self.send(message)

    # ------------------------------------------------------------------- run

    async def run(self) -> None:
        """Read, handle, ack until stopped; then drain, flush and release."""
        loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._acker_wake = asyncio.Event()
        self._closing = False
        helpers: list[asyncio.Task[None]] = []
        try:
            await self._open()
            if not self._connected:  # stopped before the broker could be reached
                return
            helpers = [
                loop.create_task(self._read_loop(), name=f"fluid:{self.worker_name}:read"),
                loop.create_task(self._keep_loop(), name=f"fluid:{self.worker_name}:keep"),
                loop.create_task(self._ack_loop(), name=f"fluid:{self.worker_name}:ack"),
            ]
            self._reader = helpers[0]
            for helper in helpers:
                helper.add_done_callback(self._helper_done)
            await self.consume(self._handle)
        finally:
            if helpers:
                await self._wind_down(helpers)  # closes the broker, whatever happens
            else:  # a cancel during open() (a forced stop) closes what it opened
                await _to_the_end(self._broker.close())
        for helper in helpers:  # a helper that failed ends the worker with its error
            error = None if helper.cancelled() else helper.exception()
            if error is not None:
                raise error

    def on_stop_requested(self) -> None:
        """Stop reading at once: the read in progress is cancelled (its own connection).

        A subclass that overrides it calls ``super().on_stop_requested()``;
        without it, the reader still stops, after its read in progress
        (up to ``block`` seconds).
        """
        reader = self._reader
        if reader is not None:
            reader.cancel()

    async def status(self) -> WorkerStatus:
        """The worker's status with a ``stream`` entry (see ``StreamStatus``) and ``ready``."""
        status = await super().status()
        own_pending = lag = None
        if self._connected and self.is_running():
            with contextlib.suppress(Exception):  # figures are best effort: never fail a probe
                async with asyncio.timeout(1.0):
                    figures = await self._broker.figures()
                own_pending, lag = figures.own_pending, figures.lag
        stream: StreamStatus = {
            "stream": self._broker.stream,
            "group": self._broker.group,
            "consumer": self._broker.consumer,
            "connected": self._connected,
            "held": len(self._held),
            "read": self._read,
            "claimed": self._claimed,
            "acked": self._acked,
            "released": self._released,
            "dead_lettered": self._dead_lettered,
            "own_pending": own_pending,
            "lag": lag,
        }
        status["stream"] = stream
        status["ready"] = self._connected and self.is_running()
        return status

    # ------------------------------------------------------------- internals

    async def _open(self) -> None:
        """Connect and make the group, retrying with backoff while the broker is away."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                await self._broker.open()
            except BROKER_ERRORS as exc:
                self._lost("open", exc)
                await self.sleep(_jitter(delay))
                delay = min(delay * 2, _BACKOFF_MAX)
                if not self.is_running():
                    return
                continue
            self._connected = True
            return

    async def _handle(self, entry: Entry) -> None:
        if entry.recovered:  # counted now that a handler gets it, not when it was read
            try:
                await self._broker.count_delivery(entry)
            except BROKER_ERRORS as exc:
                self._lost("count", exc)  # handled all the same: at least once
        try:
            await self._handler(entry.data)
        except Retry as retry:
            await self._give_back(entry.id, retry.delay)
            return
        except Exception as exc:
            if entry.deliveries >= self._max_deliveries:
                await self._dead_letter(entry, describe(exc))
            else:
                await self._give_back(entry.id, self._retry_delay)
            raise
        except asyncio.CancelledError:
            raise  # a forced stop: the engine puts the entry back, the stop releases it
        except BaseException:
            await self._give_back(entry.id, 0.0)  # a peer takes it now, not after min_idle
            raise
        self._acks.append(entry.id)
        wake = self._acker_wake
        if wake is not None:
            wake.set()

    def _deliver(self, entries: list[Entry]) -> list[tuple[Entry, str]]:
        """Hold ``entries`` and queue them; returns those to dead-letter unhandled, and why."""
        now = time.monotonic()
        held = self._held
        poison = []
        for entry in entries:
            if entry.id in held or entry.id in self._parked:
                continue  # ours already (read again after an outage, or claimed back)
            if entry.problem is not None:
                poison.append((entry, entry.problem))
                continue
            if entry.deliveries > self._max_deliveries:
                reason = f"delivered {entry.deliveries} times without an ack"
                poison.append((entry, reason))
                continue
            held[entry.id] = now
            QueueConsumer.send(self, entry)
        return poison

    def _let_go(self, ids: list[str]) -> None:
        held = self._held
        for entry_id in ids:
            held.pop(entry_id, None)
        room = self._room
        if room is not None:
            room.set()

    async def _read_loop(self) -> None:
        """Deliver entries: own pending ones first, then new ones and, each
        ``claim_interval``, those idle peers left.

        One loop for every way in, so that what it asks for is the free room
        and the entries held never pass ``maxsize``.
        """
        broker = self._broker
        loop = asyncio.get_running_loop()
        after: str | None = "0"  # own pending entries first: a restart under the same name
        next_claim = loop.time()
        delay = _BACKOFF_FIRST
        room = self._room
        assert room is not None
        while self.is_running():  # on_stop_requested() cancels a read in progress
            # the only loop that adds entries: the room it sees holds until the read returns
            count = min(self._stream_maxsize - len(self._held), 100)
            if count <= 0:
                room.clear()
                await room.wait()
                continue
            now = loop.time()
            claiming = after is None and now >= next_claim
            try:
                if after is not None:
                    entries, after = await broker.read_own(count, after)
                    self._claimed += len(entries)
                elif claiming:
                    next_claim = now + self._claim_interval
                    entries = await broker.claim_idle(self._min_idle, count)
                    self._claimed += len(entries)
                else:
                    block = max(0.001, min(self._block, next_claim - now))
                    entries = await broker.read_new(count, block)
                    self._read += len(entries)
            except BROKER_ERRORS as exc:
                self._lost("read", exc)
                # once back, read the own pending list again: a read whose
                # reply the outage cut gave this consumer entries it never saw
                after = "0"
                await asyncio.sleep(_jitter(delay))
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_FIRST
            self._connected = True
            for entry, reason in self._deliver(entries):
                await self._dead_letter(entry, reason)

    async def _keep_loop(self) -> None:
        """Renew the entries held, and keep those parked for a retry from peers.

        A parked entry (a retry later than ``min_idle``) is released again,
        its idle time zero, until ``min_idle`` before its time, a last time
        then: peers claim it at about its time, never before.
        """
        broker = self._broker
        renew_after = self._min_idle / 3
        while True:
            await asyncio.sleep(min(self._claim_interval, renew_after))
            now = time.monotonic()
            due = [i for i, taken in self._held.items() if now - taken >= renew_after]
            parked = self._parked
            last = [i for i, (until, _) in parked.items() if now >= until]
            due += [
                i for i, (until, renewed) in parked.items() if until > now >= renewed + renew_after
            ]
            if not due and not last:
                continue
            again = [i for i in due if i in parked] + last  # released again: idle zero
            due = [i for i in due if i not in parked]
            try:
                if due:
                    await broker.renew(due, renew_after / 2)
                if again:
                    await broker.release(again, self._min_idle, self._min_idle)
            except BROKER_ERRORS as exc:
                self._lost("renew", exc)
                continue
            self._connected = True
            for entry_id in due:
                if entry_id in self._held:
                    self._held[entry_id] = now
            for entry_id in again:
                if entry_id in parked:
                    parked[entry_id] = (parked[entry_id][0], now)
            for entry_id in last:
                parked.pop(entry_id, None)

    async def _ack_loop(self) -> None:
        """Send one ack for every id queued since the last one; retry while the broker is away."""
        wake = self._acker_wake
        assert wake is not None
        delay = _BACKOFF_FIRST
        while True:
            if not self._acks:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
                continue
            ids, self._acks = self._acks, []
            try:
                await self._broker.ack(ids)
            except BROKER_ERRORS as exc:
                self._acks[:0] = ids
                self._lost("ack", exc)
                await asyncio.sleep(_jitter(delay))
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_FIRST
            self._connected = True
            self._acked += len(ids)
            self._let_go(ids)

    async def _give_back(self, entry_id: str, delay: float) -> None:
        """Let any consumer take the entry again ``delay`` seconds from now."""
        if delay <= self._min_idle:
            await self._release([entry_id], delay)
            return
        # later than min_idle: parked, released again by the keeper (idle
        # time zero) until min_idle before its time (it takes no room meanwhile)
        try:
            await self._broker.release([entry_id], self._min_idle, self._min_idle)
        except BROKER_ERRORS as exc:
            self._lost("release", exc)  # not parked: peers take it after min_idle
        else:
            now = time.monotonic()
            self._parked[entry_id] = (now + delay - self._min_idle, now)
            self._released += 1
        self._let_go([entry_id])

    async def _release(self, ids: list[str], delay: float) -> None:
        """Give entries back; if the broker is away, stop holding them (peers claim them later)."""
        try:
            await self._broker.release(ids, delay, self._min_idle)
        except BROKER_ERRORS as exc:
            self._lost("release", exc)
        else:
            self._released += len(ids)
        self._let_go(ids)

    async def _dead_letter(self, entry: Entry, reason: str) -> None:
        """Dead-letter ``entry``; an error other than an outage (the dead-letter
        key holds another type) stops the worker, the entry still pending."""
        try:
            await self._broker.dead_letter(entry, reason)
        except BROKER_ERRORS as exc:
            self._lost("dead-letter", exc)  # still pending: the next delivery tries again
        else:
            self._dead_lettered += 1
            logger.warning(
                "worker %r dead-lettered entry %s after %d deliveries: %s",
                self.worker_name,
                entry.id,
                entry.deliveries,
                reason,
            )
        finally:
            self._let_go([entry.id])

    def _lost(self, what: str, error: BaseException) -> None:
        if self._connected:
            logger.warning(
                "worker %r lost its broker (%s): %s; retrying", self.worker_name, what, error
            )
        self._connected = False

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        """A helper loop that failed (not a broker outage: a bug) stops the worker."""
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "worker %r: %s failed", self.worker_name, task.get_name(), exc_info=task.exception()
            )
            self.gracefully_stop()

    async def _wind_down(self, helpers: list[asyncio.Task[None]]) -> None:
        """After the drain: stop reading, send the last acks, release what is left."""
        reader, keeper, acker = helpers
        reader.cancel()
        keeper.cancel()
        await asyncio.wait([reader, keeper])
        left = [entry.id for entry in self.take_undelivered()]
        broker = self._broker
        try:
            # within the grace period, but never so short that a busy machine
            # cannot make the round trips (a forced stop cancels again after 1 s)
            bound = max(_WIND_DOWN_MIN, min(self.stopping_grace_period, _WIND_DOWN_MAX))
            async with asyncio.timeout(bound):
                self._closing = True
                wake = self._acker_wake
                assert wake is not None
                wake.set()
                await asyncio.wait([acker])
                if left:
                    await self._release(left, 0.0)
                # what is still pending here was given to this consumer and not
                # handled (a read cancelled by the stop): a peer takes it now
                parked = list(self._parked)
                if parked:  # their delay is cut to min_idle: the keeper stops with this run
                    await broker.release(parked, self._min_idle, self._min_idle)
                held = self._held
                pending = [i for i in await broker.pending_ids(10_000) if i not in held]
                if pending:
                    await broker.release(pending, 0.0, self._min_idle)
                    self._released += len(pending)
        except BROKER_ERRORS as exc:  # TimeoutError included: the bound above
            logger.warning(
                "worker %r stopped with entries pending on the broker (%s): its next start "
                "under the name %r, or a peer after min_idle, takes them",
                self.worker_name,
                describe(exc),
                broker.consumer,
            )
        finally:
            acker.cancel()
            self._held.clear()
            self._parked.clear()
            self._reader = None
            self._connected = False
            await wait_even_if_cancelled([acker])
            await _to_the_end(broker.close())


def _on_data(on_error: OnError[Any]) -> OnError[Entry]:
    """The user's ``on_error`` hears of the entry's data, as the handler did."""
    if on_error == "log" or on_error == "stop":
        return on_error
    assert callable(on_error)
    user = on_error

    def on_entry_error(entry: Entry, error: Exception) -> Awaitable[None] | None:
        return user(entry.data, error)

    return on_entry_error


async def _to_the_end(awaitable: Awaitable[None]) -> None:
    """Await ``awaitable`` to its end even if cancelled meanwhile (then raise the cancel).

    Closing the connections must not be cut short by a second cancel (a
    forced stop cancels again after each grace period).
    """
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(_log_failure)
    await wait_even_if_cancelled([task])


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("closing a broker failed", exc_info=task.exception())


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.5, 1.5)
