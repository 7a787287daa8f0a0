"""Fault injection: stream consumer processes SIGKILLed while a producer sends.

(a) Three consumer processes of one group (``tests/_stream_targets.py``)
handle a stream a producer keeps appending to; the scenario SIGKILLs one at
a random moment while it holds entries, and respawns it under the same
name. ``min_idle`` is 30 s: within the scenario only the respawn's reading
of its own pending list can recover what the killed one held. Each handler
records ``done`` in Redis before it returns (so before the ack), and the
books are checked by payload: every message handled (0 lost), every second
run of a message follows a kill of the process that ran it first, at most
``concurrency + maxsize`` of them per kill, nothing pending and nothing
dead-lettered at the end. The time each respawn took to finish what its
name held is reported.

(b) Consumers that never come back: holders (whose handlers never end) are
killed while peers run; the peers must take the holders' entries after
``min_idle`` (0.5 s, ``claim_interval`` 0.2 s). The recovery time from each
kill is reported (the target: ``min_idle + claim_interval + 0.5`` s).

``FLUID_STRESS_SEED`` replays a run's random choices (not its timing).
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..test_redis_faults import (
    STREAM,
    Proc,
    Record,
    client,
    config,
    dead_letters,
    done_set,
    eventually,
    group_pending,
    processes,
    records,
    send,
)
from .conftest import Report

MIN_KILLS = 3
"""Kills every run injects, however short."""


async def _pending_ids(redis: Any, consumer: str) -> list[str]:
    rows: Any = await redis.xpending_range(
        STREAM, "g", min="-", max="+", count=10_000, consumername=consumer
    )
    return [row["message_id"].decode() for row in rows]


def _figures(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


async def test_consumers_sigkilled_and_respawned_lose_nothing(
    redis_url: str, tmp_path: Path, stress_seconds: float, stress_seed: int, report: Report
) -> None:
    seed = stress_seed
    rng = random.Random(seed)
    concurrency, maxsize = 2, 6
    names = ["c0", "c1", "c2"]
    report(seconds=stress_seconds)

    def spawn(name: str, generation: int) -> Proc:
        options = {
            "concurrency": concurrency,
            "maxsize": maxsize,
            "work": 0.005,
            "block": 0.5,
            "min_idle": 30.0,
        }
        return Proc(config(redis_url, name, **options), tmp_path / f"{name}-{generation}.log")

    killed: dict[int, str] = {}  # pid -> consumer name
    # for each kill: the respawned process and the payloads its name held
    recoveries: list[tuple[Proc, set[int]]] = []
    payload_of: dict[str, int] = {}
    async with processes() as procs, client(redis_url) as redis:
        live = {name: spawn(name, 0) for name in names}
        procs.extend(live.values())
        for proc in live.values():
            await proc.ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stress_seconds
        sent = 0
        while loop.time() < deadline or len(killed) < MIN_KILLS:
            assert loop.time() < deadline + 60, f"seed={seed}: too few kills landed"
            if sent - await redis.llen(f"{STREAM}:done") < 200:  # the producer keeps ahead
                chunk = list(range(sent, sent + rng.randint(10, 60)))
                for entry_id, n in zip(await send(redis_url, chunk), chunk, strict=True):
                    payload_of[entry_id] = n
                sent += len(chunk)
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # the injection's random pace
            if rng.random() < 0.3:
                name = rng.choice(names)
                victim = live[name]
                if victim.ready_at() is None or not (await group_pending(redis)).get(name):
                    continue  # still starting, or idle: a kill now would test nothing
                await victim.kill()
                killed[victim.pid] = name
                held = {payload_of[i] for i in await _pending_ids(redis, name)}
                live[name] = spawn(name, len(killed))
                procs.append(live[name])
                recoveries.append((live[name], held))

        async def all_done() -> bool:
            return done_set(await records(redis, "done")) == set(range(sent))

        await eventually(all_done, 60, f"seed={seed}: every message handled")

        async def nothing_pending() -> bool:
            return sum((await group_pending(redis)).values()) == 0

        await eventually(nothing_pending, 20, f"seed={seed}: every message acked")
        for proc in live.values():
            proc.signal(signal.SIGTERM)
        for proc in live.values():
            assert await proc.wait(30) == 0, proc.output()
        done = await records(redis, "done")
        dead = await dead_letters(redis)
    duration = loop.time() - (deadline - stress_seconds)

    assert done_set(done) == set(range(sent)), f"seed={seed}: lost messages"
    runs: dict[int, list[Record]] = defaultdict(list)
    for rec in done:
        runs[rec[0]].append(rec)
    per_kill: Counter[int] = Counter()
    for n, handled in runs.items():
        for rec in handled[:-1]:  # a run that was not acked: its process was killed
            assert rec[2] in killed, f"seed={seed}: {n} handled twice without a kill: {handled}"
            per_kill[rec[2]] += 1
    bound = concurrency + maxsize
    assert all(d <= bound for d in per_kill.values()), f"seed={seed}: {per_kill}"
    assert dead == [], f"seed={seed}"

    # How long each respawn took to finish what its name held at the kill (a
    # respawn killed before it finished is not counted: a later one finished it).
    by_pid: dict[int, dict[int, float]] = defaultdict(dict)
    for n, _, pid, when in done:
        by_pid[pid][n] = when
    respawn = []
    chained = 0
    for proc, held in recoveries:
        ready = proc.ready_at()
        finished = by_pid[proc.pid]
        if not held or ready is None:
            continue
        if held <= finished.keys():
            respawn.append(max(finished[n] for n in held) - ready)
        else:
            assert proc.pid in killed, f"seed={seed}: a respawn left its name's entries"
            chained += 1
    report(
        sent=sent,
        lost=0,
        kills=len(killed),
        duplicates=sum(per_kill.values()),
        max_duplicates_per_kill=max(per_kill.values(), default=0),
        duplicates_bound=bound,
        respawn_recovery_s=_figures(respawn),
        respawns_killed_before_they_recovered=chained,
        duration=round(duration, 2),
    )


async def test_a_dead_consumers_entries_go_to_its_peers(
    redis_url: str, tmp_path: Path, stress_seconds: float, stress_seed: int, report: Report
) -> None:
    seed = stress_seed
    rng = random.Random(seed)
    min_idle, interval = 0.5, 0.2
    options = {"concurrency": 2, "maxsize": 4, "min_idle": min_idle, "claim_interval": interval}
    report(seconds=stress_seconds, min_idle=min_idle, claim_interval=interval)
    takeovers: list[float] = []
    payload_of: dict[str, int] = {}
    sent = 0
    async with processes() as procs, client(redis_url) as redis:
        peers = [
            Proc(config(redis_url, f"peer{i}", work=0.002, **options), tmp_path / f"p{i}.log")
            for i in range(2)
        ]
        procs.extend(peers)
        for peer in peers:
            await peer.ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stress_seconds
        rounds = 0
        while loop.time() < deadline or rounds < MIN_KILLS:
            assert loop.time() < deadline + 60, f"seed={seed}: too few kills landed"
            name = f"h{rounds}"
            holder = Proc(config(redis_url, name, hold=True, **options), tmp_path / f"{name}.log")
            procs.append(holder)
            await holder.ready()

            async def holding(name: str = name) -> bool:
                nonlocal sent
                if (await group_pending(redis)).get(name):
                    return True
                chunk = list(range(sent, sent + rng.randint(1, 8)))
                for entry_id, n in zip(await send(redis_url, chunk), chunk, strict=True):
                    payload_of[entry_id] = n
                sent += len(chunk)
                return False

            await eventually(holding, 20, f"seed={seed}: {name} holds entries")
            await asyncio.sleep(rng.uniform(0, 2 * min_idle))  # renewals happen meanwhile
            await holder.kill()
            killed_at = time.monotonic()
            held = {payload_of[i] for i in await _pending_ids(redis, name)}
            assert held, f"seed={seed}: {name} held nothing when killed"

            async def taken_over(held: set[int] = held) -> bool:
                return held <= done_set(await records(redis, "done"))

            await eventually(taken_over, 20, f"seed={seed}: the peers took {name}'s entries")
            done = [r for r in await records(redis, "done") if r[0] in held]
            assert {consumer for _, consumer, *_ in done} <= {"peer0", "peer1"}
            takeovers.append(max(when for *_, when in done) - killed_at)
            rounds += 1

        async def all_done() -> bool:
            return done_set(await records(redis, "done")) == set(range(sent))

        await eventually(all_done, 30, f"seed={seed}: every message handled")

        async def nothing_pending() -> bool:
            return sum((await group_pending(redis)).values()) == 0

        await eventually(nothing_pending, 20, f"seed={seed}: every message acked")
        for peer in peers:
            peer.signal(signal.SIGTERM)
        for peer in peers:
            assert await peer.wait(30) == 0, peer.output()
        done = await records(redis, "done")
        dead = await dead_letters(redis)

    # A holder's handlers never end: nothing it started was handled twice.
    counts = Counter(n for n, *_ in done)
    assert set(counts) == set(range(sent)), f"seed={seed}: lost messages"
    assert all(c == 1 for c in counts.values()), f"seed={seed}: handled twice"
    assert dead == []
    report(
        sent=sent,
        lost=0,
        kills=len(takeovers),
        takeover_s=_figures(takeovers),
        target_s=min_idle + interval + 0.5,
    )
    assert max(takeovers) < 10, takeovers
