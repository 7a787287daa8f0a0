"""Producers in eight threads and on the loop against a bounded queue that keeps stopping.

Injected: the consumer of a queue of ``MAXSIZE`` messages is stopped and
started again at random moments while producers send: eight threads with
``send()`` and ``send(timeout=...)``, two tasks on the loop with ``send()``
and ``await put()``. How it is stopped depends on the mode:

* ``direct``: ``shutdown()`` then ``startup()``, with a grace period that is
  sometimes too short for the handler, so that stops are forced and messages
  in flight go back to the queue; sometimes ``take_undelivered()`` meanwhile;
* ``tree``: ``stop_workers()`` / ``start_workers()`` on its tree;
* ``readd``: ``remove_workers()`` then ``add_workers()`` on its running tree;
* ``supervised``: crashes under a supervising tree (a random strategy):
  poison messages under ``on_error="stop"``, and a crashing sibling that takes
  the consumer with it under ``one_for_all`` and ``rest_for_one``;
* ``deadline``: as ``direct``, and the producers on the loop give their
  ``await put()`` a deadline (``asyncio.timeout``): a put cancelled while
  waiting must queue nothing.

Checked: per producer, sends accepted and refused (``QueueFull``, its
``QueueClosed`` while the consumer is stopped, or a ``put()`` cancelled by
its deadline); each refusal was made on a full queue
and a timed one waited its timeout (``_books.Room``); there are no more
refusals than the producers' pacing allows (``most_refusals``); ``sent`` is
what was accepted; each accepted message
was handled, failed (reported once) or taken, exactly once, and no refused
one ever arrived; ``queue_status()`` agrees; the queue never held more than
``maxsize`` plus the messages a forced stop put back; under supervision each
crash was reported once and followed by a restart.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

import fluid

from ..helpers import Idle, wait_until
from ._books import (
    Crashy,
    Injected,
    Ledger,
    Lifecycle,
    Stream,
    Threads,
    fluid_log,
    most_refusals,
)
from .conftest import Report

MAXSIZE = 8
THREADS = 8
LOOP_PRODUCERS = 2
THREAD_PACE = 0.005
"""A producer thread refused once gives its next send this timeout."""
DEADLINES = (None, 0.001, 0.01)
"""The deadlines of a loop producer's ``put()`` in the deadline mode (the one refused there)."""
LOOP_PACE = 0.001
"""How long a loop producer refused because the consumer is stopped waits before its next."""
NAME = "bounded"
STRATEGIES: tuple[fluid.Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")
FAILED = "worker %r failed"
# What fluid may log in these scenarios besides the crashes themselves.
EXPECTED_LOGS = {
    FAILED,
    "worker %r stopped with %d undelivered messages (take them with take_undelivered())",
    "worker %r did not stop within its grace period of %ss: cancelling it",
    "worker %r failed while stopping for a restart",
    "worker %r of tree %r failed as the tree stopped; it is not restarted",
}


class Msg(NamedTuple):
    id: int
    fail: bool
    awaits: int  # 0: never awaits; n: n loop turns; -1: a short timer


@dataclass
class Books:
    """The scenario's own figures besides the ledger."""

    ledger: Ledger
    maxsize: int
    concurrency: int
    p_fail: float
    fired: dict[int, int] = field(default_factory=dict)  # injected error serial: message id
    requeued: int = 0  # handlers cancelled by a forced stop
    over_capacity: list[int] = field(default_factory=list)
    cycles: int = 0
    forced: int = 0

    def new(self, rng: random.Random, stream: Stream) -> Msg:
        r = rng.random()
        awaits = 0 if r < 0.5 else rng.randint(1, 3) if r < 0.9 else -1
        return Msg(stream.new_id(), rng.random() < self.p_fail, awaits)

    def look(self, consumer: fluid.QueueConsumer[Msg]) -> None:
        """The queue holds at most maxsize, plus what forced stops put back."""
        size = consumer.queue_size()
        if size > self.maxsize + self.concurrency:
            self.over_capacity.append(size)

    def handler(self, consumer: Callable[[], fluid.QueueConsumer[Msg]]) -> Callable[[Msg], Any]:
        async def handle(msg: Msg) -> None:
            self.look(consumer())
            try:
                if msg.awaits < 0:
                    await asyncio.sleep(0.0005)
                for _ in range(msg.awaits):
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                self.requeued += 1
                raise
            if msg.fail:
                self.ledger.failed(msg.id)
                error = Injected("handler", msg.id)
                self.fired[error.serial] = msg.id
                raise error
            self.ledger.handled(msg.id)

        return handle

    def on_error(self, msg: Msg, error: Exception) -> None:
        self.ledger.reported(msg.id)
        if not (isinstance(error, Injected) and error.message_id == msg.id):
            self.ledger.problem(f"message {msg.id} reported with {error!r}")


async def restarted(worker: fluid.Worker, what: str) -> None:
    try:
        await wait_until(worker.is_running, timeout=10.0)
    except AssertionError:
        raise AssertionError(
            f"{what}: {worker.worker_name!r} is still {worker.worker_state} 10 s later"
        ) from None


@pytest.mark.parametrize("mode", ["direct", "tree", "readd", "supervised", "deadline"])
async def test_bounded_queue_of_a_consumer_that_keeps_stopping(
    mode: str, stress_seconds: float, stress_seed: int, report: Report
) -> None:
    report(seconds=stress_seconds, mode=mode)
    rng = random.Random(stress_seed)
    supervised = mode == "supervised"
    books = Books(
        Ledger(NAME),
        MAXSIZE,
        rng.choice((1, 2, 4)),
        rng.uniform(0.002, 0.02) if supervised else rng.uniform(0.01, 0.2),
    )
    grace = rng.choice((0.001, 0.02, 2.0))
    consumer: fluid.QueueConsumerWorker[Msg] = fluid.QueueConsumerWorker(
        books.handler(lambda: consumer),
        name=NAME,
        stopping_grace_period=grace,
        maxsize=MAXSIZE,
        concurrency=books.concurrency,
        on_error="stop" if supervised else books.on_error,
    )
    sibling = Crashy("sibling")
    strategy = rng.choice(STRATEGIES)
    tree: fluid.Workers | None = None  # direct: the consumer on its own
    if supervised:
        backoff = fluid.Backoff(initial=rng.choice((0.0, 0.001)), maximum=0.005, jitter=0.5)
        tree = fluid.Workers(
            sibling, consumer, strategy=strategy, max_restarts=10**9, period=1, backoff=backoff
        )
    elif mode in ("tree", "readd"):
        tree = fluid.Workers(Idle(name="idle"), consumer)
    root: fluid.Worker = consumer if tree is None else tree
    lifecycle = Lifecycle()  # on the leaves: a removed consumer no longer tells its tree
    consumer.add_observer(lifecycle)
    sibling.add_observer(lifecycle)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + stress_seconds
    stop = threading.Event()
    deadlines = DEADLINES if mode == "deadline" else (None,)
    # A handler cancelled by a forced stop puts its message back (counted before it does).
    books.ledger.watch(consumer, requeued=lambda: books.requeued)
    streams: list[Stream] = [books.ledger.stream() for _ in range(THREADS + LOOP_PRODUCERS)]
    seeds = [rng.random() for _ in streams]

    def produce_in_thread(index: int) -> None:
        prng, stream = random.Random(seeds[index]), streams[index]
        must_wait = False
        while not stop.is_set():
            msg = books.new(prng, stream)
            timeout = THREAD_PACE if must_wait else prng.choice((0.0, 0.0, 0.0005, 0.002))
            probe = stream.probe()
            try:
                consumer.send(msg, timeout=timeout)
            except fluid.QueueClosed:  # full and stopped: refused at once, whatever the timeout
                stream.refused(msg.id, probe)
                must_wait = True
                time.sleep(THREAD_PACE)  # no spinning while the consumer is down
            except fluid.QueueFull:
                stream.refused(msg.id, probe, timeout)
                must_wait = True  # a refused producer waits next time: no spinning
            else:
                stream.accepted(msg.id)
                must_wait = False

    async def produce_on_loop(index: int) -> None:
        prng, stream = random.Random(seeds[index]), streams[index]
        must_wait = False
        while loop.time() < stop_at:
            msg = books.new(prng, stream)
            if must_wait or prng.random() < 0.6:
                deadline = prng.choice(deadlines)
                probe = stream.probe()
                try:
                    async with asyncio.timeout(deadline):
                        await consumer.put(msg)
                except TimeoutError:
                    assert deadline is not None
                    stream.refused(msg.id, probe, deadline)  # a cancelled put() queues nothing
                    continue
                except fluid.QueueClosed:  # full and stopped: refused at once
                    stream.refused(msg.id, probe)
                    await asyncio.sleep(LOOP_PACE)  # no spinning while the consumer is down
                    continue
                except asyncio.CancelledError:
                    stream.refused(msg.id)
                    raise
                finally:
                    stream.put_ended()
                stream.accepted(msg.id)
                must_wait = False
            else:
                probe = stream.probe()
                try:
                    consumer.send(msg)
                except fluid.QueueFull:
                    stream.refused(msg.id, probe)
                    must_wait = True
                    continue
                stream.accepted(msg.id)
            if prng.random() < 0.5:
                await asyncio.sleep(0)

    def take() -> None:
        for msg in consumer.take_undelivered():
            books.ledger.taken(msg.id)

    async def stop_and_start() -> None:
        """One cycle of the mode; the consumer runs again when it returns."""
        if tree is None:
            await consumer.shutdown()
        elif mode == "tree":
            await tree.stop_workers(NAME)
        else:
            await tree.remove_workers(NAME)
        books.cycles += 1
        books.forced += consumer.worker_state is fluid.WorkerState.FORCE_STOPPED
        books.look(consumer)
        if rng.random() < 0.4:
            take()
        await asyncio.sleep(rng.choice((0.0, 0.0, 0.001, 0.005)))  # down a while: queue full
        if tree is None:
            await consumer.startup()
        elif mode == "tree":
            await tree.start_workers(NAME)
        else:
            tree.add_workers(consumer)
            await restarted(consumer, "added back to its running tree")

    async def crash_sibling() -> None:
        if sibling.can_end():
            if rng.random() < 0.8:
                sibling.crash(Injected("sibling"))
            else:
                sibling.finish()

    async def inject() -> None:
        while loop.time() < stop_at:
            await asyncio.sleep(rng.choice((0.0, 0.001, 0.005, 0.02)))
            books.look(consumer)
            await (crash_sibling() if supervised else stop_and_start())

    threads = Threads(THREADS, produce_in_thread)
    tasks: list[asyncio.Task[None]] = []
    with fluid_log() as log:
        await root.startup()
        try:
            started = loop.time()
            threads.start()
            tasks = [
                asyncio.create_task(produce_on_loop(THREADS + i)) for i in range(LOOP_PRODUCERS)
            ]
            await inject()
            stop.set()
            await threads.join()
            await asyncio.gather(*tasks)
            producing = loop.time() - started
            if supervised:  # let the restarts settle: every crash is restarted
                await wait_until(
                    lambda: (
                        sibling.is_running()
                        and consumer.is_running()
                        and not consumer.queue_status()["size"]
                        and not consumer.queue_status()["in_flight"]
                    ),
                    timeout=10,
                )
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await threads.join()
            await root.shutdown()
        take()

    for record in log.records:
        if record.msg not in EXPECTED_LOGS or (record.msg == FAILED and not supervised):
            books.ledger.problem(f"unexpected log record {record}")
        elif record.msg == FAILED and record.args == (NAME,):
            for serial in record.serials:  # a crash by a poison message: its report
                books.ledger.reported(books.fired[serial])
    per_producer = [stream.figures() for stream in streams]
    figures = books.ledger.tally()
    report(
        strategy=strategy if supervised else None,
        concurrency=books.concurrency,
        grace=grace,
        **figures,
        per_producer=per_producer,
        refusals_checked=books.ledger.refusals_checked,
        cycles=books.cycles,
        forced=books.forced,
        requeued=books.requeued,
        crashes=len(sibling.fired) + (len(books.fired) if supervised else 0),
        restarts=consumer.restarts + sibling.restarts,
    )
    if supervised:  # each crash ended its worker once (or was logged), then a restart
        logged = {s for r in log.records if r.msg == FAILED for s in r.serials}
        lost = [books.fired[s] for s in books.fired if s not in logged]
        assert not lost, f"poison messages whose error was neither raised nor logged: {lost}"
        crashed = [s for e in lifecycle.of(sibling, "crashed") for s in e.serials]
        assert sorted(crashed) == sorted(sibling.fired)
        crashed = [s for e in lifecycle.of(consumer, "crashed") for s in e.serials]
        assert len(set(crashed)) == len(crashed)
        assert set(crashed) <= set(books.fired)  # the others failed while another crashed
        for worker in (sibling, consumer):
            assert len(lifecycle.of(worker, "started")) == 1 + worker.restarts
    await books.ledger.settled()
    books.ledger.check(consumer.queue_status())
    assert sum(accepted for accepted, _ in per_producer) == figures["sent"]
    # The producers pace themselves: a thread refused once waits THREAD_PACE on
    # its next send (or sleeps that long, refused because the consumer is
    # stopped); a loop producer refused by send() puts next, and a put() is
    # refused by a deadline it waited (the shortest: DEADLINES[1]), or because
    # the consumer is stopped, and then it sleeps LOOP_PACE.
    threads_accepted = sum(accepted for accepted, _ in per_producer[:THREADS])
    threads_refused = sum(refused for _, refused in per_producer[:THREADS])
    loop_accepted = sum(accepted for accepted, _ in per_producer[THREADS:])
    loop_refused = sum(refused for _, refused in per_producer[THREADS:])
    most = most_refusals(threads_accepted, THREADS, producing, THREAD_PACE)
    assert threads_refused <= most, f"{threads_refused} refusals, the pacing allows {most}"
    pace = min(LOOP_PACE, DEADLINES[1] or math.inf)
    most = most_refusals(loop_accepted, LOOP_PRODUCERS, producing, pace)
    assert loop_refused <= most, f"{loop_refused} refusals on the loop, the pacing allows {most}"
    assert books.over_capacity == [], f"queue above capacity: {books.over_capacity[:10]}"
    assert lifecycle.check() == []
    assert figures["sent"] > 0
