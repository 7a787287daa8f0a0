"""Case 12: a Redis stream consumer against hand-written ``redis.asyncio`` loops.

The case starts its own ``redis-server`` (127.0.0.1, a free port, no
persistence, its own temporary directory; stopped by its pid at the end),
so it needs the ``redis-server`` binary and redis-py (the ``redis`` extra).
Both sides use the same server, the same client library and the same
payloads (``{"data": <JSON>}`` entries, decoded with ``json.loads`` on both
sides), in the same run, interleaved.

fluid: ``fluid.redis.StreamConsumerWorker(handler, redis=url, stream=...,
group=...)`` with its default settings (``maxsize=100``, ``concurrency=1``,
``block=5``, ``min_idle=30``, so ``claim_interval=5``).

asyncio, the batched loop: the simplest correct consumer of a group that
acks in batches, one task running::

    while True:
        reply = await client.xreadgroup(group, name, {stream: ">"}, count=100, block=5000)
        for entry_id, fields in rows(reply):
            await handler(json.loads(fields[b"data"]))
        await client.xack(stream, group, *ids)  # one XACK per read

asyncio, one ack per message: the same loop with ``await
client.xack(stream, group, entry_id)`` after each handler; and (``info``)
the naive loop, one ``XREADGROUP COUNT 1`` and one ``XACK`` a message.

The hand-written clients have no socket timeout, as fluid's reader: redis-py
8 times a read out after 5 s by default, as long as ``BLOCK 5000`` waits.

Rows:

* **throughput**: the stream is pre-filled with ``MESSAGES`` entries (a
  pipeline, not timed), then the clock runs from the consumer's start until
  every entry was handled **and** acked (the handler's count reached the
  total, then ``XPENDING`` polled every millisecond until nothing is
  pending): the same "done" for every side. Target ``>= 0.80x`` the batched
  loop and ``>= 10x`` the one-ack-per-message loop (which runs, as the
  ``COUNT 1`` loop, on a quarter of the entries: it is slow, and the figure
  is per second; fluid is timed on as many).
* **latency at 1,000 msg/s**: a producer task on the same loop appends one
  entry a millisecond (on a grid) carrying ``time.perf_counter()``; the
  handler records ``perf_counter() - sent``. p50 and p99 of each run (the
  first 10 % dropped as warm-up), median over the runs. Target: fluid's p50
  at most 1 ms above the batched loop's (the row's figure is the difference).
* **idle cost**: each side consumes an empty stream alone on a server of its
  own for ``IDLE_SECONDS``; the figure is the commands the server ran in
  that window (``INFO commandstats`` after a ``CONFIG RESETSTAT``, the
  measuring client's own ``INFO`` and ``CONFIG`` left out) per second.
  Target fluid ``<= 1`` command/s (expected 0.4: one read per ``block`` and
  one ``XAUTOCLAIM`` per ``claim_interval``). With ``--quick`` the window
  is too short for 5 s periods: fluid runs with ``block=0.5`` and
  ``claim_interval=0.5`` (and the batched loop with ``BLOCK 500``) for 2 s,
  as an ``info`` row (expected about 4 commands/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

from ._harness import (
    Countdown,
    Options,
    Row,
    at_least,
    at_most,
    cancel_and_wait,
    interleave_many,
    wait_for,
)

NAME = "streams"
CASE = "12 streams"
MESSAGES = (20_000, 2_000)
"""Entries a throughput run consumes: full, ``--quick``."""
ONE_ACK_SHARE = 4
"""The one-ack-per-message loop consumes ``MESSAGES // ONE_ACK_SHARE`` entries (it is slow)."""
RATE = 1_000
"""Entries a second the latency producer appends."""
LATENCY_SECONDS = (2.0, 0.5)
"""Seconds of producing per latency run: full, ``--quick``."""
WARM_UP = 0.1
"""Share of each latency run's first samples left out."""
IDLE_SECONDS = 10.0
"""The idle window with the default settings (two 5 s periods)."""
QUICK_IDLE = (2.0, 0.5)
"""``--quick``: the window, and the ``block`` / ``claim_interval`` used (seconds)."""
COUNT = 100
"""``XREADGROUP COUNT`` of the hand-written loops (fluid's default ``maxsize`` too)."""
GROUP = "bench"
FIELD = b"data"
POLL = 0.001
"""Seconds between two ``XPENDING`` looks while waiting for the last acks."""

SERVER_SETTINGS = (
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--loglevel",
    "warning",
)
"""No persistence: the server keeps nothing on disk."""

Handler = Callable[[Any], Awaitable[None]]


# ------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` of the case's own: yields its URL; stopped by its pid on exit.

    127.0.0.1 on a free port, no RDB and no AOF, a temporary directory.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("the streams case needs redis-server (apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="fluid-bench-redis-")
    process: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(5):
            port = _free_port()
            process = subprocess.Popen(
                [binary, "--port", str(port), *SERVER_SETTINGS, "--dir", directory],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the bench is not sent to it
            )
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and process.poll() is None:
                if _answers(port):
                    break
                time.sleep(0.01)
            if process.poll() is None and _answers(port):
                break
            _stop(process)  # the port was taken in between, or it never answered
            process = None
        if process is None:
            raise RuntimeError("redis-server did not start on a free port")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(10.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ------------------------------------------------------------------ the sides


def _rows(reply: Any) -> list[Any]:
    """The ``(id, fields)`` rows of an ``XREADGROUP`` reply on one stream (RESP2)."""
    return reply[0][1] if reply else []


async def batched_loop(
    client: Any, stream: str, handler: Handler, *, block_ms: int = 5000, name: str = "hand"
) -> None:
    """The hand-written batched consumer: one ``XACK`` per read; ends when cancelled."""
    loads = json.loads
    while True:
        reply = await client.xreadgroup(GROUP, name, {stream: ">"}, count=COUNT, block=block_ms)
        ids = []
        for entry_id, fields in _rows(reply):
            await handler(loads(fields[FIELD]))
            ids.append(entry_id)
        if ids:
            await client.xack(stream, GROUP, *ids)


async def one_ack_loop(client: Any, stream: str, handler: Handler) -> None:
    """The hand-written consumer that acks each message after its handler; ends when cancelled."""
    loads = json.loads
    while True:
        reply = await client.xreadgroup(GROUP, "hand", {stream: ">"}, count=COUNT, block=5000)
        for entry_id, fields in _rows(reply):
            await handler(loads(fields[FIELD]))
            await client.xack(stream, GROUP, entry_id)


async def one_by_one_loop(client: Any, stream: str, handler: Handler) -> None:
    """The naive consumer: one ``XREADGROUP COUNT 1`` and one ``XACK`` a message."""
    loads = json.loads
    while True:
        reply = await client.xreadgroup(GROUP, "hand", {stream: ">"}, count=1, block=5000)
        for entry_id, fields in _rows(reply):
            await handler(loads(fields[FIELD]))
            await client.xack(stream, GROUP, entry_id)


HandWritten = Callable[[Any, str, Handler], Coroutine[Any, Any, None]]


class Bench:
    """The server's URL, a client for setting up and watching, and fresh stream names."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.aioredis = aioredis
        self.admin = aioredis.Redis.from_url(url)
        self.runs = 0

    async def new_stream(self, count: int = 0) -> str:
        """A fresh stream with its group, holding ``count`` entries ``{"n": i}``."""
        self.runs += 1
        stream = f"bench:{self.runs}"
        await self.admin.xgroup_create(stream, GROUP, id="0", mkstream=True)
        step = 1000
        for first in range(0, count, step):
            async with self.admin.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + step, count)):
                    pipe.xadd(stream, {FIELD: b'{"n":%d}' % n})
                await pipe.execute()
        return stream

    async def all_acked(self, stream: str) -> None:
        """Return once nothing is pending in the group (every entry read was acked)."""
        while True:
            summary = await self.admin.xpending(stream, GROUP)
            if not summary["pending"]:
                return
            await asyncio.sleep(POLL)  # the state is the server's: looked at, not awaited

    def client(self) -> Any:
        """A hand-written consumer's client: no socket timeout, as its reads block (fluid's too).

        redis-py 8 times reads out after 5 s by default, as long as ``BLOCK 5000``
        waits; and with a socket timeout, its sends go through ``asyncio.wait_for``,
        which on Python 3.11 can swallow a ``cancel()`` that lands as the send
        completes (the task then waits out its read).
        """
        return self.aioredis.Redis.from_url(self.url, socket_timeout=None)

    def worker(self, handler: Handler, stream: str, **settings: Any) -> Any:
        import fluid.redis

        return fluid.redis.StreamConsumerWorker(
            handler, redis=self.url, stream=stream, group=GROUP, consumer="fluid", **settings
        )

    @contextlib.asynccontextmanager
    async def hand_written(
        self, loop: HandWritten, stream: str, handler: Handler
    ) -> AsyncIterator[None]:
        """Run the hand-written ``loop`` in a task with a client of its own, while inside."""
        client = self.client()
        task = asyncio.create_task(loop(client, stream, handler))
        try:
            yield
        finally:
            await cancel_and_wait([task])
            await client.aclose()


# ------------------------------------------------------------------ throughput


async def fluid_throughput(bench: Bench, count: int) -> float:
    """Seconds for a ``StreamConsumerWorker`` to handle and ack ``count`` waiting entries."""
    stream = await bench.new_stream(count)
    counter = Countdown(count)
    worker = bench.worker(counter.handle, stream)
    start = time.perf_counter()
    await worker.startup()
    try:
        await wait_for(counter.done, "fluid stream consumer")
        await wait_for(bench.all_acked(stream), "fluid stream consumer's acks")
        return time.perf_counter() - start
    finally:
        await worker.shutdown()
        await bench.admin.delete(stream)


async def hand_throughput(bench: Bench, loop: HandWritten, count: int) -> float:
    """Seconds for a hand-written ``loop`` to handle and ack ``count`` waiting entries."""
    stream = await bench.new_stream(count)
    counter = Countdown(count)
    start = time.perf_counter()
    try:
        async with bench.hand_written(loop, stream, counter.handle):
            await wait_for(counter.done, f"hand-written {loop.__name__}")
            await wait_for(bench.all_acked(stream), f"hand-written {loop.__name__}'s acks")
            return time.perf_counter() - start
    finally:
        await bench.admin.delete(stream)


# ------------------------------------------------------------------ latency


class Latencies:
    """The handler of the latency runs: records how long ago each entry was sent."""

    __slots__ = ("done", "expected", "seconds")

    def __init__(self, expected: int) -> None:
        self.seconds: list[float] = []
        self.expected = expected
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(self, message: dict[str, float]) -> None:
        seconds = self.seconds
        seconds.append(time.perf_counter() - message["t"])
        if len(seconds) == self.expected:
            self.done.set_result(None)

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 in ms, the warm-up left out."""
        kept = self.seconds[int(len(self.seconds) * WARM_UP) :]
        cuts = statistics.quantiles(kept, n=100)
        return cuts[49] * 1000, cuts[98] * 1000


async def produce_at_rate(bench: Bench, stream: str, count: int) -> None:
    """Append ``count`` entries at ``RATE`` a second, each carrying its send time."""
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = b'{"t":%r}' % time.perf_counter()
        await bench.admin.xadd(stream, {FIELD: payload})


async def fluid_latency(bench: Bench, seconds: float) -> tuple[float, float]:
    """p50 and p99 (ms) from send to handler through a ``StreamConsumerWorker``."""
    stream = await bench.new_stream()
    latencies = Latencies(int(RATE * seconds))
    worker = bench.worker(latencies.handle, stream)
    await worker.startup()
    try:
        await asyncio.sleep(0.05)  # reading (blocked in XREADGROUP) before the first entry
        await produce_at_rate(bench, stream, latencies.expected)
        await wait_for(latencies.done, "fluid latency run")
    finally:
        await worker.shutdown()
        await bench.admin.delete(stream)
    return latencies.percentiles()


async def hand_latency(bench: Bench, seconds: float) -> tuple[float, float]:
    """p50 and p99 (ms) from send to handler through the hand-written batched loop."""
    stream = await bench.new_stream()
    latencies = Latencies(int(RATE * seconds))
    try:
        async with bench.hand_written(batched_loop, stream, latencies.handle):
            await asyncio.sleep(0.05)
            await produce_at_rate(bench, stream, latencies.expected)
            await wait_for(latencies.done, "hand-written latency run")
    finally:
        await bench.admin.delete(stream)
    return latencies.percentiles()


# ------------------------------------------------------------------ idle cost


async def idle_commands(
    bench: Bench, start: Callable[[str], Awaitable[Callable[[], Awaitable[None]]]], seconds: float
) -> float:
    """Commands a second the server runs while only the consumer ``start`` made is connected.

    ``start(stream)`` starts a consumer of an empty stream and returns its stop.
    """
    stream = await bench.new_stream()
    stop = await start(stream)
    try:
        await asyncio.sleep(0.5)  # past its start: group, own pending, first blocking read
        await bench.admin.config_resetstat()
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        stats = await bench.admin.info("commandstats")
        elapsed = time.perf_counter() - began
    finally:
        await stop()
    ours = {"cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config"}
    calls = sum(int(v["calls"]) for k, v in stats.items() if k not in ours)
    return calls / elapsed


async def idle_pair(options: Options) -> tuple[float, float]:
    """fluid's and the batched loop's idle commands a second, each alone on a server of its own."""
    seconds, period = (QUICK_IDLE[0], QUICK_IDLE[1]) if options.quick else (IDLE_SECONDS, None)

    async def start_fluid(stream: str) -> Callable[[], Awaitable[None]]:
        settings = {} if period is None else {"block": period, "claim_interval": period}
        worker = fluid_bench.worker(_ignore, stream, **settings)
        await worker.startup()
        return worker.shutdown  # type: ignore[no-any-return]

    async def start_hand(stream: str) -> Callable[[], Awaitable[None]]:
        client = hand_bench.client()
        block_ms = 5000 if period is None else int(period * 1000)
        task = asyncio.create_task(batched_loop(client, stream, _ignore, block_ms=block_ms))

        async def stop() -> None:
            await cancel_and_wait([task])
            await client.aclose()

        return stop

    with redis_server() as fluid_url, redis_server() as hand_url:
        fluid_bench, hand_bench = Bench(fluid_url), Bench(hand_url)
        try:
            fluid_rate, hand_rate = await asyncio.gather(
                idle_commands(fluid_bench, start_fluid, seconds),
                idle_commands(hand_bench, start_hand, seconds),
            )
        finally:
            await fluid_bench.admin.aclose()
            await hand_bench.admin.aclose()
    return fluid_rate, hand_rate


async def _ignore(message: object) -> None:
    pass


# ------------------------------------------------------------------ the case


async def run(options: Options) -> list[Row]:
    """Throughput, latency at 1,000 msg/s and idle cost, fluid against hand-written loops."""
    count = options.size(*MESSAGES)
    few = count // ONE_ACK_SHARE
    seconds = options.size(*LATENCY_SECONDS)
    with redis_server() as url:
        bench = Bench(url)
        try:
            await bench.admin.ping()
            fluid_s, batched_s, fluid_few_s, one_ack_s, one_by_one_s = await interleave_many(
                [
                    lambda: fluid_throughput(bench, count),
                    lambda: hand_throughput(bench, batched_loop, count),
                    lambda: fluid_throughput(bench, few),
                    lambda: hand_throughput(bench, one_ack_loop, few),
                    lambda: hand_throughput(bench, one_by_one_loop, few),
                ],
                options.times(5),
            )
            fluid_lat, hand_lat = await interleave_many(
                [lambda: fluid_latency(bench, seconds), lambda: hand_latency(bench, seconds)],
                options.times(3),
            )
        finally:
            await bench.admin.aclose()
    idle_fluid, idle_hand = await idle_pair(options)

    fluid_p50 = statistics.median(p50 for p50, _ in fluid_lat)
    hand_p50 = statistics.median(p50 for p50, _ in hand_lat)
    fluid_p99 = statistics.median(p99 for _, p99 in fluid_lat)
    hand_p99 = statistics.median(p99 for _, p99 in hand_lat)
    rate = f"{RATE:,} msg/s"
    idle = (
        f"idle, commands/s per consumer over {IDLE_SECONDS:.0f} s, defaults"
        if not options.quick
        else f"idle, commands/s over {QUICK_IDLE[0]:.0f} s, block=claim_interval={QUICK_IDLE[1]}"
    )
    return [
        Row(
            CASE,
            f"{count:,} entries, no-op handler, vs batched loop (COUNT {COUNT}, 1 XACK a read)",
            "msg/s",
            count / min(fluid_s),
            count / min(batched_s),
            higher_is_better=True,
            target=at_least(0.8),
            key="streams",
        ),
        Row(
            CASE,
            f"{few:,} entries, no-op handler, vs 1 XACK a message",
            "msg/s",
            few / min(fluid_few_s),
            few / min(one_ack_s),
            higher_is_better=True,
            target=at_least(10.0),
        ),
        Row(
            CASE,
            f"{few:,} entries, no-op handler, vs 1 XREADGROUP COUNT 1 + 1 XACK a message",
            "msg/s",
            few / min(fluid_few_s),
            few / min(one_by_one_s),
            higher_is_better=True,
        ),
        Row(CASE, f"latency p50 at {rate}, vs batched loop", "ms", fluid_p50, hand_p50, False),
        Row(CASE, f"latency p99 at {rate}, vs batched loop", "ms", fluid_p99, hand_p99, False),
        Row(
            CASE,
            f"latency p50 added at {rate} (fluid - batched loop)",
            "ms",
            fluid_p50 - hand_p50,
            None,
            higher_is_better=False,
            target=at_most(1.0, "<= 1 ms"),
        ),
        Row(
            CASE,
            idle,
            "cmd/s",
            idle_fluid,
            idle_hand,
            higher_is_better=False,
            target=None if options.quick else at_most(1.0, "<= 1 cmd/s"),
        ),
    ]
