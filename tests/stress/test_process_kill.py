"""Fault injection: processes SIGKILLed in the middle of their work.

(a) A ``QueueConsumerWorker(run_in="process", concurrency=2)`` handles
messages in a pool of spawned processes while the scenario SIGKILLs them at
random moments. Each message's handler first appends its process's pid to a
marker file named by the message id, so the scenario knows which process runs
which message. Some messages ("victims") would run for an hour: they end only
by a kill, so at least those kills certainly land mid-message; others are
killed at a random moment of their short run, racing their end. The books are
checked by message id: every message has exactly one outcome, a killed one
comes back failed (``on_error`` with a ``ProcessWorkerError`` naming SIGKILL
and the killed pid), no message runs twice, the pool replaces the dead
processes, and ``queue_status()`` agrees with the scenario's own counts.

(b) ``ProcessWorker`` children of a supervising tree (one_for_one, permanent)
are SIGKILLed at random, while running or while being restarted. Each kill
must be seen as a crash with a ``ProcessWorkerError``, and each child killed
while running is restarted, once; at the end every child runs again in a new
process and, after the shutdown, no process is left.

``FLUID_STRESS_SEED`` replays a run's random choices (not its timing).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fluid

from .._programs import children_of, is_alive
from ..helpers import wait_until
from . import _targets as targets
from .conftest import Report

MIN_KILLS = 2
"""Kills every run injects, however short."""


def is_my_live_child(pid: int) -> bool:
    return pid in children_of(os.getpid()) and is_alive(pid)


# ----------------------------------------------------------- (a) the pool


_KILLED_CALL = re.compile(r"pool process (\d+) was killed by SIGKILL while running a call")


@dataclass
class PoolBooks:
    """The scenario's own account of the pool consumer's messages, by id."""

    markers: str
    jobs: dict[int, targets.Job] = field(default_factory=dict)
    victims: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)
    outcomes: Counter[int] = field(default_factory=Counter)
    handled: dict[int, int] = field(default_factory=dict)  # id -> pid it returned
    failed: dict[int, Exception] = field(default_factory=dict)
    on_error_calls: int = 0
    killed: dict[int, int] = field(default_factory=dict)  # pid -> id it was seen running

    def on_result(self, job: targets.Job, pid: int) -> None:
        self.outcomes[job[0]] += 1
        self.pending.discard(job[0])
        self.handled[job[0]] = pid

    def on_error(self, job: targets.Job, error: Exception) -> None:
        self.on_error_calls += 1
        self.outcomes[job[0]] += 1
        self.pending.discard(job[0])
        self.failed[job[0]] = error

    def new_job(self, seconds: float) -> targets.Job:
        job = (len(self.jobs), seconds, self.markers)
        self.jobs[job[0]] = job
        self.pending.add(job[0])
        return job

    def running(self) -> dict[int, int]:
        """Unfinished messages whose process started them and is alive: id -> pid."""
        found = {}
        for ident in self.pending:
            pids = targets.read_marker(self.markers, ident)
            if pids and pids[-1] not in self.killed and is_my_live_child(pids[-1]):
                found[ident] = pids[-1]
        return found

    def kill(self, ident: int, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.killed[pid] = ident


async def test_pool_processes_killed_mid_message_fail_that_message_only(
    tmp_path: Path, stress_seconds: float, stress_seed: int, report: Report
) -> None:
    seed = stress_seed
    rng = random.Random(seed)
    report(seconds=stress_seconds)
    books = PoolBooks(str(tmp_path))
    consumer = fluid.QueueConsumerWorker[targets.Job](
        targets.crunch,
        name="crunch",
        run_in="process",
        concurrency=2,
        on_result=books.on_result,
        on_error=books.on_error,
        stopping_grace_period=10,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    def send(victim: bool) -> int:
        job = books.new_job(3600.0 if victim else rng.uniform(0.003, 0.04))
        if victim:
            books.victims.add(job[0])
        consumer.send(job)
        return job[0]

    async def kill_victim_once_running(ident: int) -> None:
        await wait_until(lambda: ident in books.running() or ident not in books.pending, 20)
        running = books.running()
        if ident in running:
            books.kill(ident, running[ident])

    await consumer.startup()
    completed = False
    try:
        deadline = started + stress_seconds
        while loop.time() < deadline or len(books.killed) < MIN_KILLS:
            assert loop.time() < deadline + 20, f"seed={seed}: too few kills landed"
            short = loop.time() >= deadline  # out of time, still short of kills
            while consumer.queue_size() < 3:
                waiting_victim = any(v in books.pending for v in books.victims)
                send(rng.random() < 0.04 or (short and not waiting_victim))
            await asyncio.sleep(rng.uniform(0, 0.01))  # the injection's random pace
            running = books.running()
            victims = [ident for ident in running if ident in books.victims]
            if victims:
                ident = rng.choice(victims)
                books.kill(ident, running[ident])
            elif running and rng.random() < 0.03:
                ident = rng.choice(sorted(running))
                books.kill(ident, running[ident])
        for ident in sorted(books.victims & books.pending):  # no victim may hang the end
            await kill_victim_once_running(ident)
        last_kill_count = len(books.killed)
        tail = [send(False) for _ in range(4)]  # the pool must go on after the kills
        await wait_until(lambda: not books.pending, 20)
        completed = True
    finally:
        if not completed:  # a victim would block the graceful stop for an hour
            for ident in books.pending:
                for pid in targets.read_marker(books.markers, ident):
                    if is_my_live_child(pid):
                        os.kill(pid, signal.SIGKILL)
        await consumer.shutdown()
    duration = loop.time() - started

    # Every message has exactly one outcome, matching the scenario's counts.
    sent = set(books.jobs)
    assert set(books.outcomes) == sent, f"seed={seed}: messages vanished"
    assert all(n == 1 for n in books.outcomes.values()), f"seed={seed}: {books.outcomes}"
    assert books.on_error_calls == len(books.failed)
    assert set(books.handled).isdisjoint(books.failed)
    stats = consumer.queue_status()
    assert stats == {
        "sent": len(sent),
        "size": 0,
        "capacity": None,
        "handled": len(books.handled),
        "failed": len(books.failed),
        "in_flight": 0,
        "taken": 0,
        "undelivered": 0,
    }, f"seed={seed}"
    assert consumer.worker_state is fluid.WorkerState.STOPPED

    # No message ran twice; a handled one ran in the process it names.
    markers = {ident: targets.read_marker(books.markers, ident) for ident in sent}
    assert all(len(pids) <= 1 for pids in markers.values()), f"seed={seed}: ran twice"
    for ident, pid in books.handled.items():
        assert markers[ident] == [pid], f"seed={seed}: message {ident}"

    # A failed message was running in a process the scenario killed, one per kill.
    failed_pids = []
    for ident, error in books.failed.items():
        assert isinstance(error, fluid.ProcessWorkerError), f"seed={seed}: {error!r}"
        assert error.exitcode == -signal.SIGKILL, f"seed={seed}: {error!r}"
        match = _KILLED_CALL.search(str(error))
        assert match, f"seed={seed}: {error}"
        pid = int(match.group(1))
        assert pid in books.killed, f"seed={seed}: message {ident} failed in {pid}, not killed"
        assert markers[ident] in ([], [pid]), f"seed={seed}: message {ident}"
        failed_pids.append(pid)
    assert len(failed_pids) == len(set(failed_pids)), f"seed={seed}: two failures, one kill"
    assert books.victims <= set(books.failed), f"seed={seed}: a killed victim did not fail"
    assert len(books.killed) == last_kill_count

    # The pool replaced its dead processes: the tail ran in new ones, and no more
    # processes were started than the two plus one per kill.
    assert all(ident in books.handled for ident in tail), f"seed={seed}"
    assert not {books.handled[ident] for ident in tail} & set(books.killed)
    pool_pids = {pid for pids in markers.values() for pid in pids} | set(failed_pids)
    assert len(pool_pids) <= 2 + len(books.killed), f"seed={seed}: {len(pool_pids)} processes"
    assert not any(is_alive(pid) for pid in pool_pids), f"seed={seed}: a process is left"

    report(
        sent=len(sent),
        handled=len(books.handled),
        failed=len(books.failed),
        on_error=books.on_error_calls,
        kills=len(books.killed),
        victims=len(books.victims),
        kills_between_messages=len(books.killed) - len(books.failed),
        pool_processes=len(pool_pids),
        duration=round(duration, 2),
    )


# ------------------------------------------------ (b) the supervised tree


@dataclass
class ChildBooks:
    """What the observer saw of one process worker, and the kills it took."""

    up: bool = True  # started since its last crash
    kills: int = 0
    crashes_running: int = 0
    crashes_starting: int = 0
    restarted: int = 0
    other_ends: list[str] = field(default_factory=list)
    errors: list[BaseException | None] = field(default_factory=list)


async def test_supervised_process_workers_killed_at_random_are_restarted(
    stress_seconds: float, stress_seed: int, report: Report
) -> None:
    seed = stress_seed
    rng = random.Random(seed)
    report(seconds=stress_seconds)
    workers = [
        fluid.ProcessWorker(targets.stay_up, name=f"proc-{i}", stopping_grace_period=5)
        for i in range(3)
    ]
    tree = fluid.Workers(
        *workers,
        name="supervised",
        strategy="one_for_one",
        restart="permanent",
        max_restarts=1_000_000,
        period=1.0,
        backoff=fluid.Backoff(initial=0.0, jitter=0.0),
    )
    books = {worker.worker_name: ChildBooks() for worker in workers}
    stopping = False

    def observe(transition: fluid.Transition) -> None:
        if transition.worker not in workers:
            return  # the tree itself
        child = books[transition.worker.worker_name]
        if transition.kind == "started":
            child.up = True
        elif transition.kind == "crashed":
            if child.up:
                child.crashes_running += 1
            else:
                child.crashes_starting += 1
            child.up = False
            child.errors.append(transition.error)
        elif transition.kind == "restarted":
            child.restarted += 1
        elif transition.kind in ("stopped", "force_stopped") and not stopping:
            child.other_ends.append(transition.kind)

    tree.add_observer(observe)
    killed: set[int] = set()
    skipped = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    await tree.startup()
    try:
        deadline = started + stress_seconds
        while loop.time() < deadline or len(killed) < MIN_KILLS:
            assert loop.time() < deadline + 20, f"seed={seed}: too few kills landed"
            if rng.random() < 0.7:
                await asyncio.sleep(rng.uniform(0, 0.15))  # the injection's random pace
            else:
                await asyncio.sleep(0)  # kills in a burst
            worker = rng.choice(workers)
            pid = worker.pid
            if pid is None or pid in killed or not is_my_live_child(pid):
                skipped += 1  # between its end and its next process
                continue
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            books[worker.worker_name].kills += 1

        def all_seen_and_up_again() -> bool:
            return all(
                b.crashes_running + b.crashes_starting == b.kills
                and b.up
                and w.pid not in killed
                and is_my_live_child(w.pid or 0)
                for w, b in ((w, books[w.worker_name]) for w in workers)
            )

        await wait_until(all_seen_and_up_again, 20)
        running_to_the_end = tree.worker_state is fluid.WorkerState.RUNNING
    finally:
        stopping = True
        await tree.shutdown()
    duration = loop.time() - started

    last_pids = {worker.pid for worker in workers}
    assert running_to_the_end, f"seed={seed}: the tree gave up"
    assert tree.worker_state is fluid.WorkerState.STOPPED
    for worker in workers:
        child = books[worker.worker_name]
        where = f"seed={seed} {worker.worker_name}: {child}"
        assert worker.worker_state is fluid.WorkerState.STOPPED, where
        assert child.other_ends == [], where
        assert child.crashes_running + child.crashes_starting == child.kills, where
        assert child.restarted == child.crashes_running == worker.restarts, where
        for error in child.errors:
            assert isinstance(error, fluid.ProcessWorkerError), where
            assert error.exitcode == -signal.SIGKILL, where
            assert "was killed by SIGKILL" in str(error), where
    assert not any(is_alive(pid) for pid in killed | last_pids if pid), f"seed={seed}"

    report(
        kills=len(killed),
        crashes=sum(b.crashes_running + b.crashes_starting for b in books.values()),
        restarts=sum(worker.restarts for worker in workers),
        kills_while_restarting=sum(b.crashes_starting for b in books.values()),
        skipped=skipped,
        duration=round(duration, 2),
    )
