"""Handlers that fail at random, in six consumers at once, fed from the loop and from threads.

Injected: each message carries its fate, drawn from the seed: which of its
handlers raise, whether they await first (not at all, a few loop turns, a
short timer) and whether they raise before awaiting. The consumers cover the
error policies (a sync and an async ``on_error`` callback, ``"log"``), one
and several messages in flight, handlers on the loop and in a thread pool,
and the fan-out of an ``AsyncConsumer`` with several handlers per event type
and catch-all ones, in turn and concurrently. Producers: two tasks on the
loop (``send()`` and ``await put()``), four threads (``send()`` with and
without a timeout) and a handler that forwards to another consumer.

Checked after a graceful stop that drains: every message sent was handled
or failed exactly once and each failure reported once to its policy (with
the errors of exactly the handlers that failed); refused sends never
arrive, each was made on a full queue and a timed one waited its timeout
(``_books.Room``), and the threads met no more refusals than their pacing
allows (``most_refusals``); ``queue_status()`` and the dispatchers' ``stats()`` agree with the
scenario's own books; every fan-out handler got each of its messages once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import fluid

from ._books import (
    BookedDispatcher,
    Injected,
    Ledger,
    Stream,
    Threads,
    fluid_log,
    most_refusals,
)
from .conftest import Report

# The fan-out consumers' handlers, by event type; the catch-all ones get every message.
ROUTES = {"order": ("store", "notify", "audit"), "user": ("sync",), "misc": ()}
CATCH_ALL = ("count", "trace")
PLAIN = "job"  # the kind of the messages of single-handler consumers
OPEN_QUEUE = 256  # producers route elsewhere while an unbounded queue holds this many
THREADS = 4
LOOP_PRODUCERS = 2
THREAD_PACE = 0.05
"""A producer thread refused once gives its next send to a bounded queue this timeout."""
FAILED_TO_HANDLE = "worker %r failed to handle %r"


def route_of(kind: str) -> str:
    """The dispatcher's figures of a kind without handlers of its own are under "*"."""
    return kind if ROUTES[kind] else "*"


def handler_names(kind: str) -> tuple[str, ...]:
    """The event names of the handlers a message of ``kind`` goes to."""
    if kind == PLAIN:
        return ("handler",)
    return (*(f"{kind}.{tag}" for tag in ROUTES[kind]), *(f"*.{tag}" for tag in CATCH_ALL))


class Job(NamedTuple):
    id: int
    kind: str
    fail: frozenset[str]  # the handlers (event names) that raise
    awaits: int  # 0: never awaits; n: n loop turns; -1: a short timer
    early: bool  # raise before awaiting
    forward: bool  # the handler of "one" sends a new message on to "many"


def new_job(rng: random.Random, stream: Stream, kind: str, p_fail: float) -> Job:
    names = handler_names(kind)
    p_each = min(0.5, 2 * p_fail / len(names))
    fail = frozenset(name for name in names if rng.random() < p_each)
    r = rng.random()
    awaits = 0 if r < 0.45 else rng.randint(1, 3) if r < 0.93 else -1
    return Job(stream.new_id(), kind, fail, awaits, rng.random() < 0.3, rng.random() < 0.05)


async def pause(awaits: int) -> None:
    if awaits < 0:
        await asyncio.sleep(0.0005)
    for _ in range(awaits):
        await asyncio.sleep(0)


def check_error(ledger: Ledger, job: Job, error: Exception) -> None:
    """The error reported for ``job``: those of exactly the handlers that failed."""
    leaves = error.exceptions if isinstance(error, ExceptionGroup) else (error,)
    got = {(e.message_id, e.where) for e in leaves if isinstance(e, Injected)}
    if len(got) != len(leaves) or got != {(job.id, name) for name in job.fail}:
        ledger.problem(f"message {job.id} reported {error!r}, expected failures of {job.fail}")


def sync_policy(ledger: Ledger) -> Callable[[Job, Exception], None]:
    def on_error(job: Job, error: Exception) -> None:
        ledger.reported(job.id)
        check_error(ledger, job, error)

    return on_error


def async_policy(ledger: Ledger) -> Callable[[Job, Exception], Awaitable[None]]:
    async def on_error(job: Job, error: Exception) -> None:
        ledger.reported(job.id)
        check_error(ledger, job, error)
        await pause(job.awaits)

    return on_error


def loop_handler(
    ledger: Ledger, forward: Callable[[], None] | None = None
) -> Callable[[Job], Awaitable[None]]:
    async def handle(job: Job) -> None:
        if job.fail and job.early:
            ledger.failed(job.id)
            raise Injected("handler", job.id)
        await pause(job.awaits)
        if job.fail:
            ledger.failed(job.id)
            raise Injected("handler", job.id)
        if job.forward and forward is not None:
            forward()
        ledger.handled(job.id)

    return handle


def thread_handler(ledger: Ledger) -> Callable[[Job], None]:
    def handle(job: Job) -> None:
        if job.awaits:
            time.sleep(0 if job.awaits > 0 else 0.0005)
        if job.fail:
            ledger.failed(job.id)
            raise Injected("handler", job.id)
        ledger.handled(job.id)

    return handle


@dataclass
class FanOut:
    """What each handler of a fan-out consumer got, kept by the handlers themselves."""

    ledger: Ledger
    seen: dict[int, tuple[str, int]] = field(default_factory=dict)  # id: (kind, handlers' bits)
    raised: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, handler)
    bits: dict[str, int] = field(default_factory=dict)

    def handler(self, name: str) -> Callable[[Job], Awaitable[None]]:
        bit = self.bits.setdefault(name, 1 << len(self.bits))

        async def handle(job: Job) -> None:
            kind, got = self.seen.get(job.id, (job.kind, 0))
            if got & bit:
                self.ledger.problem(f"handler {name} got message {job.id} twice")
            self.seen[job.id] = (kind, got | bit)
            failing = name in job.fail
            if not (failing and job.early):
                await pause(job.awaits)
            if failing:
                self.raised[(job.kind, name)] += 1
                raise Injected(name, job.id)

        return handle

    def expected(self, kind: str) -> int:
        return sum(self.bits[name] for name in handler_names(kind))


class Tracked(BookedDispatcher[Job]):
    """The fan-out dispatcher: the handlers of every route, booked in the fan's ledger."""

    def __init__(self, fan: FanOut, *, concurrent: bool) -> None:
        super().__init__(
            fan.ledger, lambda job: job.kind, lambda job: job.id, concurrent=concurrent
        )
        self.fan = fan
        for kind, tags in ROUTES.items():
            for tag in tags:
                self.register_handler(f"{kind}.{tag}", fan.handler(f"{kind}.{tag}"))
        for tag in CATCH_ALL:
            self.register_handler(f"*.{tag}", fan.handler(f"*.{tag}"))


def check_fan_out(fan: FanOut, dispatcher: Tracked) -> None:
    """Each handler got each message of its type once; the dispatcher's figures agree."""
    dispatched: Counter[str] = Counter()
    for message_id, (kind, got) in fan.seen.items():
        dispatched[route_of(kind)] += 1
        if got != fan.expected(kind):
            fan.ledger.problem(f"message {message_id} ({kind}) reached handlers {got:b}")
    status = dispatcher.dispatch_status()
    for route in ("order", "user", "*"):
        failures = {name: n for (kind, name), n in fan.raised.items() if route_of(kind) == route}
        figures = {"dispatched": dispatched[route], "failures": failures}
        if status[route] != figures:
            problem = f"dispatch_status()[{route!r}] = {status[route]}, expected {figures}"
            fan.ledger.problem(problem)


@dataclass
class Target:
    consumer: fluid.QueueConsumer[Job]
    ledger: Ledger
    fan_out: bool

    def kind(self, rng: random.Random) -> str:
        return rng.choice(list(ROUTES)) if self.fan_out else PLAIN

    def open(self) -> bool:
        """Whether to send here now: a bounded queue paces its producers itself."""
        return bool(self.consumer.maxsize) or self.consumer.queue_size() < OPEN_QUEUE


async def test_random_handler_failures_in_six_consumers(
    stress_seconds: float, stress_seed: int, report: Report
) -> None:
    report(seconds=stress_seconds)
    rng = random.Random(stress_seed)
    p_fail = rng.uniform(0.02, 0.3)

    def bounded() -> int:
        return rng.choice((2, 8, 64, 256))

    ledgers = {name: Ledger(name) for name in ("many", "one", "logged", "threaded")}
    fans = {name: FanOut(Ledger(name)) for name in ("fanout", "fanout_gather")}
    many = fluid.QueueConsumerWorker(
        loop_handler(ledgers["many"]),
        name="many",
        concurrency=rng.randint(2, 8),
        maxsize=bounded(),
        on_error=async_policy(ledgers["many"]),
    )
    ledgers["many"].watch(many)
    forwarded = ledgers["many"].stream()  # its one producer: the handler of "one"
    forward_rng = random.Random(rng.random())

    def forward() -> None:
        job = new_job(forward_rng, forwarded, PLAIN, p_fail)
        probe = forwarded.probe()
        try:
            many.send(job)
        except fluid.QueueFull:
            forwarded.refused(job.id, probe)
        else:
            forwarded.accepted(job.id)

    consumers: list[fluid.QueueConsumer[Job]] = [
        many,
        fluid.QueueConsumerWorker(
            loop_handler(ledgers["one"], forward), name="one", on_error=sync_policy(ledgers["one"])
        ),
        fluid.QueueConsumerWorker(
            loop_handler(ledgers["logged"]), name="logged", concurrency=3, maxsize=bounded()
        ),
        fluid.QueueConsumerWorker(
            thread_handler(ledgers["threaded"]),
            name="threaded",
            run_in="thread",
            concurrency=2,
            maxsize=bounded(),
            on_error=sync_policy(ledgers["threaded"]),
        ),
        fluid.AsyncConsumer(
            Tracked(fans["fanout"], concurrent=False),
            name="fanout",
            concurrency=rng.randint(1, 4),
            maxsize=bounded(),
            on_error=async_policy(fans["fanout"].ledger),
        ),
        fluid.AsyncConsumer(
            Tracked(fans["fanout_gather"], concurrent=True),
            name="fanout_gather",
            maxsize=bounded(),
            on_error=sync_policy(fans["fanout_gather"].ledger),
        ),
    ]
    ledgers.update({name: fan.ledger for name, fan in fans.items()})
    for consumer in consumers[2:]:  # "many" is watched already, "one" is unbounded
        ledgers[consumer.worker_name].watch(consumer)
    targets = [Target(c, ledgers[c.worker_name], c.worker_name in fans) for c in consumers]
    tree = fluid.Workers(*consumers, name="handler_failures")
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + stress_seconds
    stop = threading.Event()
    thread_seeds = [rng.random() for _ in range(THREADS)]
    thread_streams = [[t.ledger.stream() for t in targets] for _ in range(THREADS)]

    def produce_in_thread(index: int) -> None:
        prng = random.Random(thread_seeds[index])
        streams = thread_streams[index]
        must_wait = False
        while not stop.is_set():
            target_index = prng.randrange(len(targets))
            target = targets[target_index]
            if not target.open():
                continue
            stream = streams[target_index]
            job = new_job(prng, stream, target.kind(prng), p_fail)
            timeout = prng.choice((0.0, 0.001, 0.02)) if target.consumer.maxsize else 0.0
            if must_wait and target.consumer.maxsize:
                timeout = THREAD_PACE  # a producer that was refused waits: no spinning on refusals
            probe = stream.probe()
            try:
                target.consumer.send(job, timeout=timeout)
            except fluid.QueueFull:
                stream.refused(job.id, probe, timeout)
                must_wait = True
            else:
                stream.accepted(job.id)
                must_wait = False

    async def produce_on_loop(prng: random.Random) -> None:
        streams = [t.ledger.stream() for t in targets]
        while loop.time() < stop_at:
            for _ in range(prng.randint(1, 32)):
                target_index = prng.randrange(len(targets))
                target = targets[target_index]
                if not target.open():
                    continue
                stream = streams[target_index]
                job = new_job(prng, stream, target.kind(prng), p_fail)
                if target.consumer.maxsize and prng.random() < 0.7:
                    try:
                        await target.consumer.put(job)
                    finally:
                        stream.put_ended()
                    stream.accepted(job.id)
                    continue
                probe = stream.probe()
                try:
                    target.consumer.send(job)
                except fluid.QueueFull:
                    stream.refused(job.id, probe)
                else:
                    stream.accepted(job.id)
            await asyncio.sleep(0.001 if prng.random() < 0.1 else 0)

    threads = Threads(THREADS, produce_in_thread)
    producers: list[asyncio.Task[None]] = []
    with fluid_log() as log:
        await tree.startup()
        started = loop.time()
        try:
            threads.start()
            producers = [
                asyncio.create_task(produce_on_loop(random.Random(rng.random())))
                for _ in range(LOOP_PRODUCERS)
            ]
            await asyncio.gather(*producers)
        finally:
            stop.set()
            for task in producers:
                task.cancel()
            await asyncio.gather(*producers, return_exceptions=True)
            await threads.join()
            producing = loop.time() - started
            await tree.shutdown()  # graceful: each consumer drains, "one" before "many"

    for record in log.records:
        worker, job = record.args if len(record.args) == 2 else (None, None)
        if record.msg == FAILED_TO_HANDLE and worker == "logged" and isinstance(job, Job):
            ledgers["logged"].reported(job.id)
            if len(record.serials) != 1:
                ledgers["logged"].problem(f"logged {record}")
        else:
            ledgers["logged"].problem(f"unexpected log record {record}")
    for name, fan in fans.items():
        consumer = next(c for c in consumers if c.worker_name == name)
        assert isinstance(consumer, fluid.AsyncConsumer)
        dispatcher = consumer.dispatcher
        assert isinstance(dispatcher, Tracked)
        check_fan_out(fan, dispatcher)
    totals: Counter[str] = Counter()
    for ledger in ledgers.values():
        totals.update(ledger.tally())
    figures: dict[str, Any] = dict(totals)
    # A thread refused once gives its next send to a bounded queue THREAD_PACE
    # (the unbounded ones never refuse): its refusals in a row are paced.
    thread_figures = [stream.figures() for streams in thread_streams for stream in streams]
    threads_accepted = sum(accepted for accepted, _ in thread_figures)
    threads_refused = sum(refused for _, refused in thread_figures)
    most = most_refusals(threads_accepted, THREADS, producing, THREAD_PACE)
    report(
        p_fail=round(p_fail, 3),
        **figures,
        refusals_checked=sum(ledger.refusals_checked for ledger in ledgers.values()),
        crashes=0,
        restarts=0,
        logged=log.count(FAILED_TO_HANDLE),
    )
    assert [c.worker_state for c in consumers] == [fluid.WorkerState.STOPPED] * len(consumers)
    for consumer in consumers:
        await ledgers[consumer.worker_name].settled()
        ledgers[consumer.worker_name].check(consumer.queue_status())
    assert threads_refused <= most, f"{threads_refused} refusals in threads, pacing allows {most}"
    assert totals["handled"] > 0
    assert totals["failed"] > 0
