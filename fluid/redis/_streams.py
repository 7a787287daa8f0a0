"""Redis Streams: the producer, the broker of ``StreamConsumer``, and the worker.

The broker maps ``fluid/_broker.py``'s protocol onto one consumer group:

| protocol | Redis |
|---|---|
| ``read_new`` | ``XREADGROUP ... COUNT n BLOCK ms STREAMS key >`` on a connection of its own |
| ``read_own`` | ``XPENDING`` of its own name, then ``XRANGE`` by id (no delivery counted) |
| ``claim_idle`` | ``XAUTOCLAIM ... JUSTID``, ``XPENDING`` for the counts, ``XRANGE`` by id |
| ``count_delivery`` | ``XCLAIM ... RETRYCOUNT n JUSTID``, as a recovered entry's handler starts |
| ``ack`` | one ``XACK`` for the batch |
| ``renew`` | ``XCLAIM ... JUSTID`` to itself: the idle time starts again |
| ``release`` | ``XCLAIM ... IDLE <min_idle - delay> JUSTID``: claimable after ``delay`` |
| ``dead_letter`` | ``XADD`` to the dead-letter stream and ``XACK``, in one ``MULTI`` |

redis-py's connection errors become ``ConnectionError`` (the protocol's
word for an unreachable broker); a group that vanished (a server restarted
without persistence) is made again, and the call reports a connection error
so that the consumer retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

import fluid

from .._broker import BrokerFigures, Entry
from .._policy import OnError
from .._stream import Retry, StreamConsumer
from .._validate import check_count
from .._worker import STOPPING_GRACE_PERIOD

__all__ = ["JsonSerializer", "Retry", "Serializer", "StreamConsumerWorker", "StreamProducer"]

_FIELD = b"data"
_ANSWER_WITHIN = 2.0  # seconds past a read's BLOCK before the server counts as gone

RELEASED = "fluid:released"
"""The consumer name released entries are parked under until a consumer claims them."""

# XADD then XACK, atomically: a MULTI would ack the entry even when the XADD
# fails (the key holds another type), losing it; redis.call stops the script.
_DEAD_LETTER = """
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
"""

# XAUTOCLAIM ... JUSTID, its reply (the cursor included) as Redis gives it
_CLAIM = """
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                  'COUNT', ARGV[5], 'JUSTID')
"""
# XCLAIM each entry to the consumer only while the consumer still owns it:
# after renewals that failed (an outage) a peer may have claimed it, and a
# plain XCLAIM would take it back, then the peer's renewal again, and so on
_RENEW = """
local renewed = 0
for i = 4, #ARGV do
    if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[i], 'JUSTID')
        renewed = renewed + 1
    end
end
return renewed
"""
_TEXT_FIELD = "data"
_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


class Serializer(Protocol):
    """How payloads become a stream field and back.

    Example:
        ```python
        class Raw:
            def dumps(self, data: bytes) -> bytes:
                return data

            def loads(self, raw: bytes) -> bytes:
                return raw

        producer = fluid.redis.StreamProducer(url, "images", serializer=Raw())
        ```
    """

    def dumps(self, data: Any) -> bytes | str:
        """The field's value for ``data``."""
        ...

    def loads(self, raw: bytes) -> Any:
        """The payload a field's value holds."""
        ...


class JsonSerializer:
    """The default serializer: compact JSON, UTF-8.

    Example:
        ```python
        serializer = fluid.redis.JsonSerializer()
        assert serializer.loads(serializer.dumps({"id": 1})) == {"id": 1}
        ```
    """

    def dumps(self, data: Any) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode()

    def loads(self, raw: bytes) -> Any:
        return json.loads(raw)


_JSON = JsonSerializer()


def _rows(reply: Any) -> list[Any]:
    """The entries of an ``XREADGROUP`` reply on one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        rows: Any = next(iter(reply.values()))
        if rows and isinstance(rows[0], list) and rows[0] and isinstance(rows[0][0], tuple):
            rows = rows[0]
        return list(rows)
    return list(reply[0][1])


def _id_key(entry_id: str) -> tuple[int, int]:
    """A stream id's order: ``"<ms>-<seq>"`` compared as numbers, not as text."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check_client(redis: object) -> None:
    if not isinstance(redis, str | aioredis.Redis):
        raise TypeError(
            f"redis must be a URL string or a redis.asyncio.Redis client, got {redis!r}"
        )
    if isinstance(redis, str):
        aioredis.ConnectionPool.from_url(redis)  # a bad URL fails here, at the call


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _new_client(redis: str | aioredis.Redis, *, blocking: bool = False) -> aioredis.Redis:
    """A client fluid owns: from the URL, or a pool of its own with the given client's settings."""
    if isinstance(redis, str):
        return aioredis.Redis.from_url(
            redis,
            socket_connect_timeout=5,
            socket_timeout=None if blocking else 10,
        )
    pool = redis.connection_pool
    settings = dict(pool.connection_kwargs)
    if blocking:
        # a blocking read waits up to `block` seconds: a socket timeout (redis-py
        # 8 has 5 s by default) would cut it and report a broker outage each time
        settings["socket_timeout"] = None
    return aioredis.Redis(
        connection_pool=aioredis.ConnectionPool(connection_class=pool.connection_class, **settings)
    )


@contextlib.asynccontextmanager
async def _reachable(what: str) -> AsyncIterator[None]:
    """Turn redis-py's connection errors into ``ConnectionError``."""
    try:
        yield
    except _UNREACHABLE as exc:
        if isinstance(exc, ConnectionError):
            raise
        raise ConnectionError(f"redis unreachable ({what}): {exc}") from exc


class StreamProducer:
    """Appends messages to a Redis stream (``XADD``).

    Args:
        redis: a URL (the producer owns its client: close it with
            ``aclose()`` or ``async with``) or a ``redis.asyncio.Redis``
            client (used, never closed).
        stream: the stream's key.
        maxlen: keep about this many entries (``MAXLEN ~``: Redis trims whole
            nodes, so a few more may stay); None keeps everything.
        serializer: how payloads are encoded; JSON by default.

    Raises:
        TypeError: ``redis`` is neither a URL nor a client.
        ValueError: a bad URL, an empty stream name, or ``maxlen`` below 1.

    Example:
        ```python
        async with fluid.redis.StreamProducer("redis://localhost", "orders") as orders:
            entry_id = await orders.send({"id": 1, "total": 30})
        ```
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        stream: str,
        *,
        maxlen: int | None = None,
        serializer: Serializer | None = None,
    ) -> None:
        _check_client(redis)
        self.stream = _check_name("stream", stream)
        self.maxlen = None if maxlen is None else check_count("maxlen", maxlen, 1)
        self._serializer = _JSON if serializer is None else serializer
        self._owned = isinstance(redis, str)
        self._redis = aioredis.Redis.from_url(redis) if isinstance(redis, str) else redis

    async def send(self, data: Any) -> str:
        """Append ``data``; returns the entry's id.

        Raises:
            ConnectionError: Redis is unreachable; the entry was not appended
                (or, if the connection broke after Redis took it, it may
                have been: a retry can append it twice).
        """
        raw = self._serializer.dumps(data)
        async with _reachable("XADD"):
            entry_id = await self._redis.xadd(
                self.stream, {_FIELD: raw}, maxlen=self.maxlen, approximate=True
            )
        return _text(entry_id)

    async def send_many(self, items: Iterable[Any]) -> list[str]:
        """Append every item in one round trip (a pipeline); returns their ids in order.

        Example:
            ```python
            ids = await producer.send_many({"id": n} for n in range(100))
            ```
        """
        dumps = self._serializer.dumps
        raws = [dumps(data) for data in items]  # the items' own errors stay theirs
        async with _reachable("XADD"), self._redis.pipeline(transaction=False) as pipe:
            for raw in raws:
                pipe.xadd(self.stream, {_FIELD: raw}, maxlen=self.maxlen, approximate=True)
            ids = await pipe.execute()
        return [_text(i) for i in ids]

    async def aclose(self) -> None:
        """Close the client if the producer made it from a URL."""
        if self._owned:
            await self._redis.aclose()

    async def __aenter__(self) -> StreamProducer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RedisBroker:
    """One consumer of a consumer group on a Redis stream (``fluid/_broker.py``'s protocol)."""

    def __init__(
        self,
        redis: str | aioredis.Redis,
        stream: str,
        group: str,
        consumer: str | Callable[[], str],
        serializer: Serializer,
        dead_letter_stream: str,
    ) -> None:
        self._source = redis
        self._stream = stream
        self._group = group
        self._name = consumer
        self._consumer = consumer if isinstance(consumer, str) else ""
        self._serializer = serializer
        self._dead = dead_letter_stream
        self._redis: aioredis.Redis | None = None
        self._reader: aioredis.Redis | None = None
        self._claim_from = "0-0"  # XAUTOCLAIM's cursor: the scan goes on where it stopped
        self._dead_letter_script: Any = None
        self._claim_script: Any = None
        self._renew_script: Any = None

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def group(self) -> str:
        return self._group

    @property
    def consumer(self) -> str:
        return self._consumer

    @property
    def redis(self) -> aioredis.Redis:
        client = self._redis
        if client is None:
            raise ConnectionError("the broker is closed")
        return client

    async def open(self) -> None:
        if not isinstance(self._name, str):
            self._consumer = self._name()
        if self._redis is None:
            # pools of their own, also for a given client (with its settings):
            # the worker's concurrent commands never wait on a pool the
            # application sized for itself, and a stop closes them all
            self._redis = _new_client(self._source)
            self._reader = _new_client(self._source, blocking=True)
            self._dead_letter_script = self._redis.register_script(_DEAD_LETTER)
            self._claim_script = self._redis.register_script(_CLAIM)
            self._renew_script = self._redis.register_script(_RENEW)
        await self._make_group()

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        client, self._redis = self._redis, None
        try:
            if reader is not None:
                await reader.aclose(close_connection_pool=True)
        finally:  # each client closed, even if closing the other failed
            if client is not None:
                await client.aclose(close_connection_pool=True)

    async def _make_group(self) -> None:
        async with _reachable("XGROUP CREATE"):
            try:
                await self.redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        async with _reachable(what):
            try:
                yield
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._make_group()  # the server lost it (restarted without persistence)
                raise ConnectionError(f"group {self._group!r} was gone: made again") from exc

    async def read_new(self, count: int, block: float) -> list[Entry]:
        reader = self._reader
        if reader is None:
            raise ConnectionError("the broker is closed")
        # bounded: a server that stopped answering (frozen, partitioned) is an
        # outage to report, not a read that waits for ever
        async with self._call("XREADGROUP"), asyncio.timeout(block + _ANSWER_WITHIN):
            reply: Any = await reader.xreadgroup(
                self._group,
                self._consumer,
                {self._stream: ">"},
                count=count,
                block=max(1, int(block * 1000)),
            )
        return await self._entries(_rows(reply))

    async def read_own(self, count: int, after: str) -> tuple[list[Entry], str | None]:
        # XPENDING, not XREADGROUP <id>: reading the pending list again counts
        # a delivery of every entry read, handled or not
        async with self._call("XPENDING"):
            pending: Any = await self.redis.xpending_range(
                self._stream,
                self._group,
                min="-" if after == "0" else f"({after}",
                max="+",
                count=count,
                consumername=self._consumer,
            )
        if not pending:
            return [], None
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return await self._recovered(counts), _text(pending[-1]["message_id"])

    async def claim_idle(self, min_idle: float, count: int) -> list[Entry]:
        async with self._call("XAUTOCLAIM"):
            # JUSTID: taking them counts no delivery (count_delivery does, at
            # the handler). Through a script, to keep the cursor that redis-py
            # drops with JUSTID: Redis scans at most 10 x COUNT entries a call,
            # so starting at 0-0 each time never reaches the entries behind
            # many that live consumers hold.
            reply: Any = await self._claim_script(
                keys=[self._stream],
                args=[self._group, self._consumer, int(min_idle * 1000), self._claim_from, count],
            )
        self._claim_from = _text(reply[0])  # "0-0" once the scan went round
        ids = [_text(i) for i in reply[1]]
        if not ids:
            return []
        async with self._call("XPENDING"):
            pending: Any = await self.redis.xpending_range(
                self._stream,
                self._group,
                min=min(ids, key=_id_key),
                max=max(ids, key=_id_key),
                count=len(ids) + 1000,
                consumername=self._consumer,
            )
        claimed = set(ids)
        counts = {
            entry_id: int(p["times_delivered"])
            for p in pending
            if (entry_id := _text(p["message_id"])) in claimed
        }
        return await self._recovered(counts)

    async def count_delivery(self, entry: Entry) -> None:
        async with self._call("XCLAIM"):
            await self.redis.xclaim(
                self._stream,
                self._group,
                self._consumer,
                min_idle_time=0,
                message_ids=[entry.id],
                retrycount=entry.deliveries,
                justid=True,
            )

    async def _recovered(self, counts: dict[str, int]) -> list[Entry]:
        """The entries of ``counts`` (id -> deliveries so far), read by id, in order."""
        ids = sorted(counts, key=_id_key)
        async with self._call("XRANGE"), self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(self._stream, min=entry_id, max=entry_id, count=1)
            replies: list[Any] = await pipe.execute()
        rows = [
            reply[0] if reply else (entry_id, None)
            for entry_id, reply in zip(ids, replies, strict=True)
        ]
        entries = await self._entries(rows)
        for entry in entries:
            entry.deliveries = counts[entry.id] + 1  # this one, counted when handled
            entry.recovered = True
        return entries

    async def _entries(self, rows: list[Any]) -> list[Entry]:
        """Decode ``rows``; ack the entries trimmed away, dead-letter the undecodable."""
        if not rows:
            return []
        entries: list[Entry] = []
        gone: list[str] = []
        loads = self._serializer.loads
        for raw_id, fields in rows:
            entry_id = raw_id.decode() if type(raw_id) is bytes else raw_id
            if not fields:  # trimmed (MAXLEN) or deleted after it was delivered
                gone.append(entry_id)
                continue
            raw = fields.get(_FIELD)
            if raw is None:  # a client made with decode_responses=True
                raw = fields.get(_TEXT_FIELD)
            try:
                data = loads(raw)
            except Exception as exc:  # a payload nobody can read: never handed out
                problem = f"cannot decode: {type(exc).__name__}: {exc}"
                entries.append(Entry(entry_id, None, raw=fields, problem=problem))
                continue
            entries.append(Entry(entry_id, data, raw=fields))
        if gone:
            await self.ack(gone)
        return entries

    async def ack(self, ids: Sequence[str]) -> None:
        async with self._call("XACK"):
            await self.redis.xack(self._stream, self._group, *ids)

    async def renew(self, ids: Sequence[str], min_idle: float) -> None:
        # only the entries this consumer still owns (see _RENEW): one taken by
        # a peer meanwhile stays the peer's; its handler here goes on, and the
        # first of the two to finish acks it
        async with self._call("XCLAIM"):
            await self._renew_script(
                keys=[self._stream],
                args=[self._group, self._consumer, int(min_idle * 1000), *ids],
            )

    async def release(self, ids: Sequence[str], delay: float, min_idle: float) -> None:
        idle_ms = max(0, int((min_idle - delay) * 1000))
        async with self._call("XCLAIM"):
            # to the group's parking name, not to itself: its own pending list
            # (read again at each start) then holds only work it really held
            await self.redis.xclaim(
                self._stream,
                self._group,
                RELEASED,
                min_idle_time=0,
                message_ids=list(ids),
                idle=idle_ms,
                justid=True,
            )

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        fields: list[Any] = [
            b"id",
            entry.id,
            b"stream",
            self._stream,
            b"group",
            self._group,
            b"consumer",
            self._consumer,
            b"deliveries",
            entry.deliveries,
            b"error",
            reason,
        ]
        raw = entry.raw
        if isinstance(raw, dict):  # the entry's own fields, as read: nothing re-encoded
            for key, value in raw.items():
                name = key.encode() if isinstance(key, str) else key
                fields += [name if name == _FIELD else b"field:" + name, value]
        else:
            fields += [_FIELD, self._serializer.dumps(entry.data)]
        async with self._call("XADD+XACK"):
            await self._dead_letter_script(
                keys=[self._dead, self._stream], args=[self._group, entry.id, *fields]
            )

    async def pending_ids(self, count: int) -> list[str]:
        async with self._call("XPENDING"):
            pending: Any = await self.redis.xpending_range(
                self._stream,
                self._group,
                min="-",
                max="+",
                count=count,
                consumername=self._consumer,
            )
        return [_text(p["message_id"]) for p in pending]

    async def figures(self) -> BrokerFigures:
        async with self._call("XPENDING"):
            summary: Any = await self.redis.xpending(self._stream, self._group)
            groups: Any = await self.redis.xinfo_groups(self._stream)
        own = 0
        for consumer in summary.get("consumers") or []:
            if _text(consumer["name"]) == self._consumer:
                own = int(consumer["pending"])
        lag = None
        for group in groups:
            if _text(group["name"]) == self._group:
                value = group.get("lag")
                lag = None if value is None else int(value)
        return BrokerFigures(own_pending=own, lag=lag)


def default_consumer_name(worker_name: str) -> str:
    """``host-worker``, plus ``-N`` in the N-th child of a prefork: the same after a restart.

    A respawned prefork child keeps its number, so it keeps its name and
    reads its predecessor's pending entries at once.
    """
    name = f"{socket.gethostname()}-{worker_name}"
    child = fluid.prefork_child()
    return name if child is None else f"{name}-{child.id}"


class StreamConsumerWorker(StreamConsumer):
    """A fluid worker consuming a Redis stream as one member of a consumer group.

    Every replica (process, machine, prefork child) runs one with the same
    ``stream`` and ``group``: Redis gives each entry to one of them. It is a
    fluid worker in every respect (``concurrency``, ``on_error``,
    ``status()``, supervision, prefork), and delivers **at least once**:

    * an entry is acked only after its handler returned (one ``XACK`` per
      batch); a crash before that means it is delivered again;
    * at start it first handles what its name left pending (a respawned
      process resumes at once); entries of a consumer that died are taken
      over after ``min_idle`` seconds; a handler running long keeps its
      entries (they are renewed every ``min_idle / 3``);
    * a failing entry is delivered again after ``retry_delay`` (or the
      delay of a [`Retry`][fluid.redis.Retry] the handler raised); after
      ``max_deliveries`` it goes to ``dead_letter_stream`` with the error,
      and is acked;
    * at most ``maxsize`` entries are held unacked (buffered, in flight, or
      waiting for the ack): that bounds the duplicates a crash can cause;
    * a graceful stop stops reading, drains what it holds within the grace
      period, sends the last acks, and releases what is left for a peer.

    Args:
        handler: an async function given each entry's payload.
        redis: a URL, or a ``redis.asyncio.Redis`` client whose settings
            the worker's own connections take (it is never closed, and the
            worker's commands never wait on its pool). The worker's
            connections open with each run and close with its stop.
        stream: the stream's key (made if missing).
        group: the consumer group (made if missing, from the stream's start).
        consumer: this consumer's name in the group; by default
            ``<host>-<worker name>`` (``-<N>`` in prefork child N). It must
            stay the same across restarts of the same replica and differ
            between replicas.
        name: the worker's name; by default the handler's.
        stopping_grace_period: seconds given to a graceful stop (and drain).
        on_error: ``"log"``, ``"stop"`` or a function ``(payload, error)``,
            as for [`QueueConsumerWorker`][fluid.QueueConsumerWorker].
        concurrency: how many entries are handled at once.
        maxsize: the most entries held unacked at once.
        drain: on a graceful stop, handle what is held before ending (else
            release it at once).
        min_idle: seconds after which an entry a consumer holds without
            renewing it may be taken by another.
        claim_interval: seconds between looks for idle entries (and
            renewals); by default ``min(min_idle / 2, 5)``.
        max_deliveries: deliveries after which a failing entry is dead-lettered.
        retry_delay: seconds before a failed entry may be delivered again.
        block: seconds a read waits for new entries (the idle cost is one
            read per ``block`` and one claim per ``claim_interval``).
        dead_letter_stream: where dead letters go; ``<stream>:dead`` by default.
        serializer: how payloads are decoded; JSON by default.

    Raises:
        TypeError: ``handler`` is not an async function, or ``redis`` is
            neither a URL nor a client.
        ValueError: a bad URL, an empty stream or group, or a count or
            number of seconds out of range.

    Example:
        ```python
        async def bill(order: dict) -> None:
            await payments.charge(order)

        billing = fluid.redis.StreamConsumerWorker(
            bill, redis="redis://localhost", stream="orders", group="billing",
            concurrency=8,
        )
        fluid.run(billing)
        ```
    """

    __slots__ = ()

    def __init__(
        self,
        handler: Callable[[Any], Awaitable[object]],
        *,
        redis: str | aioredis.Redis,
        stream: str,
        group: str,
        consumer: str | None = None,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        on_error: OnError[Any] = "log",
        concurrency: int = 1,
        maxsize: int = 100,
        drain: bool = True,
        min_idle: float = 30.0,
        claim_interval: float | None = None,
        max_deliveries: int = 5,
        retry_delay: float = 0.0,
        block: float = 5.0,
        dead_letter_stream: str | None = None,
        serializer: Serializer | None = None,
    ) -> None:
        _check_client(redis)
        stream = _check_name("stream", stream)
        group = _check_name("group", group)
        if consumer is not None:
            _check_name("consumer", consumer)
        dead = f"{stream}:dead" if dead_letter_stream is None else dead_letter_stream
        _check_name("dead_letter_stream", dead)
        if dead == stream:  # each dead letter would be read back as a new entry
            raise ValueError(f"dead_letter_stream must differ from the stream {stream!r}")
        broker = RedisBroker(
            redis,
            stream,
            group,
            consumer if consumer is not None else lambda: default_consumer_name(self.worker_name),
            _JSON if serializer is None else serializer,
            dead,
        )
        super().__init__(
            broker,
            handler,
            name,
            stopping_grace_period,
            on_error=on_error,
            concurrency=concurrency,
            maxsize=maxsize,
            drain=drain,
            min_idle=min_idle,
            claim_interval=claim_interval,
            max_deliveries=max_deliveries,
            retry_delay=retry_delay,
            block=block,
        )
