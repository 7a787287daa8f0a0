"""fluid.redis against a real redis-server: each promise of StreamConsumerWorker.

Every test starts from an empty server (the ``redis_url`` fixture) and waits
on conditions with deadlines. Redis itself is the oracle: ``XPENDING``,
``XINFO``, ``INFO commandstats`` and the dead-letter stream say what the
consumer did, not only its own figures.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

import fluid
import fluid.redis
from fluid import StreamStatus
from fluid._broker import Entry
from fluid._stream import StreamConsumer
from fluid.integrations import health
from fluid.redis._streams import RedisBroker

from ._redis_server import RedisServer
from .helpers import wait_until

BOUND = 20.0  # a hang, not a slow machine, fails these


def _worker(
    handler: Callable[[Any], Any], redis_url: str, **options: Any
) -> fluid.redis.StreamConsumerWorker:
    options.setdefault("stream", "jobs")
    options.setdefault("group", "workers")
    options.setdefault("block", 0.5)
    return fluid.redis.StreamConsumerWorker(handler, redis=redis_url, **options)


async def _wait_stream(
    worker: StreamConsumer, predicate: Callable[[StreamStatus], bool]
) -> StreamStatus:
    """Wait until ``predicate`` holds for the worker's stream figures; return them."""
    deadline = time.monotonic() + BOUND
    while True:
        figures = (await worker.status())["stream"]
        if predicate(figures):
            return figures
        assert time.monotonic() < deadline, figures
        await asyncio.sleep(0.005)


async def _command_calls(client: aioredis.Redis, command: str) -> int:
    stats: Any = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _own_pending(client: aioredis.Redis, consumer: str, stream: str = "jobs") -> int:
    rows: Any = await client.xpending_range(
        stream, "workers", min="-", max="+", count=10_000, consumername=consumer
    )
    return len(rows)


# ------------------------------------------------------------- at least once


async def test_every_entry_is_handled_once_and_acked(
    redis_url: str, client: aioredis.Redis
) -> None:
    got: list[int] = []

    async def handle(n: int) -> None:
        got.append(n)

    worker = _worker(handle, redis_url, concurrency=4)
    async with asyncio.timeout(BOUND):
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await worker.startup()
            try:
                await producer.send_many(range(500))
                await wait_until(lambda: len(got) == 500)
                await wait_until(lambda: worker.queue_status()["handled"] == 500)
                status = await worker.status()
                await _wait_stream(worker, lambda f: f["held"] == 0)  # all acked
            finally:
                await worker.shutdown()
    assert sorted(got) == list(range(500))
    pending: Any = await client.xpending("jobs", "workers")
    assert pending["pending"] == 0
    assert status["stream"]["read"] == 500
    assert status["ready"] is True
    final = (await worker.status())["stream"]
    assert final["acked"] == 500
    assert final["dead_lettered"] == 0


async def test_acks_are_sent_in_batches(redis_url: str, client: aioredis.Redis) -> None:
    got: list[int] = []

    async def handle(n: int) -> None:
        got.append(n)

    async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
        await producer.send_many(range(1000))
    before = await _command_calls(client, "xack")
    worker = _worker(handle, redis_url)
    async with asyncio.timeout(BOUND):
        async with worker:
            await wait_until(lambda: len(got) == 1000)
            await wait_until(lambda: worker.queue_status()["handled"] == 1000)
    acks = await _command_calls(client, "xack") - before
    reads = await _command_calls(client, "xreadgroup")
    # one XACK per batch: never one per entry (1,000), at most about one per read
    assert acks <= reads + 2, (acks, reads)
    pending: Any = await client.xpending("jobs", "workers")
    assert pending["pending"] == 0


# ------------------------------------------------------------ crash recovery


async def test_a_restart_under_the_same_name_handles_its_own_pending_first(
    redis_url: str, client: aioredis.Redis
) -> None:
    async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
        await producer.send_many(["a", "b", "c"])
    await client.xgroup_create("jobs", "workers", id="0")
    # a consumer named "c1" read them and died before acking
    await client.xreadgroup("workers", "c1", {"jobs": ">"}, count=3)
    got: list[str] = []

    async def handle(data: str) -> None:
        got.append(data)

    # min_idle is long: only reading its own pending list can find them now
    worker = _worker(handle, redis_url, consumer="c1", min_idle=60)
    async with asyncio.timeout(BOUND), worker:
        await wait_until(lambda: len(got) == 3)
        status = (await worker.status())["stream"]
    assert got == ["a", "b", "c"]
    assert status["claimed"] == 3
    assert status["read"] == 0
    assert await _own_pending(client, "c1") == 0


async def test_entries_of_a_dead_consumer_are_claimed_after_min_idle(
    redis_url: str, client: aioredis.Redis
) -> None:
    async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
        await producer.send_many([1, 2])
    await client.xgroup_create("jobs", "workers", id="0")
    await client.xreadgroup("workers", "dead", {"jobs": ">"}, count=2)
    taken_at = time.monotonic()
    got: list[tuple[int, float]] = []

    async def handle(n: int) -> None:
        got.append((n, time.monotonic()))

    worker = _worker(handle, redis_url, consumer="alive", min_idle=0.4, claim_interval=0.05)
    async with asyncio.timeout(BOUND), worker:
        await wait_until(lambda: len(got) == 2)
    assert sorted(n for n, _ in got) == [1, 2]
    assert min(t for _, t in got) - taken_at >= 0.35  # not before min_idle (ms rounding)
    assert await _own_pending(client, "dead") == 0


async def test_a_long_handler_keeps_its_entry_from_peers(
    redis_url: str, client: aioredis.Redis
) -> None:
    """The entry is renewed while its handler runs: a peer's claims never take it."""
    calls: list[str] = []
    release = asyncio.Event()

    def handler(who: str) -> Callable[[int], Any]:
        async def handle(n: int) -> None:
            calls.append(who)
            if who == "a":
                await release.wait()

        return handle

    options: dict[str, Any] = {"min_idle": 0.3, "claim_interval": 0.03}
    a = _worker(handler("a"), redis_url, consumer="a", **options)
    b = _worker(handler("b"), redis_url, consumer="b", **options)
    async with asyncio.timeout(BOUND):
        await a.startup()
        try:
            async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
                await producer.send(1)
            await wait_until(lambda: calls == ["a"])
            await b.startup()
            before = await _command_calls(client, "xautoclaim")
            # many of b's claims over several times min_idle
            deadline = time.monotonic() + BOUND
            while await _command_calls(client, "xautoclaim") - before < 40:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            release.set()
            await wait_until(lambda: a.queue_status()["handled"] == 1)
        finally:
            release.set()
            await a.shutdown()
            await b.shutdown()
    assert calls == ["a"]  # b never got it


# --------------------------------------------------- failures and dead letters


async def test_a_failing_entry_is_retried_then_dead_lettered(
    redis_url: str, client: aioredis.Redis
) -> None:
    errors: list[tuple[object, str]] = []

    async def handle(data: dict[str, int]) -> None:
        if data["n"] == 13:
            raise ValueError("unlucky")

    def on_error(data: object, error: Exception) -> None:
        errors.append((data, str(error)))

    worker = _worker(
        handle,
        redis_url,
        on_error=on_error,
        max_deliveries=3,
        min_idle=0.2,
        claim_interval=0.03,
    )
    async with asyncio.timeout(BOUND), worker:
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await producer.send_many([{"n": 12}, {"n": 13}, {"n": 14}])
        await wait_until(lambda: len(errors) == 3)
        await wait_until(lambda: worker.queue_status()["handled"] == 2)

        async def dead_letters() -> list[Any]:
            rows: Any = await client.xrange("jobs:dead")
            return list(rows)

        deadline = time.monotonic() + BOUND
        while not (dead := await dead_letters()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        status = (await worker.status())["stream"]
    assert errors == [({"n": 13}, "unlucky")] * 3
    ((_, fields),) = dead
    assert fields[b"data"] == b'{"n":13}'
    assert fields[b"error"] == b"ValueError: unlucky"
    assert fields[b"deliveries"] == b"3"
    assert status["dead_lettered"] == 1
    assert status["released"] == 2
    pending: Any = await client.xpending("jobs", "workers")
    assert pending["pending"] == 0


async def test_an_entry_delivered_too_often_is_dead_lettered_unhandled(
    redis_url: str, client: aioredis.Redis
) -> None:
    """An entry that crashed its consumers (never acked) is not handed out again."""
    async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
        await producer.send("crash")
    await client.xgroup_create("jobs", "workers", id="0")
    await client.xreadgroup("workers", "gone", {"jobs": ">"}, count=1)
    for _ in range(2):  # two more deliveries: three in all
        await client.xautoclaim("jobs", "workers", "gone", min_idle_time=0, start_id="0-0")
    handled: list[str] = []

    async def handle(data: str) -> None:
        handled.append(data)

    worker = _worker(handle, redis_url, max_deliveries=3, min_idle=0.05, claim_interval=0.03)
    async with asyncio.timeout(BOUND), worker:
        await _wait_stream(worker, lambda f: f["dead_lettered"] == 1)
    assert handled == []
    rows: Any = await client.xrange("jobs:dead")
    ((_, fields),) = rows
    assert fields[b"error"] == b"delivered 4 times without an ack"


async def test_retry_delivers_again_after_its_delay(redis_url: str) -> None:
    seen: list[float] = []

    async def handle(n: int) -> None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise fluid.redis.Retry(delay=0.3)

    worker = _worker(handle, redis_url, min_idle=1.0, claim_interval=0.03)
    async with asyncio.timeout(BOUND), worker:
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await producer.send(1)
        await wait_until(lambda: len(seen) == 2)
        status = await worker.status()
    assert seen[1] - seen[0] >= 0.28  # not before its delay (ms rounding)
    assert status["queue"]["failed"] == 0
    assert status["stream"]["released"] == 1


# --------------------------------------------------------------------- stop


async def test_a_stop_is_prompt_while_a_read_blocks(redis_url: str) -> None:
    async def handle(n: int) -> None:
        pass

    worker = _worker(handle, redis_url, block=60)
    async with asyncio.timeout(BOUND):
        await worker.startup()
        await _wait_stream(worker, lambda f: f["connected"])
        started = time.monotonic()
        await worker.shutdown()
    assert time.monotonic() - started < 10  # not the 60 s of the read


async def test_a_stop_releases_what_it_did_not_handle_to_a_peer(
    redis_url: str, client: aioredis.Redis
) -> None:
    gate = asyncio.Event()
    handled: list[tuple[str, int]] = []

    async def slow(n: int) -> None:
        await gate.wait()
        handled.append(("a", n))

    async def fast(n: int) -> None:
        handled.append(("b", n))

    # a long min_idle: only a release lets the peer take them before 60 s
    a = _worker(slow, redis_url, consumer="a", drain=False, maxsize=10, min_idle=60)
    b = _worker(fast, redis_url, consumer="b", min_idle=60, claim_interval=0.05)
    async with asyncio.timeout(BOUND):
        await a.startup()
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await producer.send_many(range(10))
        await wait_until(lambda: a.queue_status()["in_flight"] == 1)
        await wait_until(lambda: a.queue_status()["size"] == 9)
        stopping = asyncio.create_task(a.shutdown())
        await wait_until(lambda: a.is_stopping())
        gate.set()  # the handler in flight finishes within the grace period
        await stopping
        # still a's on the broker, but idle as long as min_idle: the next claim takes them
        rows: Any = await client.xpending_range("jobs", "workers", min="-", max="+", count=20)
        assert len(rows) == 9
        assert all(row["time_since_delivered"] >= 59_000 for row in rows)
        async with b:
            await wait_until(lambda: len(handled) == 10)
    assert sorted(n for _, n in handled) == list(range(10))
    assert [who for who, _ in handled].count("a") == 1


async def test_a_forced_stop_releases_the_cancelled_handlers_entries(
    redis_url: str, client: aioredis.Redis
) -> None:
    async def hang(n: int) -> None:
        await asyncio.Event().wait()

    worker = _worker(
        hang, redis_url, consumer="a", concurrency=3, min_idle=60, stopping_grace_period=0.1
    )
    async with asyncio.timeout(BOUND):
        await worker.startup()
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await producer.send_many(range(5))
        await wait_until(lambda: worker.queue_status()["in_flight"] == 3)
        await worker.shutdown()
    assert worker.worker_state is fluid.WorkerState.FORCE_STOPPED
    rows: Any = await client.xpending_range("jobs", "workers", min="-", max="+", count=10)
    assert len(rows) == 5
    # all given back: idle as long as min_idle, so the next claim takes them
    assert all(row["time_since_delivered"] >= 59_000 for row in rows)


async def test_held_entries_never_exceed_maxsize(redis_url: str, client: aioredis.Redis) -> None:
    most = 0
    handled = 0

    async def handle(n: int) -> None:
        nonlocal most, handled
        most = max(most, await _own_pending(client, "a"))
        handled += 1

    worker = _worker(handle, redis_url, consumer="a", maxsize=5, concurrency=2)
    async with asyncio.timeout(BOUND):
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await producer.send_many(range(60))
        async with worker:
            await wait_until(lambda: handled == 60)
            most = max(most, (await worker.status())["stream"]["held"])
    assert 0 < most <= 5


# ---------------------------------------------------------- connection loss


async def test_a_lost_server_is_reported_and_the_consumer_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    got: list[int] = []

    async def handle(n: int) -> None:
        got.append(n)

    worker = _worker(handle, redis_url, block=0.2, min_idle=1, claim_interval=0.1)
    try:
        async with asyncio.timeout(BOUND), worker:
            async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
                await producer.send(1)
            await wait_until(lambda: got == [1])
            assert (await health(worker))[0] == 200
            redis_server.kill()
            await _wait_stream(worker, lambda f: not f["connected"])
            code, body = await health(worker)
            assert code == 503
            assert body["ready"] is False
            assert body["stream"]["connected"] is False
            assert worker.is_running()  # it waits for the server: no crash loop
            redis_server.start()  # empty: the group is made again
            async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
                await producer.send(2)
            await wait_until(lambda: got == [1, 2])
            await _wait_stream(worker, lambda f: f["connected"])
            assert (await health(worker))[0] == 200
    finally:
        if redis_server.process is None:
            redis_server.start()


# --------------------------------------------------------------- bad input


def test_bad_arguments_are_refused_at_the_call(redis_url: str) -> None:
    async def handle(n: int) -> None:
        pass

    def sync_handle(n: int) -> None:
        pass

    with pytest.raises(TypeError, match="handler"):
        _worker(sync_handle, redis_url)
    with pytest.raises(TypeError, match="redis must be"):
        fluid.redis.StreamConsumerWorker(handle, redis=42, stream="s", group="g")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scheme"):
        fluid.redis.StreamConsumerWorker(handle, redis="http://nope", stream="s", group="g")
    with pytest.raises(ValueError, match="stream"):
        _worker(handle, redis_url, stream="")
    with pytest.raises(ValueError, match="group"):
        _worker(handle, redis_url, group="")
    with pytest.raises(ValueError, match="min_idle"):
        _worker(handle, redis_url, min_idle=0)
    with pytest.raises(ValueError, match="maxsize"):
        _worker(handle, redis_url, maxsize=0)
    with pytest.raises(ValueError, match="delay"):
        fluid.redis.Retry(delay=-1)
    with pytest.raises(ValueError, match="maxlen"):
        fluid.redis.StreamProducer(redis_url, "s", maxlen=0)


async def test_send_to_the_consumer_is_refused(redis_url: str) -> None:
    async def handle(n: int) -> None:
        pass

    worker = _worker(handle, redis_url)
    with pytest.raises(TypeError, match="producer"):
        worker.send(1)
    with pytest.raises(TypeError, match="producer"):
        await worker.put(1)


def test_the_default_consumer_name_is_stable_per_host_and_prefork_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fluid.redis._streams import default_consumer_name

    host = socket.gethostname()
    assert default_consumer_name("billing") == f"{host}-billing"
    child = fluid.PreforkChild(id=3, processes=4, sockets=())
    monkeypatch.setattr(fluid, "prefork_child", lambda: child)
    assert default_consumer_name("billing") == f"{host}-billing-3"


async def test_the_producer_trims_to_about_maxlen(redis_url: str, client: aioredis.Redis) -> None:
    async with fluid.redis.StreamProducer(redis_url, "jobs", maxlen=100) as producer:
        for start in range(0, 2000, 100):
            await producer.send_many(range(start, start + 100))
    length = await client.xlen("jobs")
    assert 100 <= length < 2000  # approximate: whole nodes are trimmed


async def test_a_given_client_with_a_socket_timeout_idles_without_outages(
    redis_url: str, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The blocking reads get no socket timeout, whatever the given client's settings."""

    async def handle(n: int) -> None:
        pass

    given = aioredis.Redis.from_url(redis_url, socket_timeout=0.2)
    worker = fluid.redis.StreamConsumerWorker(
        handle, redis=given, stream="jobs", group="workers", block=0.6
    )
    try:
        async with asyncio.timeout(BOUND), worker:
            await _wait_stream(worker, lambda f: f["connected"])
            before = await _command_calls(client, "xreadgroup")
            deadline = time.monotonic() + BOUND
            while await _command_calls(client, "xreadgroup") - before < 3:  # three idle reads
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert (await worker.status())["stream"]["connected"]
    finally:
        await given.aclose()
    assert "lost its broker" not in caplog.text


class _CutOnce(RedisBroker):
    """A broker whose first read with entries loses its reply, as an outage may."""

    cut = True

    async def read_new(self, count: int, block: float) -> list[Entry]:
        entries = await super().read_new(count, block)
        if entries and self.cut:
            self.cut = False
            raise ConnectionError("the reply was cut")
        return entries


async def test_entries_of_a_read_whose_reply_was_cut_are_handled_once_back(
    redis_url: str,
) -> None:
    """Redis gave them to this consumer, which never saw them: it reads its own list again."""
    got: list[int] = []

    async def handle(n: int) -> None:
        got.append(n)

    broker = _CutOnce(redis_url, "jobs", "workers", "c", fluid.redis.JsonSerializer(), "dead")
    # min_idle is long: only reading its own pending list again finds them in time
    worker = StreamConsumer(broker, handle, name="c", min_idle=60, block=0.2)
    async with asyncio.timeout(BOUND), worker:
        async with fluid.redis.StreamProducer(redis_url, "jobs") as producer:
            await producer.send_many([1, 2, 3])
        await wait_until(lambda: sorted(got) == [1, 2, 3])
        figures = await _wait_stream(worker, lambda f: f["held"] == 0)
    assert figures["claimed"] == 3
    assert got == [1, 2, 3]
