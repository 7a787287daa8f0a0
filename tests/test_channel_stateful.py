"""A stateful test of the channel: producers, takes, timeouts, cancellations, close.

Hypothesis drives one bounded ``Channel`` with random sequences of:

* ``send`` that never waits, ``put()`` from a coroutine (which may be
  cancelled later, at any point: in line, woken, or after it appended), and
  ``send(timeout=...)`` from real threads, waiting for ever or briefly;
* takes of one message, ``take_all``, closing and opening the channel, and
  turns of the event loop.

Every producer sends one message, numbered in the order the calls were made.
After each step the world is left to settle (every coroutine and thread is
either done or in line for room) and the invariants are checked:

* the books: ``sent = started + taken + size``, and the messages out of the
  channel plus those in it are exactly the accepted ones, each once;
* order: messages come out in the order their producers called, so a waiting
  producer was never overtaken, and admission was first in, first in;
* nobody waits for nothing: a producer is in line only while the channel is
  full, and never while it is closed;
* a refusal is made only when there is no room, and a timed wait lasts its
  timeout (measured, never read from the error).

Rules are sync, so the coroutines run on a per-example loop, a few turns at a
time (``loop.run_until_complete``). The thread running it is the channel's
loop thread, as a consumer's loop thread would be.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fluid
from fluid._channel import _REFUSED, EMPTY, Channel

SETTLE = 3.0
"""Seconds the world may take to settle after a step; a bug is a wait of hours."""

EPSILON = 0.005


class Owner:
    worker_name = "stateful"


@dataclass
class ThreadProducer:
    """A thread calling ``send(message, timeout=timeout)`` once."""

    message: int
    timeout: float
    outcome: BaseException | str | None = "pending"
    elapsed: float = 0.0
    thread: threading.Thread = field(init=False)

    def start(self, channel: Channel[int]) -> None:
        def send() -> None:
            started = time.monotonic()
            try:
                channel.send(self.message, timeout=self.timeout)
            except fluid.QueueFull as exc:
                self.outcome = exc
            else:
                self.outcome = None
            self.elapsed = time.monotonic() - started

        self.thread = threading.Thread(target=send, daemon=True, name="stateful-producer")
        self.thread.start()


@settings(max_examples=40, stateful_step_count=30, deadline=None)
class ChannelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.channel: Channel[int] = Channel(Owner(), maxsize=1)
        self.serial = 0
        self.accepted: set[int] = set()
        self.out: list[int] = []
        """Every message taken out (take or take_all), in order."""
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.threads: dict[int, ThreadProducer] = {}
        self.healthy = True
        """False once a step or an invariant failed: teardown then cleans up quickly."""

    @initialize(maxsize=st.integers(1, 3))
    def make(self, maxsize: int) -> None:
        self.channel = Channel(Owner(), maxsize=maxsize)
        self.channel.open(self.loop)

    # ----------------------------------------------------------------- plumbing

    def new_message(self) -> int:
        self.serial += 1
        return self.serial

    def turns(self, count: int = 3) -> None:
        for _ in range(count):
            self.loop.run_until_complete(asyncio.sleep(0))

    def settle(self, bound: float = SETTLE) -> None:
        """Run the loop until every producer is done or in line; fail after ``bound`` s."""
        self.healthy = False
        deadline = time.monotonic() + bound
        while True:
            self.turns()
            self.collect()
            pending = sum(not t.done() for t in self.tasks.values()) + sum(
                p.thread.is_alive() for p in self.threads.values()
            )
            channel = self.channel
            if pending == channel.waiting and not channel.expecting:
                self.healthy = True
                return
            assert time.monotonic() < deadline, (
                f"not settled: {pending} producers pending, {channel.waiting} in line, "
                f"{len(channel)} of {channel.maxsize} queued, open={channel.is_open}"
            )
            time.sleep(0.0005)

    def collect(self) -> None:
        """Book the outcome of every producer that finished."""
        for message, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[message]
                if not task.cancelled() and task.exception() is None:
                    self.accepted.add(message)
                elif not task.cancelled():
                    assert isinstance(task.exception(), fluid.QueueClosed)
        for message, producer in list(self.threads.items()):
            if not producer.thread.is_alive():
                producer.thread.join()
                del self.threads[message]
                self.check_thread_outcome(producer)

    def check_thread_outcome(self, producer: ThreadProducer) -> None:
        outcome = producer.outcome
        if outcome is None:
            self.accepted.add(producer.message)
        elif isinstance(outcome, fluid.QueueClosed):
            pass  # refused at once or woken by close(): never a wait for nothing
        elif isinstance(outcome, fluid.QueueFull):  # a timed wait ran out
            assert producer.elapsed >= producer.timeout - EPSILON, (
                f"a send(timeout={producer.timeout}) gave up after {producer.elapsed:.4f}s"
            )
        else:
            raise AssertionError(f"unexpected outcome {outcome!r}")

    def queued(self) -> list[int]:
        """The messages in the channel, in order, left where they are."""
        buffer = self.channel._buffer
        assert isinstance(buffer, deque)
        return list(buffer)

    def room(self) -> bool:
        channel = self.channel
        return len(channel) < channel.maxsize and channel.waiting == 0

    # -------------------------------------------------------------------- rules

    @rule()
    def send_and_settle(self) -> None:
        self.send()
        self.settle()

    @rule()
    def put_and_settle(self) -> None:
        self.put()
        self.settle()

    @rule(timeout=st.sampled_from([math.inf, 30.0, 0.01]))
    def send_from_thread_and_settle(self, timeout: float) -> None:
        self.send_from_thread(timeout)
        self.settle()

    def send(self) -> None:
        message = self.new_message()
        had_room = self.room()
        try:
            self.channel.send(message)
        except fluid.QueueFull:
            assert not had_room, "send() refused with room in the queue"
        else:
            assert had_room, "send() accepted beyond the room there was"
            self.accepted.add(message)

    def put(self) -> None:
        message = self.new_message()
        self.tasks[message] = self.loop.create_task(self.channel.put(message))

    def send_from_thread(self, timeout: float) -> None:
        producer = ThreadProducer(self.new_message(), timeout)
        self.threads[producer.message] = producer
        producer.start(self.channel)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def cancel_put(self, data: st.DataObject) -> None:
        message = data.draw(st.sampled_from(sorted(self.tasks)))
        task = self.tasks[message]
        task.cancel()
        self.settle()

    @rule(then=st.sampled_from(["nothing", "cancel", "send", "put", "thread"]))
    def take(self, then: str) -> None:
        """Take a message, then act before a put() it woke has resumed."""
        message = self.channel.take()
        if message is not EMPTY:
            self.out.append(message)
        if then == "cancel" and self.tasks:
            self.tasks[min(self.tasks)].cancel()  # the oldest: maybe the one just woken
        elif then == "send":
            self.send()  # a newcomer must not overtake the producer on its way
        elif then == "put":
            self.put()
        elif then == "thread":
            self.send_from_thread(math.inf)
        self.settle()

    @rule()
    def take_all(self) -> None:
        self.out += self.channel.take_all()
        self.settle()

    @rule()
    def close(self) -> None:
        self.channel.close()
        self.settle()

    @rule()
    def open(self) -> None:
        self.channel.open(self.loop)
        self.settle()

    # --------------------------------------------------------------- invariants

    @invariant()
    def books_balance(self) -> None:
        self.healthy = False
        channel = self.channel
        queued = self.queued()
        assert channel.sent == channel.started + channel.taken + len(channel)
        assert channel.sent == len(self.accepted)
        assert sorted(self.out + queued) == sorted(self.accepted)
        self.healthy = True

    @invariant()
    def first_in_first_out(self) -> None:
        self.healthy = False
        everything = self.out + self.queued()
        assert everything == sorted(everything), f"overtaken: {everything}"
        self.healthy = True

    @invariant()
    def nobody_waits_for_nothing(self) -> None:
        self.healthy = False
        channel = self.channel
        if channel.waiting:
            assert len(channel) >= channel.maxsize, (
                f"{channel.waiting} producers wait with {len(channel)} of {channel.maxsize} queued"
            )
            assert channel.is_open, "producers wait on a closed channel"
        self.healthy = True

    def teardown(self) -> None:
        try:
            self.channel.close()  # refuses whoever waits
            self.settle(SETTLE if self.healthy else 0.1)
            assert not self.tasks, f"coroutines left waiting: {sorted(self.tasks)}"
            assert not self.threads, f"threads left waiting: {sorted(self.threads)}"
        finally:
            # A failed example may leave producers in line (that is what failed):
            # refuse them by hand so that its threads end and the run goes on.
            for producer in list(self.channel._line):
                producer.state = _REFUSED
                producer.signal()
            self.channel._line.clear()
            for task in self.tasks.values():
                task.cancel()
            for thread_producer in self.threads.values():
                thread_producer.thread.join(1.0)
            self.turns()
            self.loop.close()


TestChannel = ChannelMachine.TestCase
