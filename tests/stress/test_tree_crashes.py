"""Crashes inside nested supervision trees, while the consumers in them keep receiving messages.

The tree (four levels; restart type in brackets)::

    root            one_for_one, no limit
    ├── front       consumer, on_error="stop"                       [permanent]
    ├── boss        crashy                                          [permanent]
    ├── mid_all     one_for_all, a low restart intensity            [permanent]
    │   ├── a_consumer  consumer, on_error="stop", a short grace    [permanent]
    │   ├── a_crashy    crashy                                      [permanent]
    │   └── leaf    rest_for_one, no limit                          [permanent]
    │       ├── l_crashy    crashy                                  [transient]
    │       ├── l_consumer  consumer, 3 at once, an on_error callback
    │       │               that sometimes raises                   [permanent]
    │       └── l_temp      crashy                                  [temporary]
    └── mid_rest    rest_for_one, a low restart intensity           [permanent]
        ├── r_crashy    crashy                                      [permanent]
        ├── r_fanout    AsyncConsumer, on_error="stop"              [transient]
        └── r_temp      consumer, on_error="stop"                   [temporary]

Injected at random (seeded): messages to every consumer, some poison
(``on_error="stop"``: the consumer crashes) or failing (the callback is
called, and sometimes raises: a crash); crashes and clean exits of the
crashy workers; crashy workers armed to fail their next start; storms of
crashes that exceed the intensity of a middle tree, which then fails with
``TooManyRestarts`` and is restarted by the root. Sibling restarts under
``one_for_all`` and ``rest_for_one`` stop consumers that drain (and may hit
a poison message while draining) or are forced (messages in flight go back
to the queue).

Checked once the restarts settled and the root stopped: every injected error
ended its worker exactly once (a crash event carrying it; for the consumer
with three messages in flight, a second simultaneous error is logged
instead); every lifecycle is well-formed and the restart counts of events,
``restarts`` and ``status()`` agree; the root's children were started only by
restarts, and each middle tree was restarted once per ``TooManyRestarts``
naming one of its children; the consumers' books balance across restarts,
message by message (what a temporary consumer left is taken back).

A second test exceeds the root's own intensity: it must fail with
``TooManyRestarts`` naming the child that kept crashing. A third one aims at
a consumer with several messages in flight under ``on_error="stop"``: a
sibling's crash stops it, with a short grace period, while it waits for the
other handlers after a poison message; the poison's error must not be lost.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import pytest

import fluid

from ..helpers import wait_until
from ._books import (
    BookedDispatcher,
    Crashy,
    Injected,
    Ledger,
    Lifecycle,
    LogTally,
    fluid_log,
)
from .conftest import Report

NO_LIMIT = 10**9
BACKLOG = 100  # the most messages the injector leaves queued for one consumer
FAILED = "worker %r failed"
FAN_OUT = {"order": ("order.store", "order.audit", "*.count"), "misc": ("*.count",)}
FAN_BITS = {
    name: 1 << i for i, name in enumerate(sorted({n for ns in FAN_OUT.values() for n in ns}))
}

Policy = Literal["stop", "callback", "fanout"]


class Job(NamedTuple):
    id: int
    kind: str  # the fan-out's event type; "job" for the other consumers
    fail: frozenset[str]  # the handlers that raise ("handler": the one of a plain consumer)
    awaits: int  # 0: never awaits; n > 0: n loop turns; n < 0: a timer of -n half-milliseconds
    crash: bool  # the on_error callback raises


async def pause(awaits: int) -> None:
    if awaits < 0:
        await asyncio.sleep(-awaits * 0.0005)
    for _ in range(awaits):
        await asyncio.sleep(0)


@dataclass
class Injections:
    """The errors injected to crash a consumer, by serial; the handlers a forced stop cut."""

    fired: dict[int, tuple[str, int]] = field(default_factory=dict)  # serial: (worker, message)
    requeued: int = 0

    def error(self, worker: str, message_id: int) -> Injected:
        error = Injected(worker, message_id)
        self.fired[error.serial] = (worker, message_id)
        return error

    def of(self, worker: str) -> list[int]:
        return [serial for serial, (name, _) in self.fired.items() if name == worker]


class Stage:
    """A consumer of the scenario, its books and its one producer (the injector)."""

    def __init__(
        self,
        name: str,
        policy: Policy,
        injections: Injections,
        *,
        grace: float = 5.0,
        concurrency: int = 1,
        slow: int = 0,
    ) -> None:
        self.name = name
        self.policy = policy
        self.concurrency = concurrency
        self.slow = slow  # half of the handlers wait up to this many half-milliseconds
        self.injections = injections
        self.ledger = Ledger(name)
        self.stream = self.ledger.stream()
        self.seen: dict[int, int] = {}  # fan-out: message id: bits of the handlers it reached
        self.consumer: fluid.QueueConsumer[Job]
        if policy == "fanout":
            dispatcher = _Tracked(self)
            self.consumer = fluid.AsyncConsumer(
                dispatcher, name=name, stopping_grace_period=grace, on_error="stop"
            )
        else:
            self.consumer = fluid.QueueConsumerWorker(
                self._handle,
                name=name,
                stopping_grace_period=grace,
                concurrency=concurrency,
                on_error=self._on_error if policy == "callback" else "stop",
            )

    def send(self, rng: random.Random, p_fail: float) -> None:
        if self.consumer.queue_size() >= BACKLOG:
            return  # a consumer that cannot keep up gets no more for now
        kind = rng.choice(list(FAN_OUT)) if self.policy == "fanout" else "job"
        names = FAN_OUT[kind] if self.policy == "fanout" else ("handler",)
        fail = frozenset(n for n in names if rng.random() < p_fail)
        r = rng.random()
        awaits = 0 if r < 0.4 else rng.randint(1, 3) if r < 0.9 else -1
        if self.slow and r < 0.5:
            awaits = -rng.randint(1, self.slow)
        job = Job(self.stream.new_id(), kind, fail, awaits, rng.random() < 0.3)
        self.consumer.send(job)
        self.stream.accepted(job.id)

    async def _handle(self, job: Job) -> None:
        if job.fail:  # before any await: a forced stop cannot cut an injection short
            self.ledger.failed(job.id)
            if self.policy == "callback":  # reported to the callback: no crash
                raise Injected(f"{self.name} handler", job.id)
            raise self.injections.error(self.name, job.id)
        try:
            await pause(job.awaits)
        except asyncio.CancelledError:
            self.injections.requeued += 1
            raise
        self.ledger.handled(job.id)

    async def _on_error(self, job: Job, error: Exception) -> None:
        self.ledger.reported(job.id)
        if not (isinstance(error, Injected) and error.message_id == job.id):
            self.ledger.problem(f"message {job.id} reported with {error!r}")
        await pause(job.awaits)
        if job.crash:
            raise self.injections.error(self.name, job.id)

    def fan_handler(self, name: str, bit: int) -> Callable[[Job], Awaitable[None]]:
        async def handle(job: Job) -> None:
            got = self.seen.get(job.id, 0)
            if got & bit:
                self.ledger.problem(f"handler {name} got message {job.id} twice")
            self.seen[job.id] = got | bit
            if name in job.fail:
                raise self.injections.error(self.name, job.id)
            await pause(job.awaits)

        return handle

    def settle(self, lifecycle: Lifecycle, log: LogTally) -> dict[str, int]:
        """Take back what is left, file the reports of failures; return ``tally()``."""
        for job in self.consumer.take_undelivered():
            self.ledger.taken(job.id)
        if self.policy != "callback":  # a failure is reported by the crash it caused
            mine = {s: m for s, (w, m) in self.injections.fired.items() if w == self.name}
            crashed = {s for e in lifecycle.of(self.consumer, "crashed") for s in e.serials}
            logged = {s for r in log.records if r.msg == FAILED for s in r.serials}
            for message_id in {mine[s] for s in crashed | logged if s in mine}:
                self.ledger.reported(message_id)
        if self.policy == "fanout":
            complete = {sum(FAN_BITS[n] for n in names) for names in FAN_OUT.values()}
            for message_id, got in self.seen.items():
                if got not in complete:
                    self.ledger.problem(f"message {message_id} reached handlers {got:b}")
        return self.ledger.tally()

    def check(self) -> None:
        """The books of the consumer balance, message by message (after ``settle``)."""
        self.ledger.check(self.consumer.queue_status())


class _Tracked(BookedDispatcher[Job]):
    """The stage's fan-out handlers, booked in its ledger."""

    def __init__(self, stage: Stage) -> None:
        super().__init__(stage.ledger, lambda job: job.kind, lambda job: job.id)
        self.stage = stage
        for name, bit in FAN_BITS.items():
            self.register_handler(name, stage.fan_handler(name, bit))


def nodes(worker: fluid.Worker) -> Iterator[fluid.Worker]:
    """The worker and all its descendants, trees included."""
    yield worker
    if isinstance(worker, fluid.Workers):
        for child in worker.children:
            yield from nodes(child)


async def check_status(root: fluid.Workers) -> None:
    """``status()`` tells each node's restarts as the workers do."""
    by_path = {w.worker_path: w.restarts for w in nodes(root)}
    found: dict[str, int] = {}

    def walk(status: fluid.WorkerStatus) -> None:
        found[status["path"]] = status["restarts"]
        for child in status.get("workers", []):
            walk(child)

    walk(await root.status())
    assert found == by_path


def crashes(injections: Injections, crashies: list[Crashy]) -> int:
    """How many errors were injected to crash a worker (and raised)."""
    return len(injections.fired) + sum(len(crashy.fired) for crashy in crashies)


def check_crashes(
    lifecycle: Lifecycle,
    log: LogTally,
    injections: Injections,
    crashies: list[Crashy],
    stages: list[Stage],
) -> None:
    """Each injected error ended its worker once, or was logged.

    A consumer with several messages in flight ends with the first error; one
    raised meanwhile by another of its handlers is logged.
    """
    logged = {s for r in log.records if r.msg == FAILED for s in r.serials}
    for crashy in crashies:
        crashed = [s for e in lifecycle.of(crashy, "crashed") for s in e.serials]
        assert sorted(crashed) == sorted(crashy.fired), crashy.worker_path
    for stage in stages:
        crashed = [s for e in lifecycle.of(stage.consumer, "crashed") for s in e.serials]
        mine = injections.of(stage.name)
        lost = [injections.fired[s] for s in mine if s not in logged]
        assert not lost, f"{stage.name}: errors neither raised nor logged (worker, message): {lost}"
        assert len(set(crashed)) == len(crashed), stage.name
        assert set(crashed) <= set(mine), stage.name
        if stage.concurrency == 1:
            assert sorted(crashed) == sorted(mine), stage.name


def tree_backoff(rng: random.Random) -> fluid.Backoff:
    return fluid.Backoff(
        initial=rng.choice((0.0, 0.0005, 0.002)), maximum=0.01, jitter=0.5, reset_after=0.05
    )


@dataclass
class Scenario:
    """The tree of the module docstring, built from a seed."""

    rng: random.Random
    injections: Injections = field(default_factory=Injections)

    def __post_init__(self) -> None:
        rng, inj = self.rng, self.injections
        self.front = Stage("front", "stop", inj)
        grace = rng.choice((0.001, 0.01))  # shorter than its slow handlers: forced stops
        self.a_consumer = Stage("a_consumer", "stop", inj, grace=grace, slow=4)
        self.l_consumer = Stage("l_consumer", "callback", inj, grace=1.0, concurrency=3)
        self.r_fanout = Stage("r_fanout", "fanout", inj)
        self.r_temp = Stage("r_temp", "stop", inj)
        self.stages = [self.front, self.a_consumer, self.l_consumer, self.r_fanout, self.r_temp]
        self.boss, self.a_crashy = Crashy("boss"), Crashy("a_crashy")
        self.l_crashy, self.l_temp = Crashy("l_crashy"), Crashy("l_temp")
        self.r_crashy = Crashy("r_crashy")
        self.crashies = [self.boss, self.a_crashy, self.l_crashy, self.l_temp, self.r_crashy]
        self.leaf = fluid.Workers(
            name="leaf",
            strategy="rest_for_one",
            max_restarts=NO_LIMIT,
            period=1,
            backoff=tree_backoff(rng),
        )
        self.leaf.add_workers(self.l_crashy, restart="transient")
        self.leaf.add_workers(self.l_consumer.consumer)
        self.leaf.add_workers(self.l_temp, restart="temporary")
        self.mid_all = fluid.Workers(
            self.a_consumer.consumer,
            self.a_crashy,
            self.leaf,
            name="mid_all",
            strategy="one_for_all",
            max_restarts=rng.randint(3, 8),
            period=rng.choice((0.05, 0.2)),
            backoff=tree_backoff(rng),
        )
        self.mid_rest = fluid.Workers(
            self.r_crashy,
            name="mid_rest",
            strategy="rest_for_one",
            max_restarts=rng.randint(3, 8),
            period=rng.choice((0.05, 0.2)),
            backoff=tree_backoff(rng),
        )
        self.mid_rest.add_workers(self.r_fanout.consumer, restart="transient")
        self.mid_rest.add_workers(self.r_temp.consumer, restart="temporary")
        self.root = fluid.Workers(
            self.front.consumer,
            self.boss,
            self.mid_all,
            self.mid_rest,
            name="root",
            strategy="one_for_one",
            max_restarts=NO_LIMIT,
            period=1,
            backoff=tree_backoff(rng),
        )
        self.restart: dict[fluid.Worker, str] = dict.fromkeys(nodes(self.root), "permanent")
        self.restart.update({self.l_crashy: "transient", self.r_fanout.consumer: "transient"})
        self.restart.update({self.l_temp: "temporary", self.r_temp.consumer: "temporary"})

    def settled(self, lifecycle: Lifecycle) -> bool:
        """No restart pending, and every running consumer has handled all it got."""
        for worker in nodes(self.root):
            restart = self.restart[worker]
            if worker.is_stopping():
                return False
            if restart == "permanent" and not worker.is_running():
                return False
            if restart == "transient" and not worker.is_running():
                ended = lifecycle.events.get(worker, [])
                if not ended or ended[-1].kind != "stopped":
                    return False
        for stage in self.stages:
            books = stage.consumer.queue_status()
            if stage.consumer.is_running() and (books["size"] or books["in_flight"]):
                return False
        return True

    async def storm(self, crashy: Crashy, times: int) -> None:
        """Crash ``crashy`` as soon as it runs again, ``times`` times: beyond the intensity."""
        for _ in range(times):
            await wait_until(crashy.can_end, timeout=5)
            crashy.crash(Injected(crashy.worker_name))

    async def inject(self, until: float, p_fail: float) -> None:
        rng, loop = self.rng, asyncio.get_running_loop()
        while loop.time() < until:
            action = rng.random()
            if action < 0.6:
                for _ in range(rng.randint(1, 20)):
                    rng.choice(self.stages).send(rng, p_fail)
            elif action < 0.88:
                crashy = rng.choice(self.crashies)
                if crashy.can_end():
                    if rng.random() < 0.8:
                        crashy.crash(Injected(crashy.worker_name))
                    else:
                        crashy.finish()
            elif action < 0.97:
                crashy = rng.choice(self.crashies)
                if crashy.can_end() and crashy.fail_next_start is None:
                    crashy.fail_next_start = Injected(f"{crashy.worker_name} startup")
                    crashy.crash(Injected(crashy.worker_name))
            elif action < 0.98:  # beyond a middle tree's restart intensity
                await self.storm(rng.choice((self.a_crashy, self.r_crashy)), 10)
            await asyncio.sleep(rng.choice((0.0, 0.0, 0.0005, 0.002)))


async def test_crashes_in_nested_trees_under_all_strategies(
    stress_seconds: float, stress_seed: int, report: Report
) -> None:
    report(seconds=stress_seconds)
    rng = random.Random(stress_seed)
    scenario = Scenario(rng)
    root = scenario.root
    lifecycle = Lifecycle()
    root.add_observer(lifecycle)
    loop = asyncio.get_running_loop()
    with fluid_log() as log:
        await root.startup()
        try:
            await scenario.inject(loop.time() + stress_seconds, rng.uniform(0.005, 0.05))
            await wait_until(lambda: scenario.settled(lifecycle), timeout=10)
            settled_at = lifecycle.count
            assert root.is_running()
            await check_status(root)
        finally:
            await root.shutdown()

    figures: Counter[str] = Counter()
    for stage in scenario.stages:
        figures.update(stage.settle(lifecycle, log))
    gave_up = [
        e for mid in (scenario.mid_all, scenario.mid_rest) for e in lifecycle.of(mid, "crashed")
    ]
    restarts = sum(w.restarts for w in nodes(root))
    report(
        **figures,
        crashes=crashes(scenario.injections, scenario.crashies),
        restarts=restarts,
        gave_up=sum(e.error == "TooManyRestarts" for e in gave_up),
        forced=sum(len(lifecycle.of(w, "force_stopped")) for w in nodes(root)),
        requeued=scenario.injections.requeued,
    )
    for stage in scenario.stages:
        stage.check()
    assert lifecycle.check() == []
    check_crashes(lifecycle, log, scenario.injections, scenario.crashies, scenario.stages)
    for child in root.children:  # only the root's restarts start them again
        assert len(lifecycle.of(child, "started")) == 1 + child.restarts, child.worker_name
    for mid in (scenario.mid_all, scenario.mid_rest):
        names = {c.worker_name for c in mid.children}
        give_ups = [e for e in lifecycle.of(mid, "crashed") if e.error == "TooManyRestarts"]
        assert all(e.gave_up_on in names for e in give_ups), give_ups
        # Every give-up before the tree came to rest was restarted (settled
        # means running again); one after it (a crash armed before the rest,
        # landing while the root stops) may not be, and is not owed one.
        early = [e for e in give_ups if e.order <= settled_at]
        assert len(early) <= mid.restarts <= len(give_ups), (mid.worker_name, len(early))
    assert root.restarts == 0
    assert restarts == sum(len(lifecycle.of(w, "restarted")) for w in nodes(root))
    assert restarts > 0


async def test_a_tree_that_keeps_restarting_a_child_gives_up_naming_it(
    stress_seconds: float, stress_seed: int, report: Report
) -> None:
    report(seconds=stress_seconds)
    rng = random.Random(stress_seed)
    injections = Injections()
    front = Stage("front", "stop", injections)
    l_consumer = Stage("l_consumer", "stop", injections)
    m_consumer = Stage("m_consumer", "callback", injections, concurrency=2)
    stages = [front, l_consumer, m_consumer]
    m_crashy, l_crashy = Crashy("m_crashy"), Crashy("l_crashy")
    leaf = fluid.Workers(
        l_consumer.consumer,
        l_crashy,
        name="leaf",
        strategy="one_for_one",
        max_restarts=NO_LIMIT,
        backoff=tree_backoff(rng),
    )
    mid = fluid.Workers(
        m_crashy,
        leaf,
        m_consumer.consumer,
        name="mid",
        strategy="rest_for_one",
        max_restarts=NO_LIMIT,
        backoff=tree_backoff(rng),
    )
    max_restarts = rng.randint(2, 6)
    root = fluid.Workers(
        front.consumer,
        mid,
        name="root",
        strategy="one_for_all",
        max_restarts=max_restarts,
        period=3600,
        backoff=tree_backoff(rng),
    )
    lifecycle = Lifecycle()
    root.add_observer(lifecycle)
    loop = asyncio.get_running_loop()
    start = loop.time()
    # the poison messages that crash "front", the last one at the end of the run
    poison_at = sorted(start + rng.uniform(0, stress_seconds) for _ in range(max_restarts))
    poison_at.append(start + stress_seconds)
    p_fail = rng.uniform(0.005, 0.05)
    with fluid_log() as log:
        await root.startup()
        try:
            while poison_at:
                if loop.time() >= poison_at[0]:
                    poison_at.pop(0)
                    job = Job(front.stream.new_id(), "job", frozenset({"handler"}), 0, False)
                    front.consumer.send(job)
                    front.stream.accepted(job.id)
                for _ in range(rng.randint(0, 5)):
                    stage = rng.choice(stages)  # "front" gets no poison but the planned one
                    stage.send(rng, 0.0 if stage is front else p_fail)
                crashy = rng.choice((m_crashy, l_crashy))
                if rng.random() < 0.2 and crashy.can_end():
                    crashy.crash(Injected(crashy.worker_name))
                await asyncio.sleep(rng.choice((0.0, 0.0005, 0.002)))
            with pytest.raises(fluid.TooManyRestarts) as gave_up:
                async with asyncio.timeout(10):
                    await root.wait_for_shutdown()
        finally:
            if not root.is_stopped():
                await root.shutdown()

    figures: Counter[str] = Counter()
    for stage in stages:
        figures.update(stage.settle(lifecycle, log))
    figures_out: dict[str, Any] = dict(figures)
    report(
        max_restarts=max_restarts,
        **figures_out,
        crashes=crashes(injections, [m_crashy, l_crashy]),
        restarts=sum(w.restarts for w in nodes(root)),
    )
    error = gave_up.value
    last_poison = max(s for s in injections.of("front"))
    assert (error.worker_name, error.restarts) == ("front", max_restarts)
    assert isinstance(error.__cause__, Injected)
    assert error.__cause__.serial == last_poison
    assert front.consumer.restarts == mid.restarts == max_restarts
    status = await root.status()
    assert status["state"] == fluid.WorkerState.STOPPED
    assert (status["error"] or "").startswith("TooManyRestarts: worker 'front' of tree 'root'")
    assert all(w.is_stopped() for w in nodes(root))
    root_crashes = lifecycle.of(root, "crashed")
    assert [(e.error, e.gave_up_on) for e in root_crashes] == [("TooManyRestarts", "front")]
    for stage in stages:
        stage.check()
    assert lifecycle.check() == []
    check_crashes(lifecycle, log, injections, [m_crashy, l_crashy], stages)


async def test_an_error_is_not_lost_when_a_sibling_restart_forces_its_consumer(
    stress_seconds: float, stress_seed: int, report: Report
) -> None:
    """A consumer with three messages in flight hits a poison message (``on_error="stop"``)
    and waits for the other two; a sibling's crash under ``one_for_all`` stops it with
    a grace period shorter than they take. The poison's error must still be raised or
    logged."""
    report(seconds=stress_seconds)
    rng = random.Random(stress_seed)
    injections = Injections()
    stage = Stage("many", "stop", injections, grace=0.002, concurrency=3, slow=20)
    crashy = Crashy("crashy")
    supervised: dict[str, Any] = {"max_restarts": NO_LIMIT, "backoff": tree_backoff(rng)}
    leaf = fluid.Workers(stage.consumer, name="leaf", strategy="one_for_one", **supervised)
    mid = fluid.Workers(crashy, leaf, name="mid", strategy="one_for_all", **supervised)
    root = fluid.Workers(mid, name="root", strategy="one_for_one", **supervised)
    lifecycle = Lifecycle()
    root.add_observer(lifecycle)
    loop = asyncio.get_running_loop()
    until = loop.time() + stress_seconds
    with fluid_log() as log:
        await root.startup()
        try:
            while loop.time() < until:
                for _ in range(rng.randint(1, 5)):
                    stage.send(rng, 0.05)
                if rng.random() < 0.3 and crashy.can_end():
                    crashy.crash(Injected("crashy"))
                await asyncio.sleep(rng.choice((0.0, 0.001, 0.005)))
            await wait_until(
                lambda: (
                    crashy.is_running()
                    and stage.consumer.is_running()
                    and not stage.consumer.queue_size()
                ),
                timeout=10,
            )
        finally:
            await root.shutdown()
    figures = stage.settle(lifecycle, log)
    report(
        **figures,
        crashes=crashes(injections, [crashy]),
        restarts=sum(w.restarts for w in nodes(root)),
        forced=len(lifecycle.of(stage.consumer, "force_stopped")),
    )
    check_crashes(lifecycle, log, injections, [crashy], [stage])
    stage.check()
    assert lifecycle.check() == []
