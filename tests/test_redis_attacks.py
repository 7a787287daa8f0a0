"""fluid.redis attacked as an adversarial user would, through its public API only.

Each test is one attack against the real server (the ``redis_url`` and
``redis_server`` fixtures). The review found twelve defects, each first a
strict xfail with its precise cause and now fixed: an XAUTOCLAIM scan that
never went past the entries live peers hold, a dead letter whose MULTI
acked an entry it failed to write, a dead-letter stream equal to the
stream, undecodable and foreign entries dead-lettered silently, re-encoded
or stopping the worker, the reader's pool of a given client left open, a
pool limit of a given client taken for an outage, a frozen server never
reported, restarts cutting retry delays short, a BaseException's entry held
until min_idle, and a producer's items' errors reported as outages. The
attacks that held stay as regression tests.

Redis itself is the oracle wherever it can be (``XPENDING``, ``XRANGE``,
``CLIENT LIST``, ``INFO commandstats``): what the consumer says of itself is
checked against it, never taken on trust. Every wait has a deadline; no
fixed sleep synchronises anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import fluid
import fluid.redis

from ._redis_server import RedisServer

BOUND = 10.0  # a hang, not a slow machine, fails these
STREAM = "jobs"
GROUP = "workers"


# ------------------------------------------------------------------ helpers


def _worker(
    handler: Callable[[Any], Awaitable[object]], redis: str | aioredis.Redis, **options: Any
) -> fluid.redis.StreamConsumerWorker:
    options.setdefault("stream", STREAM)
    options.setdefault("group", GROUP)
    options.setdefault("block", 0.2)
    return fluid.redis.StreamConsumerWorker(handler, redis=redis, **options)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = BOUND
) -> None:
    """Poll ``check`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def send(url: str, payloads: list[Any], stream: str = STREAM) -> list[str]:
    async with fluid.redis.StreamProducer(url, stream) as producer:
        return await producer.send_many(payloads)


async def pending(redis: aioredis.Redis, stream: str = STREAM, group: str = GROUP) -> list[Any]:
    """Every entry pending in the group (``XPENDING`` rows)."""
    try:
        rows: Any = await redis.xpending_range(stream, group, min="-", max="+", count=10_000)
    except aioredis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return []
    return list(rows)


async def no_pending(redis: aioredis.Redis) -> bool:
    return not await pending(redis)


async def dead_letters(redis: aioredis.Redis, stream: str = f"{STREAM}:dead") -> list[Any]:
    rows: Any = await redis.xrange(stream)
    return [fields for _, fields in rows]


async def command_calls(redis: aioredis.Redis, command: str) -> int:
    stats: Any = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def connections(redis: aioredis.Redis) -> int:
    """Clients connected to the server, not counting the one asking."""
    return len(await redis.client_list()) - 1


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """The server stopped by SIGSTOP: connections stay open, nothing answers (a partition)."""
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def reaping_the_reader_leak() -> Iterator[None]:
    """Around a test giving the worker a client: its reading connection may be left open
    (test_a_stopped_worker_leaves_no_connection_open[given-client]); collect it here, its
    ResourceWarning ignored, so that it is not reported in a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


class Boom(BaseException):
    """A BaseException that is neither a cancellation nor KeyboardInterrupt/SystemExit."""


# -------------------------------------------------------- takeover and claims


@pytest.mark.parametrize(
    "room",
    [
        pytest.param(100, id="room-scans-past-the-live-ones"),
        pytest.param(
            5,
            id="room-5",
        ),
    ],
)
async def test_a_dead_consumer_s_entries_behind_many_live_ones_are_taken_over(
    redis_url: str, client: aioredis.Redis, room: int
) -> None:
    """A live peer holds 60 long-running entries (renewed), a dead one holds 5 after them.

    The taker's ``XAUTOCLAIM ... COUNT n`` scans at most ``10 * n`` entries
    of the group's pending list per call (Redis 7); starting every call at
    ``0-0`` it scans the live peer's renewed entries again and again and
    never reaches the dead consumer's.
    """
    live_started: set[int] = set()
    gate = asyncio.Event()

    async def slow(n: int) -> None:
        live_started.add(n)
        await gate.wait()

    taken: list[int] = []

    async def take(n: int) -> None:
        taken.append(n)

    options: dict[str, Any] = {"min_idle": 0.3, "claim_interval": 0.03}
    live = _worker(slow, redis_url, consumer="live", maxsize=60, concurrency=60, **options)
    taker = _worker(take, redis_url, consumer="taker", maxsize=room, **options)
    async with asyncio.timeout(BOUND):
        await send(redis_url, list(range(60)))
        await live.startup()
        try:
            await eventually(holds(lambda: len(live_started) == 60), "the live peer holds 60")
            await send(redis_url, list(range(60, 65)))
            await client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=5)
            died = time.monotonic()
            async with taker:
                # min_idle + claim_interval + 0.5 s is the figure to reach; 2 s is generous
                with contextlib.suppress(AssertionError):
                    await eventually(holds(lambda: len(taken) == 5), "taken over", timeout=2.0)
                waited = time.monotonic() - died
        finally:
            gate.set()
            await live.shutdown()
    assert sorted(taken) == list(range(60, 65)), f"taken {taken} after {waited:.1f}s"


async def test_a_slot_claim_shared_by_three_schedules_survives_one_of_them_stopping(
    redis_url: str, client: aioredis.Redis
) -> None:
    """One RedisSlotClaim for three schedules: a schedule stopping closes the shared
    client; the others' claims go on without a failure."""
    claim = fluid.redis.RedisSlotClaim(redis_url)
    runs: Counter[str] = Counter()

    def tick(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            runs[name] += 1

        return run

    schedules = [
        fluid.ScheduledWorker(tick(name), interval=0.02, claim=claim, name=name)
        for name in ("a", "b", "c")
    ]
    tree = fluid.Workers(*schedules, strategy="one_for_one")
    async with asyncio.timeout(BOUND), tree:
        await eventually(holds(lambda: min(runs.values(), default=0) >= 3), "all run")
        await tree.stop_workers("a")
        seen = dict(runs)
        await eventually(
            holds(lambda: runs["b"] >= seen["b"] + 5 and runs["c"] >= seen["c"] + 5),
            "b and c go on after a stopped",
        )
        figures = [(await s.status())["schedule"]["claims"] for s in schedules[1:]]
    for claims in figures:
        assert claims["failed"] == 0, figures
        assert claims["won"] >= 5
    await eventually(lambda: _clients_at_most(client, 0), "the shared client closed")


async def _clients_at_most(redis: aioredis.Redis, count: int) -> bool:
    return await connections(redis) <= count


# ------------------------------------------------------ dead letters, poison


async def test_an_entry_that_cannot_be_dead_lettered_is_not_acked(
    redis_url: str, client: aioredis.Redis
) -> None:
    await client.set(f"{STREAM}:dead", "somebody else's key")
    failures: list[object] = []

    async def fail(n: int) -> None:
        failures.append(n)
        raise ValueError("poison")

    worker = _worker(fail, redis_url, max_deliveries=1, min_idle=60)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        try:
            ids = await send(redis_url, [1])
            await eventually(holds(lambda: failures == [1]), "handled once")
            await eventually(
                holds(lambda: worker.queue_status()["failed"] == 1 or worker.is_stopped()),
                "the failure booked",
            )
        finally:
            with contextlib.suppress(Exception):
                await worker.shutdown()
    # never dead-lettered (the key is not a stream): then it must still be pending
    assert [_text(row["message_id"]) for row in await pending(client)] == ids


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_a_dead_letter_stream_equal_to_the_stream_is_refused(redis_url: str) -> None:
    async def handle(n: int) -> None:
        pass

    with pytest.raises(ValueError, match="dead_letter_stream"):
        _worker(handle, redis_url, dead_letter_stream=STREAM)


async def test_an_entry_of_another_producer_is_dead_lettered_and_the_worker_goes_on(
    redis_url: str, client: aioredis.Redis
) -> None:
    """Fields other than ``data``, or a payload that is not JSON: dead-lettered, with a
    reason, never handed to the handler, never stopping the worker."""
    got: list[Any] = []

    async def handle(data: Any) -> None:
        got.append(data)

    worker = _worker(handle, redis_url)
    async with asyncio.timeout(BOUND), worker:
        await client.xadd(STREAM, {"payload": "x", "kind": "other"})
        await client.xadd(STREAM, {"data": b"\xff not json"})
        await send(redis_url, [{"ok": 1}])
        await eventually(holds(lambda: got == [{"ok": 1}]), "the good one handled")
        await eventually(lambda: _count_dead(client, 2), "two dead letters")
        await eventually(lambda: no_pending(client), "nothing pending")
        assert worker.is_running()
    letters = await dead_letters(client)
    assert all(b"cannot decode" in fields[b"error"] for fields in letters)
    assert letters[1][b"data"] == b"\xff not json"


async def test_an_undecodable_entry_is_counted_dead_lettered(
    redis_url: str, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async def handle(data: Any) -> None:
        pass

    worker = _worker(handle, redis_url)
    async with asyncio.timeout(BOUND), worker:
        await client.xadd(STREAM, {"data": b"{not json"})
        await eventually(lambda: _count_dead(client, 1), "dead-lettered")
        figures = (await worker.status())["stream"]
    assert figures["dead_lettered"] == 1, figures
    assert "dead-lettered" in caplog.text


async def _count_dead(redis: aioredis.Redis, count: int) -> bool:
    return len(await dead_letters(redis)) == count


async def test_the_dead_letter_of_a_foreign_entry_keeps_its_fields(
    redis_url: str, client: aioredis.Redis
) -> None:
    async def handle(data: Any) -> None:
        pass

    worker = _worker(handle, redis_url)
    async with asyncio.timeout(BOUND), worker:
        await client.xadd(STREAM, {"payload": "order 7"})
        await eventually(lambda: _count_dead(client, 1), "dead-lettered")
    (fields,) = await dead_letters(client)
    assert b"order 7" in b" ".join(v for v in fields.values() if isinstance(v, bytes)), fields


class Raw:
    """A serializer of bytes as they are (the Serializer protocol's own example)."""

    def dumps(self, data: bytes) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError(f"Raw serializes bytes only, got {type(data).__name__}")
        return data

    def loads(self, raw: bytes) -> bytes:
        if not isinstance(raw, bytes):
            raise TypeError(f"Raw reads bytes only, got {type(raw).__name__}")
        return raw


async def test_a_foreign_entry_does_not_stop_a_worker_with_its_own_serializer(
    redis_url: str, client: aioredis.Redis
) -> None:
    got: list[bytes] = []

    async def handle(data: bytes) -> None:
        got.append(data)

    worker = _worker(handle, redis_url, serializer=Raw())
    async with asyncio.timeout(BOUND):
        await worker.startup()
        try:
            await client.xadd(STREAM, {"payload": "x"})
            await client.xadd(STREAM, {"data": b"fine"})
            await eventually(holds(lambda: got == [b"fine"] or worker.is_stopped()), "handled")
            running = worker.is_running()
        finally:
            with contextlib.suppress(Exception):
                await worker.shutdown()
    assert running
    assert got == [b"fine"]


# ----------------------------------------------------------- supervision


async def test_a_supervised_consumer_stopping_on_errors_loses_nothing_and_parks_the_poison(
    redis_url: str, client: aioredis.Redis
) -> None:
    """``on_error="stop"``, concurrency 3, in a tree that restarts it: each poison run
    stops the worker, the tree restarts it, the restarted run reads its own pending
    list first; the poison is dead-lettered after ``max_deliveries``, the rest handled,
    nothing left pending, no task or connection left behind."""
    handled: Counter[int] = Counter()

    async def handle(n: int) -> None:
        if n == 7:
            raise ValueError("poison")
        handled[n] += 1

    worker = _worker(
        handle,
        redis_url,
        consumer="c",
        on_error="stop",
        concurrency=3,
        maxsize=10,
        max_deliveries=3,
        min_idle=60,
    )
    tree = fluid.Workers(
        worker,
        strategy="one_for_one",
        max_restarts=20,
        period=60,
        backoff=fluid.Backoff(initial=0, maximum=0.01),
    )
    baseline = await connections(client)
    async with asyncio.timeout(BOUND):
        async with tree:
            await send(redis_url, list(range(30)))
            await eventually(lambda: _count_dead(client, 1), "the poison dead-lettered")
            await eventually(holds(lambda: len(handled) == 29), "the rest handled")
            await eventually(lambda: no_pending(client), "nothing pending")
            await eventually(holds(worker.is_running), "running again")
            await eventually(lambda: _connected(worker), "its new run reached Redis")
            status = await worker.status()
            assert status["ready"] is True
            assert status["stream"]["held"] == 0
            assert tree.is_running()
            restarts = worker.restarts
        await eventually(lambda: _clients_at_most(client, baseline), "connections closed")
    assert restarts == 3  # one stop per delivery of the poison
    assert set(handled) == set(range(30)) - {7}
    (letter,) = await dead_letters(client)
    assert letter[b"deliveries"] == b"3"
    assert letter[b"error"] == b"ValueError: poison"


async def test_a_handler_raising_a_base_exception_gives_its_entry_back_at_once(
    redis_url: str, client: aioredis.Redis
) -> None:
    async def handle(n: int) -> None:
        if n == 0:
            raise Boom

    worker = _worker(handle, redis_url, consumer="c", min_idle=60)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        await send(redis_url, [0, 1, 2])
        with pytest.raises(Boom):
            await worker.wait_for_shutdown()
    rows = await pending(client)
    assert [int(row["times_delivered"]) for row in rows] == [1] * len(rows)
    assert rows, "nothing pending: the entries are lost"
    # released: idle for min_idle, so a peer's next claim takes them
    idle = [int(row["time_since_delivered"]) for row in rows]
    assert min(idle) >= 59_000, idle


async def test_a_handler_that_stops_its_own_worker_is_acked_and_the_rest_drained(
    redis_url: str, client: aioredis.Redis
) -> None:
    got: list[int] = []
    worker: fluid.redis.StreamConsumerWorker

    async def handle(n: int) -> None:
        got.append(n)
        if n == 2:
            worker.gracefully_stop()

    worker = _worker(handle, redis_url, consumer="c", min_idle=60, maxsize=50)
    async with asyncio.timeout(BOUND):
        await send(redis_url, list(range(20)))
        await worker.startup()
        await worker.wait_for_shutdown()
    assert worker.worker_state is fluid.WorkerState.STOPPED
    # whatever it had read was drained (handled and acked); the rest was never read
    assert got == list(range(len(got)))
    assert len(got) >= 3
    assert await no_pending(client)
    assert (await client.xinfo_groups(STREAM))[0]["lag"] == 20 - len(got)


async def test_two_workers_under_one_consumer_name_lose_nothing(
    redis_url: str, client: aioredis.Redis
) -> None:
    """A misconfiguration (two replicas, one name): duplicates allowed, no loss."""
    got: Counter[int] = Counter()

    def handler(delay: float) -> Callable[[int], Awaitable[None]]:
        async def handle(n: int) -> None:
            await asyncio.sleep(delay)
            got[n] += 1

        return handle

    options: dict[str, Any] = {"consumer": "same", "min_idle": 0.5, "claim_interval": 0.05}
    a = _worker(handler(0.001), redis_url, name="a", concurrency=4, maxsize=8, **options)
    b = _worker(handler(0.002), redis_url, name="b", concurrency=2, maxsize=8, **options)
    total = 200
    async with asyncio.timeout(BOUND):
        await a.startup()
        await b.startup()
        try:
            await send(redis_url, list(range(total)))
            await eventually(holds(lambda: len(got) >= total // 3), "both working")
            await b.shutdown()  # releases "its" pending: a's entries too
            await b.startup()
            await eventually(holds(lambda: len(got) == total), "everything handled")
            await eventually(lambda: no_pending(client), "nothing pending")
        finally:
            await a.shutdown()
            await b.shutdown()
    assert set(got) == set(range(total))


# ------------------------------------------------------- clients given by users


async def _full_round(
    redis: str | aioredis.Redis, observer: aioredis.Redis, **options: Any
) -> fluid.StreamStatus:
    """Handle, fail into the dead letters, recover a dead peer's entry; return the figures."""
    got: list[Any] = []

    async def handle(data: Any) -> None:
        if data == {"bad": True}:
            raise ValueError("bad")
        got.append(data)

    await observer.xgroup_create(options.get("stream", STREAM), GROUP, id="0", mkstream=True)
    stream = options.get("stream", STREAM)
    async with fluid.redis.StreamProducer(redis, stream) as producer:
        await producer.send("from a dead peer")
    await observer.xreadgroup(GROUP, "dead", {stream: ">"}, count=1)
    worker = _worker(
        handle,
        redis,
        consumer="c",
        max_deliveries=2,
        min_idle=0.2,
        claim_interval=0.03,
        **options,
    )
    async with asyncio.timeout(BOUND), worker:
        async with fluid.redis.StreamProducer(redis, stream) as producer:
            ids = await producer.send_many([{"n": 1}, {"bad": True}, [2]])
        assert all(isinstance(i, str) for i in ids)
        await eventually(holds(lambda: len(got) == 3), "handled")
        await eventually(lambda: no_pending_in(observer, stream), "all acked")
        figures = (await worker.status())["stream"]
        assert figures["connected"]
        assert figures["own_pending"] == 0
        assert figures["lag"] == 0
    assert sorted(map(str, got)) == sorted(map(str, ["from a dead peer", {"n": 1}, [2]]))
    (letter,) = await dead_letters(observer, f"{stream}:dead")
    assert letter[b"error"] == b"ValueError: bad"
    assert letter[b"data"] == b'{"bad":true}'
    return figures


async def no_pending_in(redis: aioredis.Redis, stream: str) -> bool:
    return not await pending(redis, stream)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"decode_responses": True}, id="decode_responses"),
        pytest.param({"protocol": 3}, id="resp3"),
        pytest.param({"protocol": 3, "decode_responses": True}, id="resp3-decoded"),
    ],
)
async def test_a_given_client_with_other_reply_settings_works_throughout(
    redis_url: str, client: aioredis.Redis, settings: dict[str, Any]
) -> None:
    given = aioredis.Redis.from_url(redis_url, **settings)
    try:
        with reaping_the_reader_leak():
            figures = await _full_round(given, client)
        assert await given.ping()  # used, never closed
    finally:
        await given.aclose()
    assert figures["claimed"] >= 1  # the dead peer's entry (and the failed one, again)
    assert figures["dead_lettered"] == 1


async def test_a_url_with_a_user_a_password_and_a_db_index(
    redis_server: RedisServer, redis_url: str, client: aioredis.Redis
) -> None:
    await client.acl_setuser(
        "alice", enabled=True, passwords=["+s3cr3t:@/x"], keys=["*"], commands=["+@all"]
    )
    try:
        url = f"redis://alice:s3cr3t%3A%40%2Fx@127.0.0.1:{redis_server.port}/3"
        in_db3 = aioredis.Redis.from_url(url)
        try:
            await _full_round(url, in_db3)
        finally:
            await in_db3.aclose()
        assert await client.exists(STREAM) == 0  # all of it in db 3, none in db 0
    finally:
        await client.acl_deluser("alice")


async def test_a_stream_key_with_special_characters(redis_url: str, client: aioredis.Redis) -> None:
    await _full_round(redis_url, client, stream="{orders} v1/é:ü\t*$>")


async def test_a_group_made_beforehand_at_the_end_is_kept(
    redis_url: str, client: aioredis.Redis
) -> None:
    """Someone made the group at ``$``: the worker keeps it (reads what comes after)."""
    await send(redis_url, ["before"])
    await client.xgroup_create(STREAM, GROUP, id="$")
    got: list[str] = []

    async def handle(data: str) -> None:
        got.append(data)

    async with asyncio.timeout(BOUND), _worker(handle, redis_url):
        await send(redis_url, ["after"])
        await eventually(holds(lambda: got == ["after"]), "the later entry")
    assert got == ["after"]


async def test_a_stream_key_holding_another_type_fails_the_worker_clearly(
    redis_url: str, client: aioredis.Redis
) -> None:
    await client.set(STREAM, "not a stream")

    async def handle(data: Any) -> None:
        pass

    worker = _worker(handle, redis_url)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        with pytest.raises(aioredis.ResponseError, match="WRONGTYPE"):
            await worker.wait_for_shutdown()
    assert await client.get(STREAM) == b"not a stream"


async def _through_a_pool_of_one(redis_url: str, client: aioredis.Redis) -> tuple[set[int], int]:
    """300 entries through a worker given a client whose pool has one connection;
    returns what was handled and how many status() calls said it was not connected."""
    got: Counter[int] = Counter()

    async def handle(n: int) -> None:
        await asyncio.sleep(0.001)
        got[n] += 1

    given = aioredis.Redis.from_url(redis_url, max_connections=1)
    worker = _worker(handle, given, concurrency=4, maxsize=20, min_idle=0.3, claim_interval=0.02)
    down = 0
    try:
        with reaping_the_reader_leak():
            async with asyncio.timeout(BOUND), worker:
                # connected once its run opened the broker: "not yet" is no outage
                await eventually(lambda: _connected(worker), "connected")
                await send(redis_url, list(range(300)))
                while len(got) < 300:
                    down += not (await worker.status())["stream"]["connected"]
                    await asyncio.sleep(0.002)
                await eventually(lambda: no_pending(client), "all acked")
    finally:
        await given.aclose()
    return set(got), down


async def _connected(worker: fluid.redis.StreamConsumerWorker) -> bool:
    return (await worker.status())["stream"]["connected"]


async def test_a_given_client_whose_pool_has_one_connection_loses_nothing(
    redis_url: str, client: aioredis.Redis
) -> None:
    got, _ = await _through_a_pool_of_one(redis_url, client)
    assert got == set(range(300))


async def test_a_given_client_whose_pool_has_one_connection_is_no_outage(
    redis_url: str, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    _, down = await _through_a_pool_of_one(redis_url, client)
    assert "lost its broker" not in caplog.text
    assert down == 0


async def test_a_given_client_closed_before_the_start(
    redis_url: str, client: aioredis.Redis
) -> None:
    """redis-py reconnects a closed client on its next command: the worker works."""
    got: list[int] = []

    async def handle(n: int) -> None:
        got.append(n)

    given = aioredis.Redis.from_url(redis_url)
    await given.ping()
    await given.aclose()
    try:
        with reaping_the_reader_leak():
            async with asyncio.timeout(BOUND), _worker(handle, given):
                await send(redis_url, [1, 2])
                await eventually(holds(lambda: got == [1, 2]), "handled")
                await eventually(lambda: no_pending(client), "acked")
    finally:
        await given.aclose()


async def test_a_dead_lettered_string_payload_keeps_its_encoding(
    redis_url: str, client: aioredis.Redis
) -> None:
    async def fail(data: str) -> None:
        raise ValueError("no")

    worker = _worker(fail, redis_url, max_deliveries=1)
    async with asyncio.timeout(BOUND), worker:
        await send(redis_url, ["123"])
        await eventually(lambda: _count_dead(client, 1), "dead-lettered")
    (letter,) = await dead_letters(client)
    assert fluid.redis.JsonSerializer().loads(letter[b"data"]) == "123", letter[b"data"]


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(False, id="url"),
        pytest.param(
            True,
            id="given-client",
        ),
    ],
)
async def test_a_stopped_worker_leaves_no_connection_open(
    redis_url: str, client: aioredis.Redis, given: bool
) -> None:
    gate = asyncio.Event()
    started: list[int] = []

    async def handle(n: int) -> None:
        started.append(n)
        await gate.wait()

    baseline = await connections(client)
    user = aioredis.Redis.from_url(redis_url)
    worker = _worker(handle, user if given else redis_url, maxsize=2, concurrency=2, min_idle=60)
    with reaping_the_reader_leak():
        try:
            async with asyncio.timeout(BOUND):
                await worker.startup()
                await send(redis_url, [1, 2, 3])
                # the reader read them and waits for room: no read in progress
                await eventually(holds(lambda: len(started) == 2), "two handlers hold the room")
                stopping = asyncio.create_task(worker.shutdown())
                await eventually(holds(worker.is_stopping), "stopping")
                gate.set()
                await stopping
        finally:
            await user.aclose()
        with contextlib.suppress(AssertionError):
            await eventually(lambda: _clients_at_most(client, baseline), "closed", timeout=2)
        left: Any = await client.client_list()
        del worker  # the leak checked, its connection is collected on the way out
    assert len(left) - 1 == baseline, [c["cmd"] for c in left]


# ------------------------------------------------------------ status, outages


async def test_status_hammered_through_a_stop_never_raises_nor_leaves_a_connection(
    redis_url: str, client: aioredis.Redis
) -> None:
    """status() from other tasks, in a tight loop, while the worker stops and closes its
    clients: it never raises, and no figures call reopens a closed client."""

    async def handle(n: int) -> None:
        await asyncio.sleep(0)

    baseline = await connections(client)
    worker = _worker(handle, redis_url, concurrency=2)
    calls = 0

    async def hammer() -> None:
        nonlocal calls
        while True:
            status = await worker.status()
            assert isinstance(status["stream"]["held"], int)
            calls += 1
            await asyncio.sleep(0)

    async with asyncio.timeout(BOUND):
        await worker.startup()
        await send(redis_url, list(range(50)))
        hammers = [asyncio.create_task(hammer()) for _ in range(4)]
        try:
            await eventually(holds(lambda: calls > 20), "status answered")
            await worker.shutdown()
            before = calls
            await eventually(holds(lambda: calls > before + 20), "status after the stop")
            assert not any(h.done() for h in hammers), [h.exception() for h in hammers]
        finally:
            for h in hammers:
                h.cancel()
            await asyncio.gather(*hammers, return_exceptions=True)
        status = await worker.status()
        assert status["ready"] is False
        assert status["stream"]["connected"] is False
        await eventually(lambda: _clients_at_most(client, baseline), "its connections closed")


async def test_status_of_a_worker_whose_server_is_frozen_answers_within_about_a_second(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A partitioned server (SIGSTOP: connections open, no answer): status() is bounded."""

    async def handle(n: int) -> None:
        pass

    worker = _worker(handle, redis_url, stopping_grace_period=0.5)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        try:
            await eventually(
                lambda: _status_says(worker, lambda s: s["stream"]["connected"]), "connected"
            )
            with frozen(redis_server):
                for _ in range(2):
                    started = time.monotonic()
                    await worker.status()
                    assert time.monotonic() - started < 1.8
        finally:
            await worker.shutdown()


async def _status_says(
    worker: fluid.redis.StreamConsumerWorker, predicate: Callable[[Any], bool]
) -> bool:
    return predicate(await worker.status())


async def test_an_idle_consumer_reports_a_frozen_server(
    redis_server: RedisServer, redis_url: str
) -> None:
    async def handle(n: int) -> None:
        pass

    worker = _worker(handle, redis_url, block=0.2, stopping_grace_period=0.5)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        try:
            await eventually(
                lambda: _status_says(worker, lambda s: s["stream"]["connected"]), "connected"
            )
            with frozen(redis_server):
                # a read of 0.2 s unanswered for 2 s: the server is not there
                with contextlib.suppress(AssertionError):
                    await eventually(
                        lambda: _status_says(worker, lambda s: not s["ready"]),
                        "reported",
                        timeout=2.0,
                    )
                ready = (await worker.status())["ready"]
        finally:
            await worker.shutdown()
    assert ready is False


async def test_a_worker_started_while_the_server_is_down_stops_promptly(
    redis_server: RedisServer, redis_url: str
) -> None:
    async def handle(n: int) -> None:
        pass

    down = f"redis://127.0.0.1:{_free_port()}/0"
    worker = _worker(handle, down)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        for _ in range(3):
            status = await worker.status()
            assert status["ready"] is False
            assert status["stream"]["connected"] is False
            await asyncio.sleep(0.05)
        started = time.monotonic()
        await worker.shutdown()
    assert time.monotonic() - started < 2
    assert worker.worker_state is fluid.WorkerState.STOPPED


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ------------------------------------------------------------------ producer


async def test_send_many_from_a_generator_that_raises_appends_nothing(
    redis_url: str, client: aioredis.Redis
) -> None:
    def orders() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the source broke")

    async with fluid.redis.StreamProducer(redis_url, STREAM) as producer:
        with pytest.raises(ValueError, match="the source broke"):
            await producer.send_many(orders())
        assert await client.xlen(STREAM) == 0
        assert await producer.send_many([3]) != []  # still usable
    assert await client.xlen(STREAM) == 1


async def test_send_many_lets_the_items_own_os_error_through(
    redis_url: str, client: aioredis.Redis
) -> None:
    def from_files() -> Iterator[str]:
        yield "a"
        raise FileNotFoundError("orders/7.json")

    async with fluid.redis.StreamProducer(redis_url, STREAM) as producer:
        with pytest.raises(FileNotFoundError):
            await producer.send_many(from_files())
    assert await client.xlen(STREAM) == 0


async def test_a_payload_json_cannot_encode_is_refused_at_the_call(
    redis_url: str, client: aioredis.Redis
) -> None:
    async with fluid.redis.StreamProducer(redis_url, STREAM) as producer:
        with pytest.raises(TypeError, match="not JSON serializable"):
            await producer.send({"when": object()})
        with pytest.raises(TypeError, match="not JSON serializable"):
            await producer.send_many([1, {2}, 3])
        with pytest.raises(ValueError, match="Out of range float"):
            await fluid.redis.StreamProducer(redis_url, STREAM, serializer=_StrictJson()).send(
                float("nan")
            )
    assert await client.xlen(STREAM) == 0


class _StrictJson:
    def dumps(self, data: Any) -> str:  # a str, not bytes: the protocol allows it
        import json

        return json.dumps(data, allow_nan=False)

    def loads(self, raw: bytes) -> Any:
        import json

        return json.loads(raw)


async def test_a_serializer_returning_str_and_a_large_payload_round_trip(
    redis_url: str,
) -> None:
    got: list[Any] = []

    async def handle(data: Any) -> None:
        got.append(data)

    big = {"blob": "é" * 3_000_000}  # ~6 MB of UTF-8
    worker = _worker(handle, redis_url, serializer=_StrictJson())
    async with asyncio.timeout(BOUND), worker:
        async with fluid.redis.StreamProducer(
            redis_url, STREAM, serializer=_StrictJson()
        ) as producer:
            await producer.send({"n": 1})
            await producer.send(big)
        await eventually(holds(lambda: len(got) == 2), "both handled")
    assert got[0] == {"n": 1}
    assert got[1] == big


async def test_a_send_cancelled_at_any_point_leaves_the_shared_client_consistent(
    redis_url: str, client: aioredis.Redis
) -> None:
    """Cancel send()/send_many() after k loop turns, for every k until one completes;
    after each cancel the same client's next send returns the id Redis really gave it
    (no reply left on a connection and read by the next command)."""
    shared = aioredis.Redis.from_url(redis_url)
    producer = fluid.redis.StreamProducer(shared, STREAM)
    try:
        async with asyncio.timeout(BOUND):
            for many in (False, True):
                for turns in range(60):
                    call = producer.send_many([{"k": turns}] * 3) if many else producer.send(turns)
                    task = asyncio.ensure_future(call)
                    for _ in range(turns):
                        await asyncio.sleep(0)
                    finished = task.done()
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    entry_id = await producer.send({"check": turns})
                    rows: Any = await client.xrevrange(STREAM, count=1)
                    assert _text(rows[0][0]) == entry_id
                    assert rows[0][1] == {b"data": f'{{"check":{turns}}}'.encode()}
                    if finished:
                        break
                else:
                    raise AssertionError("never completed within 60 loop turns")
    finally:
        await producer.aclose()  # a given client: left open
        assert await shared.ping()
        await shared.aclose()


async def test_a_producer_context_exited_by_an_error_closes_and_lets_it_through(
    redis_url: str, client: aioredis.Redis
) -> None:
    baseline = await connections(client)

    async def use() -> None:
        async with fluid.redis.StreamProducer(redis_url, STREAM) as producer:
            await producer.send(1)
            raise KeyError("mine")

    with pytest.raises(KeyError):
        await use()
    await eventually(lambda: _clients_at_most(client, baseline), "closed")


# ------------------------------------------------------ delays across restarts


async def test_a_restarted_worker_keeps_the_retry_delay_of_a_failed_entry(
    redis_url: str, client: aioredis.Redis
) -> None:
    seen: list[float] = []

    async def handle(n: int) -> None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise ValueError("try again in a second")

    worker = _worker(
        handle,
        redis_url,
        consumer="c",
        on_error="stop",
        retry_delay=1.0,
        min_idle=60,
        claim_interval=0.05,
    )
    tree = fluid.Workers(worker, strategy="one_for_one", backoff=fluid.Backoff(initial=0))
    async with asyncio.timeout(BOUND), tree:
        await send(redis_url, [1])
        await eventually(holds(lambda: len(seen) == 2), "delivered again")
        await eventually(lambda: no_pending(client), "acked")
    assert worker.restarts == 1
    assert seen[1] - seen[0] >= 0.95, f"again after {seen[1] - seen[0]:.3f}s, not 1 s"


async def test_a_retry_delay_survives_a_restart_under_the_same_name(
    redis_url: str, client: aioredis.Redis
) -> None:
    seen: list[float] = []

    async def handle(n: int) -> None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise fluid.redis.Retry(delay=3600)  # an hour: the remote side is rate-limited

    # the stop cuts a parked entry's delay to min_idle (the keeper that renews it stops):
    # 5 s, longer than this test looks, so only a read at the start can take it
    options: dict[str, Any] = {"consumer": "c", "min_idle": 5, "claim_interval": 0.05}
    async with asyncio.timeout(BOUND):
        async with _worker(handle, redis_url, **options):
            await send(redis_url, [1])
            await eventually(holds(lambda: len(seen) == 1), "tried once")
        async with _worker(handle, redis_url, **options):
            with contextlib.suppress(AssertionError):
                await eventually(holds(lambda: len(seen) == 2), "tried again", timeout=1.5)
    assert len(seen) == 1, f"tried again {seen[1] - seen[0]:.2f}s later, asked for an hour"


async def test_a_claimed_schedule_restarted_quickly_never_runs_a_slot_twice(
    redis_url: str, client: aioredis.Redis
) -> None:
    """Stopped and started again within a slot, five times: every run is a slot whose key
    this replica set, and no key is set twice (each run once per slot)."""
    claim = fluid.redis.RedisSlotClaim(redis_url, owner="me")
    runs = 0

    async def tick() -> None:
        nonlocal runs
        runs += 1

    worker = fluid.ScheduledWorker(tick, interval=0.05, claim=claim, name="tick")
    won = 0
    async with asyncio.timeout(BOUND):
        for _ in range(5):
            async with worker:
                target = runs + 2
                await eventually(holds(lambda: runs >= target), "two more slots")  # noqa: B023
            won += (await worker.status())["schedule"]["claims"]["won"]
    keys = [key async for key in client.scan_iter("fluid:slot:tick:*")]
    owners = {await client.get(key) for key in keys}
    # one replica: every key is a slot it won, each run once; a slot met again
    # after a restart is found claimed (lost), never run twice
    assert runs == won == len(keys)
    assert owners == {b"me"}
