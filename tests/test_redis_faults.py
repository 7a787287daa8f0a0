"""Fault tests of the stream consumer against a real redis-server.

Two kinds:

* **Processes** (``tests/_stream_targets.py``): consumers run by ``python -m
  fluid run`` are SIGKILLed, respawned under the same name, SIGTERMed, or
  crash on a payload. Their handler records ``started`` and ``done`` in Redis
  itself, before the ack, so what a kill leaves behind is exact: a message
  in ``done`` was handled, and a second ``done`` of it is a duplicate whose
  first run must be a killed process's.
* **In process**: the consumer under a broker proxy that counts, books and
  can hold any broker call, so that a stop, a cancellation or a buffer bound
  is checked at each step; a Redis restart, with and without persistence.

Every oracle is exact (ids and payloads), every wait has a deadline, and
the recovery figures are printed (``-s``) rather than asserted tightly:
``make stress`` (``tests/stress/test_stream_kills.py``) reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import fluid
import fluid.redis
from fluid._broker import BrokerFigures, Entry
from fluid._stream import StreamConsumer
from fluid.redis._streams import JsonSerializer, RedisBroker

from ._redis_server import RedisServer
from ._stream_targets import CONFIG_ENV, READY, Config, parse

ROOT = Path(__file__).resolve().parent.parent
STREAM = "orders"
GROUP = "g"


# ------------------------------------------------------------------ helpers


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until true; fail after ``timeout`` seconds (a hang, not a slow run)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)


class Proc:
    """A consumer process (``tests/_stream_targets.py``); its output goes to a file."""

    def __init__(self, config: Config, log: Path) -> None:
        self.config = config
        self.log = log
        env = {**os.environ, CONFIG_ENV: config.dumps(), "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-u",
                    "-m",
                    "fluid",
                    "run",
                    "tests._stream_targets:consumer",
                    "--log-level",
                    "warning",
                    "--no-uvloop",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.spawned = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready_at(self) -> float | None:
        """The monotonic time of this process's ``on_startup``, once it printed it."""
        for line in self.output().splitlines():
            if line.startswith(READY) and f" {self.pid} " in line:
                return float(line.split()[-1])
        return None

    async def ready(self, timeout: float = 15.0) -> float:
        async def printed() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited before it was ready:\n{self.output()}")
            return self.ready_at() is not None

        await eventually(printed, timeout, f"{self.config.consumer} ready")
        at = self.ready_at()
        assert at is not None
        return at

    def signal(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, sig)

    async def wait(self, timeout: float = 15.0) -> int:
        async def ended() -> bool:
            return self.process.poll() is not None

        try:
            await eventually(ended, timeout, f"{self.config.consumer} ended")
        except AssertionError:
            raise AssertionError(f"still running:\n{self.output()}") from None
        return self.process.returncode

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait()

    def close(self) -> None:
        """Kill and reap (a test's finally)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@contextlib.asynccontextmanager
async def processes() -> AsyncIterator[list[Proc]]:
    """The processes a test starts: killed and reaped whatever happens."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.close()


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(url)
    try:
        yield redis
    finally:
        await redis.aclose()


Record = tuple[int, str, int, float]


async def records(redis: aioredis.Redis, what: str, stream: str = STREAM) -> list[Record]:
    """``started`` or ``done`` records in the order they were made."""
    return [parse(line) for line in await redis.lrange(f"{stream}:{what}", 0, -1)]


async def group_pending(redis: aioredis.Redis, stream: str = STREAM) -> dict[str, int]:
    """Pending entries per consumer of the group (none before the group is made)."""
    try:
        summary: Any = await redis.xpending(stream, GROUP)
    except aioredis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return {}
    return {
        (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): int(c["pending"])
        for c in summary.get("consumers") or []
    }


async def pending_idle(redis: aioredis.Redis, consumer: str, stream: str = STREAM) -> list[int]:
    """Idle milliseconds of each entry pending for ``consumer``."""
    rows: Any = await redis.xpending_range(
        stream, GROUP, min="-", max="+", count=1000, consumername=consumer
    )
    return [int(row["time_since_delivered"]) for row in rows]


async def dead_letters(redis: aioredis.Redis, stream: str = STREAM) -> list[dict[str, str]]:
    rows: Any = await redis.xrange(f"{stream}:dead")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


async def send(url: str, payloads: Sequence[Any], stream: str = STREAM) -> list[str]:
    async with fluid.redis.StreamProducer(url, stream) as producer:
        return await producer.send_many(payloads)


def config(url: str, consumer: str, **options: Any) -> Config:
    return Config(url=url, stream=STREAM, group=GROUP, consumer=consumer, **options)


def done_set(done: list[Record]) -> set[int]:
    return {n for n, *_ in done}


# ------------------------------------------------- 1. SIGKILL, respawn, no loss


async def test_sigkilled_consumers_respawned_under_their_names_lose_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    """Kills at random moments while a producer sends: every message handled, dups bounded.

    Two consumer processes of one group (concurrency 2, maxsize 4,
    min_idle 30 s: only a respawn under the same name can recover what a
    killed one held within the test's deadline). Each kill is followed by a
    respawn under the killed consumer's name.
    """
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    total, kills_wanted, concurrency, maxsize = 240, 3, 2, 4
    names = ["c0", "c1"]

    def spawn(name: str) -> Proc:
        options = {"concurrency": concurrency, "maxsize": maxsize, "work": 0.01, "block": 0.5}
        return Proc(config(redis_url, name, **options), tmp_path / f"{name}.log")

    killed: dict[int, str] = {}  # pid -> consumer name
    pending_at_kill: list[int] = []
    async with processes() as procs, client(redis_url) as redis:
        live = {name: spawn(name) for name in names}
        procs.extend(live.values())
        for proc in live.values():
            await proc.ready()
        sent = 0
        while sent < total or len(killed) < kills_wanted:
            if sent < total:
                chunk = list(range(sent, min(total, sent + rng.randint(10, 40))))
                await send(redis_url, chunk)
                sent += len(chunk)
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # the injection's random pace
            if len(killed) < kills_wanted and rng.random() < 0.4:
                name = rng.choice(names)
                victim = live[name]
                if victim.ready_at() is None or not (await group_pending(redis)).get(name):
                    continue  # not started, or idle: a kill now would test nothing
                await victim.kill()
                killed[victim.pid] = name
                pending_at_kill.append((await group_pending(redis)).get(name, 0))
                live[name] = spawn(name)
                procs.append(live[name])

        async def all_done() -> bool:
            return done_set(await records(redis, "done")) == set(range(total))

        await eventually(all_done, 20, f"seed={seed}: every message handled")
        for proc in live.values():
            proc.signal(signal.SIGTERM)
        for proc in live.values():
            assert await proc.wait() == 0, proc.output()
        done = await records(redis, "done")
        pending = await group_pending(redis)
        dead = await dead_letters(redis)

    # Every message handled at least once; a second run of a message follows a kill.
    assert done_set(done) == set(range(total)), f"seed={seed}"
    runs: dict[int, list[Record]] = defaultdict(list)
    for rec in done:
        runs[rec[0]].append(rec)
    duplicates_per_kill: Counter[int] = Counter()
    for n, handled in runs.items():
        for rec in handled[:-1]:  # each run but the last was never acked: its process died
            assert rec[2] in killed, f"seed={seed}: {n} handled twice without a kill: {handled}"
            duplicates_per_kill[rec[2]] += 1
    assert all(d <= concurrency + maxsize for d in duplicates_per_kill.values()), (
        f"seed={seed}: {duplicates_per_kill}"
    )
    assert sum(pending.values()) == 0, f"seed={seed}: {pending}"
    assert dead == [], f"seed={seed}"
    print(
        f"\nkills={len(killed)} messages={total} lost=0 "
        f"duplicates={sum(duplicates_per_kill.values())} "
        f"max duplicates per kill={max(duplicates_per_kill.values(), default=0)} "
        f"(bound {concurrency + maxsize}) pending at kills={pending_at_kill} seed={seed}"
    )


# ----------------------------------------- 2. respawn under the name: at once


async def test_respawn_under_its_name_recovers_its_pending_entries_at_once(
    redis_url: str, tmp_path: Path
) -> None:
    """Killed holding entries, respawned under its name: it handles them well before min_idle."""
    maxsize, concurrency, min_idle = 5, 2, 30.0
    async with processes() as procs, client(redis_url) as redis:
        await send(redis_url, list(range(maxsize)))
        holder = Proc(
            config(
                redis_url,
                "a",
                hold=True,
                concurrency=concurrency,
                maxsize=maxsize,
                min_idle=min_idle,
            ),
            tmp_path / "a.log",
        )
        procs.append(holder)

        async def holding() -> bool:
            started = await records(redis, "started")
            return len(started) == concurrency and (await group_pending(redis)).get("a") == maxsize

        await eventually(holding, 15, "the first process holds every entry")
        await holder.kill()
        killed_at = time.monotonic()
        assert (await group_pending(redis)) == {"a": maxsize}
        again = Proc(
            config(redis_url, "a", concurrency=concurrency, maxsize=maxsize, min_idle=min_idle),
            tmp_path / "a2.log",
        )
        procs.append(again)
        ready = await again.ready()

        async def recovered() -> bool:
            return done_set(await records(redis, "done")) == set(range(maxsize))

        await eventually(recovered, 10, "the respawned process handled its pending entries")
        done = await records(redis, "done")
        await eventually(
            lambda: _no_pending(redis), 5, "the respawned process acked what it recovered"
        )
        again.signal(signal.SIGTERM)
        assert await again.wait() == 0, again.output()

    assert len(done) == maxsize
    assert {(consumer, pid) for _, consumer, pid, _ in done} == {("a", again.pid)}
    last = max(when for *_, when in done)
    print(
        f"\nrespawn recovery: {last - ready:.3f}s from the new process's start "
        f"({last - killed_at:.3f}s from the kill, with the interpreter's start); "
        f"min_idle={min_idle}s"
    )
    assert last - ready < min_idle / 3  # generous: the point is "not after min_idle"


async def _no_pending(redis: aioredis.Redis) -> bool:
    return sum((await group_pending(redis)).values()) == 0


# ------------------------------------------ 3. a peer takes a dead one's entries


async def test_a_peer_takes_a_dead_consumers_entries_after_min_idle(
    redis_url: str, tmp_path: Path
) -> None:
    """Killed and never back: a peer handles its entries after about min_idle + claim_interval.

    Before the kill the holder renews its entries (min_idle 0.5 s): the peer,
    already running, must not take any of them while the holder lives.
    """
    maxsize, concurrency, min_idle, interval = 4, 2, 0.5, 0.2
    options = {
        "concurrency": concurrency,
        "maxsize": maxsize,
        "min_idle": min_idle,
        "claim_interval": interval,
    }
    async with processes() as procs, client(redis_url) as redis:
        await send(redis_url, list(range(maxsize)))
        holder = Proc(config(redis_url, "a", hold=True, **options), tmp_path / "a.log")
        procs.append(holder)

        async def holding() -> bool:
            started = await records(redis, "started")
            return len(started) == concurrency and (await group_pending(redis)).get("a") == maxsize

        await eventually(holding, 15, "the holder holds every entry")
        peer = Proc(config(redis_url, "b", **options), tmp_path / "b.log")
        procs.append(peer)
        await peer.ready()
        # the peer runs for a few min_idle while the holder renews: nothing moves
        watched_until = time.monotonic() + 3 * min_idle
        while time.monotonic() < watched_until:
            assert (await group_pending(redis)).get("a") == maxsize, "taken from a live holder"
            await asyncio.sleep(0.02)
        assert await records(redis, "done") == []
        await holder.kill()
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            return done_set(await records(redis, "done")) == set(range(maxsize))

        await eventually(taken_over, 10, "the peer handled the dead consumer's entries")
        done = await records(redis, "done")
        await eventually(lambda: _no_pending(redis), 5, "the peer acked them")
        peer.signal(signal.SIGTERM)
        assert await peer.wait() == 0, peer.output()

    assert {consumer for _, consumer, _, _ in done} == {"b"}
    assert len(done) == maxsize
    recovery = max(when for *_, when in done) - killed_at
    print(
        f"\npeer takeover: {recovery:.3f}s after the kill "
        f"(target min_idle + claim_interval + 0.5 = {min_idle + interval + 0.5:.1f}s)"
    )
    assert recovery < 10


# ---------------------------------------------------- 4. SIGTERM during handling


async def test_sigterm_drains_acks_and_releases_nothing_lost_nothing_twice(
    redis_url: str, tmp_path: Path
) -> None:
    """A SIGTERM while handling: the process drains and exits 0; every message handled once.

    What it had not started is released, never left pending for min_idle
    (30 s here): the peer takes it at its next claim.
    """
    total, min_idle, interval = 30, 30.0, 0.1
    options = {"concurrency": 2, "maxsize": 6, "min_idle": min_idle, "claim_interval": interval}
    async with processes() as procs, client(redis_url) as redis:
        await send(redis_url, list(range(total)))
        busy = Proc(config(redis_url, "a", work=0.15, **options), tmp_path / "a.log")
        procs.append(busy)

        async def handling() -> bool:
            return len(await records(redis, "started")) >= 3

        await eventually(handling, 15, "handling")
        busy.signal(signal.SIGTERM)
        assert await busy.wait() == 0, busy.output()
        ended = time.monotonic()
        left = await pending_idle(redis, "a")
        peer = Proc(config(redis_url, "b", work=0.0, **options), tmp_path / "b.log")
        procs.append(peer)
        await peer.ready()

        async def all_done() -> bool:
            return done_set(await records(redis, "done")) == set(range(total))

        await eventually(all_done, 10, "every message handled")
        await eventually(lambda: _no_pending(redis), 5, "every message acked")
        peer.signal(signal.SIGTERM)
        assert await peer.wait() == 0, peer.output()
        done = await records(redis, "done")
        started = await records(redis, "started")

    # Anything still pending for the stopped consumer was released: idle since min_idle.
    assert all(idle >= (min_idle - 1) * 1000 for idle in left), left
    # Graceful: each message started once and handled once (no duplicate, no cancel).
    assert sorted(n for n, *_ in done) == list(range(total))
    assert sorted(n for n, *_ in started) == list(range(total))
    by_a = [n for n, consumer, *_ in done if consumer == "a"]
    print(
        f"\nSIGTERM: a handled {len(by_a)} (drained), released {len(left)}; stopped at {ended:.1f}"
    )


async def test_sigterm_with_a_short_grace_releases_the_handlers_it_cancels(
    redis_url: str, tmp_path: Path
) -> None:
    """Handlers that outlive the grace period are cancelled; their entries go to a peer at once."""
    maxsize, concurrency, min_idle, interval = 5, 2, 30.0, 0.1
    options = {
        "concurrency": concurrency,
        "maxsize": maxsize,
        "min_idle": min_idle,
        "claim_interval": interval,
    }
    async with processes() as procs, client(redis_url) as redis:
        await send(redis_url, list(range(maxsize)))
        stuck = Proc(config(redis_url, "a", hold=True, grace=0.5, **options), tmp_path / "a.log")
        procs.append(stuck)

        async def holding() -> bool:
            started = await records(redis, "started")
            return len(started) == concurrency and (await group_pending(redis)).get("a") == maxsize

        await eventually(holding, 15, "the process holds every entry")
        peer = Proc(config(redis_url, "b", **options), tmp_path / "b.log")
        procs.append(peer)
        await peer.ready()
        stuck.signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await stuck.wait()
        left = await pending_idle(redis, "a")

        async def all_done() -> bool:
            return done_set(await records(redis, "done")) == set(range(maxsize))

        await eventually(all_done, 10, "the peer handled what the stopped one left")
        taken = max(when for *_, when in await records(redis, "done")) - signalled
        await eventually(lambda: _no_pending(redis), 5, "acked")
        peer.signal(signal.SIGTERM)
        assert await peer.wait() == 0, peer.output()
        done = await records(redis, "done")

    assert code in (0, 128 + signal.SIGTERM), stuck.output()
    assert all(idle >= (min_idle - 1) * 1000 for idle in left), left
    assert sorted(n for n, *_ in done) == list(range(maxsize))
    assert {consumer for _, consumer, *_ in done} == {"b"}
    print(
        f"\nforced after a grace of 0.5s: exit {code}; a peer handled the released entries "
        f"{taken:.3f}s after the SIGTERM"
    )
    assert taken < min_idle / 3


# ---------------------------------------------------------------- 5. poison


async def test_a_crashing_message_is_dead_lettered_after_max_deliveries(
    redis_url: str, tmp_path: Path
) -> None:
    """A payload that kills its process: max_deliveries crashes, a dead letter, no crash loop."""
    max_deliveries, crasher, total = 3, 4, 10
    options = {
        "concurrency": 1,
        "maxsize": 1,
        "max_deliveries": max_deliveries,
        "crash_on": [crasher],
    }
    crashes = 0
    async with processes() as procs, client(redis_url) as redis:
        ids = await send(redis_url, list(range(total)))
        proc = Proc(config(redis_url, "a", **options), tmp_path / "a0.log")
        procs.append(proc)

        async def finished() -> bool:
            nonlocal proc, crashes
            if proc.process.poll() is not None:
                assert proc.process.returncode == 7, proc.output()
                crashes += 1
                assert crashes <= max_deliveries, "a crash loop"
                proc = Proc(config(redis_url, "a", **options), tmp_path / f"a{crashes}.log")
                procs.append(proc)
            return len(await dead_letters(redis)) == 1 and len(await records(redis, "done")) == 9

        await eventually(finished, 20, "the others handled, the crasher dead-lettered")
        await eventually(lambda: _no_pending(redis), 5, "acked")
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.output()
        dead = await dead_letters(redis)
        started = await records(redis, "started")
        done = await records(redis, "done")

    assert crashes == max_deliveries
    assert [n for n, *_ in started].count(crasher) == max_deliveries
    assert sorted(n for n, *_ in done) == [n for n in range(total) if n != crasher]
    [letter] = dead
    assert letter["id"] == ids[crasher]
    assert letter["data"] == str(crasher)
    assert letter["deliveries"] == str(max_deliveries + 1)
    assert letter["consumer"] == "a"
    assert letter["group"] == GROUP
    assert "without an ack" in letter["error"]


async def test_entries_buffered_behind_a_crashing_one_are_not_dead_lettered(
    redis_url: str, tmp_path: Path
) -> None:
    max_deliveries, total = 3, 5
    options = {
        "concurrency": 1,
        "maxsize": total,
        "max_deliveries": max_deliveries,
        "crash_on": [0],
    }
    crashes = 0
    async with processes() as procs, client(redis_url) as redis:
        await send(redis_url, list(range(total)))
        proc = Proc(config(redis_url, "a", **options), tmp_path / "a0.log")
        procs.append(proc)

        async def settled() -> bool:
            nonlocal proc, crashes
            if proc.process.poll() is not None:
                crashes += 1
                assert crashes <= max_deliveries + 1, "a crash loop"
                proc = Proc(config(redis_url, "a", **options), tmp_path / f"a{crashes}.log")
                procs.append(proc)
            handled = len(done_set(await records(redis, "done")))
            return handled + len(await dead_letters(redis)) >= total

        await eventually(settled, 20, "every entry handled or dead-lettered")
        proc.signal(signal.SIGTERM)
        await proc.wait()
        done = await records(redis, "done")
        dead = await dead_letters(redis)

    assert [letter["data"] for letter in dead] == ["0"]  # only the crasher
    assert done_set(done) == set(range(1, total))


async def test_a_failing_message_is_dead_lettered_with_its_error(redis_url: str) -> None:
    """A handler that always raises on one payload: max_deliveries runs, a dead letter, acked."""
    calls: Counter[int] = Counter()

    async def handler(n: int) -> None:
        calls[n] += 1
        if n == 3:
            raise ValueError(f"bad order {n}")

    worker = fluid.redis.StreamConsumerWorker(
        handler,
        redis=redis_url,
        stream=STREAM,
        group=GROUP,
        consumer="c",
        max_deliveries=4,
        min_idle=1.0,
        claim_interval=0.02,
        block=0.2,
        maxsize=3,
    )
    async with client(redis_url) as redis:
        ids = await send(redis_url, list(range(8)))
        await worker.startup()
        try:

            async def dead_lettered() -> bool:
                return len(await dead_letters(redis)) == 1 and len(calls) == 8

            await eventually(dead_lettered, 10, "dead-lettered")
            await eventually(lambda: _no_pending(redis), 5, "acked")
            status = await worker.status()
        finally:
            await worker.shutdown()
        [letter] = await dead_letters(redis)

    assert calls == Counter({n: 4 if n == 3 else 1 for n in range(8)})
    assert letter["id"] == ids[3]
    assert letter["data"] == "3"
    assert letter["deliveries"] == "4"
    assert letter["error"] == "ValueError: bad order 3"
    stream = status["stream"]
    assert stream["dead_lettered"] == 1
    assert stream["released"] == 3
    assert stream["acked"] == 7
    assert status["queue"]["failed"] == 4


# ------------------------------------------------------------ 6. Redis restart


async def test_redis_restart_without_persistence_the_consumer_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The server goes away and comes back empty: reported, no busy loop, the group made again.

    Without persistence the stream is gone: the oracle is that every message
    sent after the restart is handled, and that the consumer said so.
    """
    handled: list[int] = []

    async def handler(n: int) -> None:
        handled.append(n)

    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(broker, handler, name="c", min_idle=30, claim_interval=0.1, block=0.3)
    await send(redis_url, list(range(10)))
    await worker.startup()
    try:
        await eventually(_async(lambda: sorted(handled) == list(range(10))), 10, "before")
        redis_server.stop()

        async def down() -> bool:
            status = await worker.status()
            return not status["stream"]["connected"] and not status["ready"]

        await eventually(down, 10, "reported down")
        calls, cpu, wall = sum(broker.calls.values()), time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)  # the window the consumer spends with no server
        calls = sum(broker.calls.values()) - calls
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert worker.is_running()
        redis_server.start()

        async def up() -> bool:
            status = await worker.status()
            return status["stream"]["connected"] and status.get("ready") is True

        await eventually(up, 10, "reported up")
        await send(redis_url, list(range(100, 110)))
        await eventually(
            _async(lambda: set(range(100, 110)) <= set(handled)), 10, "sent after the restart"
        )
        async with client(redis_url) as redis:
            await eventually(lambda: _no_pending(redis), 5, "acked")
            groups: Any = await redis.xinfo_groups(STREAM)
    finally:
        await worker.shutdown()

    assert [g["name"] for g in groups] == [GROUP.encode()]
    assert sorted(handled) == list(range(10)) + list(range(100, 110))
    print(f"\nwhile down: {calls} broker calls and {cpu:.3f}s of CPU in {wall:.2f}s")
    assert cpu < 0.5 * wall, "a busy loop while the server was down"
    assert calls < 60, "a busy loop while the server was down"


async def test_redis_killed_and_restarted_with_persistence_loses_nothing() -> None:
    """An append-only server SIGKILLed mid-run: every message handled, the pending list empty."""
    server = RedisServer(appendonly=True)
    server.start()
    total, maxsize = 300, 10
    handled: list[int] = []

    async def handler(n: int) -> None:
        handled.append(n)
        await asyncio.sleep(0.001)

    worker = fluid.redis.StreamConsumerWorker(
        handler,
        redis=server.url,
        stream=STREAM,
        group=GROUP,
        consumer="c",
        concurrency=2,
        maxsize=maxsize,
        min_idle=30,
        claim_interval=0.1,
        block=0.3,
    )
    resent = 0
    try:
        await worker.startup()
        sent = 0
        while sent < total:
            chunk = list(range(sent, sent + 20))
            try:
                await send(server.url, chunk)
            except ConnectionError:
                resent += 1
                await asyncio.sleep(0.05)
                continue
            sent += len(chunk)
            if sent == 100:
                await eventually(_async(lambda: len(handled) >= 40), 10, "some handled")
                server.kill()
                await eventually(lambda: _down(worker), 10, "reported down")
                server.start()
        await eventually(_async(lambda: set(handled) >= set(range(total))), 15, "all handled")
        async with client(server.url) as redis:
            await eventually(lambda: _no_pending(redis), 5, "acked")
            assert await dead_letters(redis) == []
    finally:
        try:
            await worker.shutdown()
        finally:
            server.close()

    assert set(handled) == set(range(total))
    duplicates = len(handled) - total
    print(f"\npersistent restart: {total} messages, 0 lost, {duplicates} duplicates")
    assert duplicates <= maxsize


async def _down(worker: StreamConsumer) -> bool:
    return not (await worker.status())["stream"]["connected"]


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


# ------------------------------------------------------- 7. in process, adversarial


def _broker(url: str, consumer: str, stream: str = STREAM) -> RedisBroker:
    return RedisBroker(url, stream, GROUP, consumer, JsonSerializer(), f"{stream}:dead")


class Counting:
    """A handler that takes ``seconds``: what it handled, and the most it ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.handled: list[int] = []

    async def __call__(self, n: int) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        self.handled.append(n)


class Proxy:
    """A broker in front of ``RedisBroker``: counts, books and can hold each call.

    ``hold(name)`` makes the next calls of ``name`` wait (after ``entered``
    is set) until ``let_go(name)``: a test stops or cancels the consumer
    exactly there. ``outstanding`` is what the consumer was given and has
    not acked, released or dead-lettered: the broker's side of its bound.
    """

    def __init__(self, inner: RedisBroker, maxsize: int | None = None) -> None:
        self.inner = inner
        self.maxsize = maxsize
        self.calls: Counter[str] = Counter()
        self.entered: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.gates: dict[str, asyncio.Event] = {}
        self.outstanding: set[str] = set()
        self.worst = 0  # the most outstanding + asked for, at a read
        self.closed = False

    def hold(self, name: str) -> None:
        self.gates[name] = asyncio.Event()

    def let_go(self, name: str) -> None:
        self.gates.pop(name).set()

    async def _enter(self, name: str) -> None:
        self.calls[name] += 1
        self.entered[name].set()
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()

    def _asked(self, count: int) -> None:
        self.worst = max(self.worst, len(self.outstanding) + count)

    @property
    def stream(self) -> str:
        return self.inner.stream

    @property
    def group(self) -> str:
        return self.inner.group

    @property
    def consumer(self) -> str:
        return self.inner.consumer

    async def open(self) -> None:
        await self._enter("open")
        await self.inner.open()
        await self._enter("opened")  # connected, the group made: a cancel here is one in open()

    async def close(self) -> None:
        await self._enter("close")
        await self.inner.close()
        self.closed = True

    async def read_new(self, count: int, block: float) -> list[Entry]:
        await self._enter("read_new")
        self._asked(count)
        entries = await self.inner.read_new(count, block)
        self.outstanding.update(e.id for e in entries)
        return entries

    async def read_own(self, count: int, after: str) -> tuple[list[Entry], str | None]:
        await self._enter("read_own")
        self._asked(count)
        entries, cursor = await self.inner.read_own(count, after)
        self.outstanding.update(e.id for e in entries)
        return entries, cursor

    async def claim_idle(self, min_idle: float, count: int) -> list[Entry]:
        await self._enter("claim_idle")
        self._asked(count)
        entries = await self.inner.claim_idle(min_idle, count)
        self.outstanding.update(e.id for e in entries)
        return entries

    async def count_delivery(self, entry: Entry) -> None:
        await self._enter("count_delivery")
        await self.inner.count_delivery(entry)

    async def ack(self, ids: Sequence[str]) -> None:
        await self._enter("ack")
        await self.inner.ack(ids)
        self.outstanding.difference_update(ids)

    async def renew(self, ids: Sequence[str], min_idle: float) -> None:
        await self._enter("renew")
        await self.inner.renew(ids, min_idle)

    async def release(self, ids: Sequence[str], delay: float, min_idle: float) -> None:
        await self._enter("release")
        await self.inner.release(ids, delay, min_idle)
        self.outstanding.difference_update(ids)

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        await self._enter("dead_letter")
        await self.inner.dead_letter(entry, reason)
        self.outstanding.discard(entry.id)

    async def pending_ids(self, count: int) -> list[str]:
        await self._enter("pending_ids")
        return await self.inner.pending_ids(count)

    async def figures(self) -> BrokerFigures:
        return await self.inner.figures()


async def _connections(redis: aioredis.Redis) -> int:
    return len(await redis.client_list()) - 1  # not counting the one asking


async def _handled_by_a_new_run(url: str, consumer: str, expected: set[int]) -> set[int]:
    """Run a fresh consumer under ``consumer``'s name until ``expected`` is handled and
    nothing is pending; return what it handled."""
    handled: set[int] = set()

    async def handler(n: int) -> None:
        handled.add(n)

    worker = fluid.redis.StreamConsumerWorker(
        handler,
        redis=url,
        stream=STREAM,
        group=GROUP,
        consumer=consumer,
        min_idle=30,
        block=0.2,
    )
    await worker.startup()
    try:
        await eventually(_async(lambda: expected <= handled), 10, "the next run handled the rest")
        async with client(url) as redis:
            await eventually(lambda: _no_pending(redis), 10, "the next run acked what was pending")
    finally:
        await worker.shutdown()
    return handled


@pytest.mark.parametrize("where", ["ack", "release", "pending_ids"])
async def test_a_forced_stop_at_each_await_of_the_wind_down_loses_nothing(
    redis_url: str, where: str
) -> None:
    """force_stop while the wind-down waits on the broker: ends at once, closes, loses nothing.

    What it could not ack or release stays pending under its name: the next
    run under that name handles it.
    """
    total = 6
    handled: set[int] = set()
    gate = asyncio.Event()

    async def handler(n: int) -> None:
        handled.add(n)
        if n == 0:
            await gate.wait()  # the buffer is full behind it when the stop comes

    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(
        broker,
        handler,
        name="c",
        min_idle=30,
        maxsize=total,
        block=0.2,
        drain=False,
        stopping_grace_period=10,
    )
    async with client(redis_url) as redis:
        baseline = await _connections(redis)
        await send(redis_url, list(range(total)))
        await worker.startup()
        try:
            await eventually(
                _async(lambda: 0 in handled and len(broker.outstanding) == total), 10, "reading"
            )
            broker.hold(where)
            if where == "ack":
                gate.set()  # 0 is handled: its ack is held while the stop begins
                await eventually(_async(lambda: broker.entered["ack"].is_set()), 5, "acking")
                broker.entered["ack"].clear()
            worker.gracefully_stop()
            if where != "ack":
                gate.set()
            if where == "ack":  # the reader and the keeper ended: the wind-down waits for the acker
                reached = lambda: not _helpers_left("c")  # noqa: E731
            else:
                reached = broker.entered[where].is_set
            await eventually(_async(reached), 5, f"the wind-down in {where}")
            started = time.monotonic()
            worker.force_stop()
            async with asyncio.timeout(5):
                await worker.wait_for_shutdown()
            stopped = time.monotonic() - started
        finally:
            for name in list(broker.gates):
                broker.let_go(name)
            if not worker.worker_state.is_final:
                await worker.shutdown()
        assert worker.worker_state is fluid.WorkerState.FORCE_STOPPED
        assert broker.closed
        await eventually(lambda: _fewer(redis, baseline), 5, "its connections closed")
        rest = set(range(total)) - handled
        again = await _handled_by_a_new_run(redis_url, "c", rest)
        await eventually(lambda: _no_pending(redis), 5, "acked")
    assert rest <= again
    assert stopped < 2


def _helpers_left(name: str) -> list[asyncio.Task[Any]]:
    """The worker's reading and renewing loops still running."""
    names = {f"fluid:{name}:read", f"fluid:{name}:keep"}
    return [t for t in asyncio.all_tasks() if t.get_name() in names and not t.done()]


async def _fewer(redis: aioredis.Redis, baseline: int) -> bool:
    return await _connections(redis) <= baseline


async def test_a_second_force_stop_during_close_still_closes_the_connections(
    redis_url: str,
) -> None:
    """A cancel landing while the broker closes (a third signal): its clients still close."""
    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(broker, _nothing, name="c", min_idle=30, block=0.2)
    async with client(redis_url) as redis:
        baseline = await _connections(redis)
        await worker.startup()
        await eventually(_async(lambda: broker.calls["read_new"] > 0), 5, "reading")
        broker.hold("close")
        worker.gracefully_stop()
        try:
            await eventually(_async(lambda: broker.entered["close"].is_set()), 5, "closing")
            worker.force_stop()  # its cancel lands in the close
            for _ in range(20):  # many loop turns: the cancel is delivered
                await asyncio.sleep(0)
            broker.let_go("close")
            async with asyncio.timeout(5):
                await worker.wait_for_shutdown()
        finally:
            if "close" in broker.gates:
                broker.let_go("close")
            if not broker.closed:
                await broker.inner.close()  # what the worker left open: the test leaks nothing
        assert broker.closed  # the worker itself closed its clients
        await eventually(lambda: _fewer(redis, baseline), 5, "connections closed")


async def _nothing(message: object) -> None:
    pass


async def test_force_stop_while_opening_closes_the_clients(redis_url: str) -> None:
    """A forced stop while the group is being made: the worker's clients are closed."""
    broker = Proxy(_broker(redis_url, "c"))
    broker.hold("opened")
    worker = StreamConsumer(broker, _nothing, name="c", min_idle=30, block=0.2)
    async with client(redis_url) as redis:
        baseline = await _connections(redis)
        await worker.startup()
        try:
            await eventually(_async(lambda: broker.entered["opened"].is_set()), 5, "opening")
            assert await _connections(redis) > baseline
            worker.force_stop()
            async with asyncio.timeout(5):
                await worker.wait_for_shutdown()
            closed = await _fewer(redis, baseline)
        finally:
            if "opened" in broker.gates:
                broker.let_go("opened")
            await broker.inner.close()  # what the worker left open: the test leaks nothing
    assert worker.worker_state is fluid.WorkerState.FORCE_STOPPED
    assert closed
    assert broker.closed


async def test_a_handler_that_swallows_cancellation_does_not_hang_the_stop(
    redis_url: str,
) -> None:
    """A handler that ignores its cancel: the forced stop still ends, and loses nothing."""
    handled: set[int] = set()
    swallowed = 0
    begun = asyncio.Event()

    async def stubborn(n: int) -> None:
        nonlocal swallowed
        if n == 0:
            begun.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1  # and goes on as if nothing happened
                await asyncio.sleep(0.05)
        handled.add(n)

    worker = fluid.redis.StreamConsumerWorker(
        stubborn,
        redis=redis_url,
        stream=STREAM,
        group=GROUP,
        consumer="c",
        min_idle=30,
        block=0.2,
        maxsize=4,
        stopping_grace_period=0.2,
    )
    async with client(redis_url) as redis:
        await send(redis_url, list(range(4)))
        await worker.startup()
        try:
            async with asyncio.timeout(5):
                await begun.wait()
            started = time.monotonic()
            async with asyncio.timeout(10):
                await worker.shutdown()
            took = time.monotonic() - started
        finally:
            if not worker.worker_state.is_final:
                worker.force_stop()
                await worker.wait_for_shutdown()
        rest = set(range(4)) - handled
        again = await _handled_by_a_new_run(redis_url, "c", rest) if rest else set()
        await eventually(lambda: _no_pending(redis), 5, "acked")
    assert swallowed >= 1
    assert rest <= again
    assert took < 5


async def test_a_stop_while_blocked_in_xreadgroup_is_prompt(redis_url: str) -> None:
    """``block`` is 30 s: the stop cancels the blocked read (its own connection) at once."""
    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(broker, _nothing, name="c", min_idle=60, claim_interval=30, block=30)
    async with client(redis_url) as redis:
        await worker.startup()
        try:

            async def blocked() -> bool:
                clients: Any = await redis.client_list()
                return any("b" in c["flags"] and c["cmd"] == "xreadgroup" for c in clients)

            await eventually(blocked, 5, "blocked in XREADGROUP")
            started = time.monotonic()
            async with asyncio.timeout(10):
                await worker.shutdown()
            took = time.monotonic() - started
        finally:
            if not worker.worker_state.is_final:
                worker.force_stop()
        assert worker.worker_state is fluid.WorkerState.STOPPED
        assert await redis.xpending(STREAM, GROUP) is not None
    print(f"\nstop while blocked (block=30s): {took * 1000:.1f} ms")
    assert took < 3


async def test_an_entry_read_by_the_cancelled_read_is_released_at_the_stop(
    redis_url: str,
) -> None:
    """XREADGROUP delivered an entry but the stop cancelled the read: released, not left idle."""
    broker = Proxy(_broker(redis_url, "c"))
    handled: list[int] = []

    async def handler(n: int) -> None:
        handled.append(n)

    worker = StreamConsumer(broker, handler, name="c", min_idle=60, claim_interval=30, block=30)
    async with client(redis_url) as redis:
        await worker.startup()
        try:

            async def blocked() -> bool:
                clients: Any = await redis.client_list()
                return any("b" in c["flags"] and c["cmd"] == "xreadgroup" for c in clients)

            await eventually(blocked, 5, "blocked in XREADGROUP")
            # the reply is on its way when the stop cancels the read
            await redis.xadd(STREAM, {"data": "1"})
            worker.gracefully_stop()
            async with asyncio.timeout(10):
                await worker.wait_for_shutdown()
        finally:
            if not worker.worker_state.is_final:
                worker.force_stop()
        idle = await pending_idle(redis, "c")
    assert handled == [1] or all(i >= 59_000 for i in idle), (handled, idle)


async def test_the_buffer_bound_holds_while_a_slow_handler_runs(redis_url: str) -> None:
    """At every read, what the consumer holds plus what it asks for is at most maxsize."""
    maxsize, total = 5, 40
    slow = Counting(0.01)
    handled = slow.handled

    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(
        broker,
        slow,
        name="c",
        concurrency=2,
        maxsize=maxsize,
        min_idle=0.3,
        claim_interval=0.02,
        block=0.2,
    )
    samples: list[int] = []
    pending_samples: list[int] = []
    async with client(redis_url) as redis:
        await send(redis_url, list(range(total)))
        await worker.startup()
        try:
            while len(handled) < total:
                status = await worker.status()
                samples.append(status["stream"]["held"])
                pending_samples.append((await group_pending(redis)).get("c", 0))
                assert len(samples) < 10_000, "stuck"
            await eventually(lambda: _no_pending(redis), 5, "acked")
        finally:
            await worker.shutdown()
    assert sorted(handled) == list(range(total))
    assert max(samples) <= maxsize
    assert max(pending_samples) <= maxsize
    assert broker.worst <= maxsize, broker.worst
    assert slow.most == 2


async def test_concurrency_above_maxsize_runs_at_most_maxsize_handlers(redis_url: str) -> None:
    maxsize, total = 3, 30
    handler = Counting(0.005)
    handled = handler.handled

    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(
        broker, handler, name="c", concurrency=8, maxsize=maxsize, min_idle=30, block=0.2
    )
    async with client(redis_url) as redis:
        await send(redis_url, list(range(total)))
        await worker.startup()
        try:
            await eventually(_async(lambda: len(handled) == total), 10, "handled")
            await eventually(lambda: _no_pending(redis), 5, "acked")
        finally:
            await worker.shutdown()
    assert sorted(handled) == list(range(total))
    assert handler.most <= maxsize
    assert broker.worst <= maxsize


async def _long_handler_run(
    redis_url: str, holder_interval: float
) -> tuple[Counter[int], dict[str, list[int]]]:
    """A holds a message 4 x min_idle while B, claiming often, waits for idle entries."""
    min_idle = 0.3
    runs: Counter[int] = Counter()
    by: dict[str, list[int]] = {"a": [], "b": []}
    long_started = asyncio.Event()

    def handler(name: str) -> Callable[[int], Awaitable[None]]:
        async def handle(n: int) -> None:
            runs[n] += 1
            by[name].append(n)
            if n == 0:
                long_started.set()
                await asyncio.sleep(4 * min_idle)

        return handle

    a = fluid.redis.StreamConsumerWorker(
        handler("a"),
        redis=redis_url,
        stream=STREAM,
        group=GROUP,
        consumer="a",
        name="a",
        min_idle=min_idle,
        claim_interval=holder_interval,
        block=0.2,
        maxsize=1,
    )
    b = fluid.redis.StreamConsumerWorker(
        handler("b"),
        redis=redis_url,
        stream=STREAM,
        group=GROUP,
        consumer="b",
        name="b",
        min_idle=min_idle,
        claim_interval=0.02,
        block=0.2,
    )
    await send(redis_url, [0])
    await a.startup()
    try:
        async with asyncio.timeout(5):
            await long_started.wait()
        await b.startup()
        await send(redis_url, [1, 2, 3])
        async with client(redis_url) as redis:
            await eventually(_async(lambda: set(runs) == {0, 1, 2, 3}), 10, "handled")
            await eventually(lambda: _no_pending(redis), 10, "acked")
    finally:
        await b.shutdown()
        await a.shutdown()
    return runs, by


async def test_a_handler_longer_than_min_idle_is_not_redelivered(redis_url: str) -> None:
    """Renewal: a peer claiming every 20 ms never takes an entry whose handler still runs."""
    runs, by = await _long_handler_run(redis_url, holder_interval=0.05)
    assert runs[0] == 1, by
    assert 0 in by["a"]


async def test_a_long_handler_is_renewed_whatever_the_claim_interval(redis_url: str) -> None:
    """claim_interval above min_idle: renewals keep their own pace (min_idle / 3)."""
    runs, by = await _long_handler_run(redis_url, holder_interval=1.0)
    assert runs[0] == 1, by


async def _retry_after(redis_url: str, delay: float, min_idle: float) -> float:
    """Seconds between a ``Retry(delay)`` and the entry's next delivery."""
    times: list[float] = []

    async def handler(n: int) -> None:
        times.append(time.monotonic())
        if len(times) == 1:
            raise fluid.redis.Retry(delay=delay)

    worker = fluid.redis.StreamConsumerWorker(
        handler,
        redis=redis_url,
        stream=STREAM,
        group=GROUP,
        consumer="c",
        min_idle=min_idle,
        claim_interval=0.02,
        block=0.2,
    )
    await send(redis_url, [7])
    await worker.startup()
    try:
        await eventually(_async(lambda: len(times) == 2), 10, "delivered again")
        async with client(redis_url) as redis:
            await eventually(lambda: _no_pending(redis), 5, "acked")
        status = await worker.status()
    finally:
        await worker.shutdown()
    assert status["queue"]["failed"] == 0
    assert status["stream"]["released"] == 1
    return times[1] - times[0]


async def test_retry_delivers_again_after_its_delay(redis_url: str) -> None:
    took = await _retry_after(redis_url, delay=0.4, min_idle=2.0)
    print(f"\nRetry(delay=0.4): delivered again after {took:.3f}s")
    assert 0.38 <= took < 5


async def test_a_retry_longer_than_min_idle_waits_its_delay(redis_url: str) -> None:
    took = await _retry_after(redis_url, delay=1.0, min_idle=0.3)
    assert took >= 0.95


async def test_own_pending_entries_behind_trimmed_ones_are_handled_at_once(
    redis_url: str,
) -> None:
    """A restart whose first own-pending batch was trimmed away (MAXLEN, XDEL) goes on past it."""
    handled: list[int] = []

    async def handler(n: int) -> None:
        handled.append(n)

    async with client(redis_url) as redis:
        ids = await send(redis_url, list(range(4)))
        await redis.xgroup_create(STREAM, GROUP, id="0")
        await redis.xreadgroup(GROUP, "c", {STREAM: ">"}, count=10)  # "c" dies holding 4
        await redis.xdel(STREAM, ids[0], ids[1])  # trimmed while it was down
        worker = fluid.redis.StreamConsumerWorker(
            handler, redis=redis_url, stream=STREAM, group=GROUP, consumer="c",
            maxsize=2, min_idle=30, block=0.2,
        )  # fmt: skip
        await worker.startup()
        try:
            await eventually(_async(lambda: sorted(handled) == [2, 3]), 3, "handled at once")
        finally:
            await worker.shutdown()


@pytest.mark.parametrize("how", ["stopped", "frozen"])
async def test_a_stop_while_the_server_is_away_is_bounded(
    redis_server: RedisServer, redis_url: str, how: str
) -> None:
    """A stop with the server gone (refusing) or frozen (SIGSTOP: no answer at all) ends.

    The wind-down's round trips are bounded by the grace period (1 s here):
    the worker ends, its connections closed, instead of waiting on the broker
    (frozen: forced by its grace period, since the wind-down's own bound
    starts after the stop request).
    """
    handled: list[int] = []

    async def handler(n: int) -> None:
        handled.append(n)

    broker = Proxy(_broker(redis_url, "c"))
    worker = StreamConsumer(
        broker, handler, name="c", min_idle=30, block=0.3, stopping_grace_period=1
    )
    await send(redis_url, [1, 2, 3])
    await worker.startup()
    process = redis_server.process
    assert process is not None
    try:
        await eventually(_async(lambda: len(handled) == 3), 10, "handled")
        if how == "stopped":
            redis_server.stop()
        else:
            os.kill(process.pid, signal.SIGSTOP)
        started = time.monotonic()
        async with asyncio.timeout(15):
            await worker.shutdown()
        took = time.monotonic() - started
    finally:
        if how == "frozen":
            os.kill(process.pid, signal.SIGCONT)
        if not worker.worker_state.is_final:
            worker.force_stop()
            await worker.wait_stopped()
    # a frozen server holds the wind-down until the grace period forces it
    assert worker.worker_state in (fluid.WorkerState.STOPPED, fluid.WorkerState.FORCE_STOPPED)
    assert broker.closed
    print(f"\nstop with the server {how}: {took:.3f}s, {worker.worker_state.value}")
    assert took < 10


async def test_a_renewal_does_not_take_back_an_entry_a_peer_claimed(redis_url: str) -> None:
    """After renewals that failed (an outage), a peer may own the entry: it stays the peer's.

    A plain ``XCLAIM`` took it back once idle past the renewal's threshold,
    then the peer's renewal took it again, and so on, both handling it.
    """
    (taken, kept) = await send(redis_url, [1, 2])
    broker = _broker(redis_url, "holder")
    await broker.open()
    try:
        read = await broker.read_new(10, 0.1)
        assert [entry.id for entry in read] == [taken, kept]
        async with client(redis_url) as redis:
            await redis.xclaim(STREAM, GROUP, "peer", 0, [taken], justid=True)

            async def owners() -> dict[str, tuple[str, int]]:
                rows: list[dict[str, Any]] = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
                return {
                    _decoded(row["message_id"]): (
                        _decoded(row["consumer"]),
                        int(row["time_since_delivered"]),
                    )
                    for row in rows
                }

            async def idle_past_threshold() -> bool:
                return all(idle > 60 for _, idle in (await owners()).values())

            await eventually(idle_past_threshold, 10, "both entries idle past 60 ms")
            await broker.renew([taken, kept], 0.05)  # the holder's renewal of both
            after = await owners()
        assert after[taken][0] == "peer"  # not taken back
        assert after[kept][0] == "holder"
        assert after[kept][1] < after[taken][1]  # the holder's own entry was renewed
    finally:
        await broker.close()


def _decoded(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
