"""The channel behind a queue consumer: admission, wake-ups, open and closed, books.

Each promise is tested where it can break: thread storms with a tiny switch
interval for the races between producers and the consumer, cancellation of
``put()`` at each of its awaits, producers waiting when the consumer stops,
and timed waits measured with a clock (never read from an error message).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

import fluid
from fluid import QueueStatus, WorkerState
from fluid._channel import EMPTY, Channel

from .helpers import Recorder, tiny_switch_interval, wait_until

EPSILON = 0.005
"""How much earlier than asked a timed wait may end (clock granularity)."""

SLACK = 5.0
"""A generous upper bound on how much later than asked a timed wait may end."""


def balance(books: QueueStatus) -> int:
    return books["handled"] + books["failed"] + books["taken"] + books["size"] + books["in_flight"]


def start_thread(target: Callable[..., object], *args: object) -> threading.Thread:
    """A daemon thread: a regression that blocks it fails the test, never hangs the run."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


async def join(threads: list[threading.Thread], timeout: float = 20.0) -> None:
    await wait_until(lambda: not any(t.is_alive() for t in threads), timeout=timeout)


def waiting(consumer: fluid.QueueConsumer[Any]) -> int:
    """Producers waiting for room (and one admitted put() on its way)."""
    return consumer._channel.waiting


def expecting(consumer: fluid.QueueConsumer[Any]) -> bool:
    """Whether an admitted put() has yet to append its message."""
    return consumer._channel.expecting


def readers(consumer: fluid.QueueConsumer[Any]) -> int:
    """How many of the consumer's tasks wait for a message."""
    return len(consumer._channel._readers)


class Gate:
    """A handler that holds the messages it is told to hold until released."""

    def __init__(self, hold: Callable[[object], bool] = lambda message: True) -> None:
        self.hold = hold
        self.entered: list[object] = []
        self.done: list[object] = []
        self.release = asyncio.Event()

    async def __call__(self, message: object) -> None:
        self.entered.append(message)
        if self.hold(message):
            await self.release.wait()
        self.done.append(message)


async def full_consumer(
    maxsize: int = 1, **kwargs: Any
) -> tuple[fluid.QueueConsumerWorker[object], Gate]:
    """A running consumer holding ``"held"`` in its handler and ``maxsize`` messages queued."""
    gate = Gate(lambda message: message == "held")
    kwargs.setdefault("stopping_grace_period", 0.2)
    consumer = fluid.QueueConsumerWorker(gate, maxsize=maxsize, **kwargs)
    await consumer.startup()
    consumer.send("held")
    await wait_until(lambda: gate.entered == ["held"])
    for i in range(maxsize):
        consumer.send(i)
    return consumer, gate


# ---------------------------------------------- 1. a waiting producer is admitted


@pytest.mark.parametrize("maxsize", [1, 8])
async def test_sixteen_threads_never_stall_on_a_small_queue(maxsize: int) -> None:
    """Room checked, lock released, waiter registered late: it once waited forever."""
    per_thread, patience = 600, 5.0
    handled = 0

    async def count(message: object) -> None:
        nonlocal handled
        handled += 1

    consumer = fluid.QueueConsumerWorker(count, maxsize=maxsize)
    refusals: list[tuple[int, QueueStatus]] = []

    def produce(tag: int) -> None:
        for i in range(per_thread):
            try:
                # the consumer never stops taking: waiting `patience` means a stall
                consumer.send((tag, i), timeout=patience)
            except fluid.QueueFull:
                refusals.append((tag, consumer.queue_status()))
                return

    with tiny_switch_interval():
        async with consumer:
            threads = [start_thread(produce, tag) for tag in range(16)]
            await join(threads, timeout=60)
    assert refusals == [], f"producers timed out while the consumer ran: {refusals[:3]}"
    assert handled == 16 * per_thread
    books = consumer.queue_status()
    assert books["sent"] == balance(books) == 16 * per_thread


async def test_threads_and_coroutines_storm_a_bounded_queue_and_lose_nothing() -> None:
    per_producer, patience = 400, 5.0
    recorder = Recorder()
    consumer = fluid.QueueConsumerWorker(recorder, maxsize=3, concurrency=2)
    refusals: list[QueueStatus] = []

    def from_thread(tag: int) -> None:
        for i in range(per_producer):
            try:
                consumer.send(("t", tag, i), timeout=patience)
            except fluid.QueueFull:
                refusals.append(consumer.queue_status())
                return

    async def from_loop(tag: int) -> None:
        for i in range(per_producer):
            await consumer.put(("c", tag, i))

    with tiny_switch_interval():
        async with consumer:
            threads = [start_thread(from_thread, tag) for tag in range(6)]
            async with asyncio.timeout(60):
                await asyncio.gather(*(from_loop(tag) for tag in range(4)))
            await join(threads, timeout=60)
    assert refusals == []
    messages: list[Any] = recorder.messages
    assert len(messages) == len(set(messages)) == 10 * per_producer
    for kind, tags in (("t", 6), ("c", 4)):  # FIFO per producer
        for tag in range(tags):
            mine = [m[2] for m in messages if m[0] == kind and m[1] == tag]
            assert mine == list(range(per_producer))


# --------------------------------------- 2. a put() admitted during a drain is handled


async def test_a_put_admitted_while_the_consumer_drains_is_handled() -> None:
    consumer, gate = await full_consumer(maxsize=1, stopping_grace_period=5)
    late = asyncio.create_task(consumer.put("late"))
    await wait_until(lambda: waiting(consumer) == 1)
    stopping = asyncio.create_task(consumer.shutdown())
    await wait_until(consumer.is_stopping)
    gate.release.set()  # "held" returns; 0 is taken, which admits "late"
    async with asyncio.timeout(5):
        await late
        await stopping
    assert gate.done == ["held", 0, "late"]  # put() returned: the drain handled it
    books = consumer.queue_status()
    assert (books["sent"], books["handled"], books["size"], books["undelivered"]) == (3, 3, 0, 0)


async def test_a_put_admitted_during_a_drain_and_cancelled_lets_the_drain_end() -> None:
    release = asyncio.Event()
    done: list[object] = []
    late: asyncio.Task[None] | None = None

    async def handle(message: object) -> None:
        if message == "held":
            await release.wait()
        elif message == 0 and late is not None:
            # taking 0 admitted "late", which has not resumed yet: cancel it now
            assert expecting(consumer)
            late.cancel()
        done.append(message)

    consumer = fluid.QueueConsumerWorker(handle, maxsize=1, stopping_grace_period=5)
    await consumer.startup()
    consumer.send("held")
    await wait_until(lambda: consumer.queue_status()["in_flight"] == 1)
    consumer.send(0)
    late = asyncio.create_task(consumer.put("late"))
    await wait_until(lambda: waiting(consumer) == 1)
    stopping = asyncio.create_task(consumer.shutdown())
    await wait_until(consumer.is_stopping)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await late
    async with asyncio.timeout(5):
        await stopping
    assert consumer.worker_state is WorkerState.STOPPED  # not forced: the drain ended
    assert done == ["held", 0]
    assert consumer.queue_status()["sent"] == 2


# ------------------------------- 3. producers are never left waiting on a stopped consumer


async def test_producers_waiting_when_the_consumer_is_forced_are_refused() -> None:
    consumer, _ = await full_consumer(maxsize=1, stopping_grace_period=0.05)
    outcomes: list[BaseException | None] = []

    def from_thread() -> None:
        try:
            consumer.send("thread", timeout=math.inf)
        except fluid.FluidError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    thread = start_thread(from_thread)
    coroutine = asyncio.create_task(consumer.put("coroutine"))
    await wait_until(lambda: waiting(consumer) == 2)
    await consumer.shutdown()  # "held" never returns: forced, the queue stays full
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    await join([thread], timeout=5)
    with pytest.raises(fluid.QueueClosed, match="consumer is stopped"):
        async with asyncio.timeout(5):
            await coroutine
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], fluid.QueueClosed)
    assert consumer.take_undelivered() == ["held", 0]  # nothing else was queued


async def test_producers_waiting_when_the_consumer_fails_are_refused() -> None:
    async def fail(message: object) -> None:
        if message == "poison":
            await asyncio.sleep(0.05)
            raise ValueError("poison")

    consumer = fluid.QueueConsumerWorker(fail, maxsize=1, on_error="stop")
    await consumer.startup()
    consumer.send("poison")
    await wait_until(lambda: consumer.queue_size() == 0)
    consumer.send("queued")
    waiting = asyncio.create_task(consumer.put("waiting"))
    with pytest.raises(ValueError, match="poison"):
        await consumer.wait_for_shutdown()
    with pytest.raises(fluid.QueueClosed):
        async with asyncio.timeout(5):
            await waiting
    assert consumer.take_undelivered() == ["queued"]


class FailsToStart(fluid.QueueConsumer[object]):
    """A consumer whose ``on_startup()`` fails (a database that is down), or hangs."""

    def __init__(self, hang: bool = False) -> None:
        super().__init__(maxsize=1, stopping_grace_period=0.05)
        self.hang = hang
        self.entered = asyncio.Event()

    async def on_startup(self) -> None:
        self.entered.set()
        if not self.hang:
            raise ConnectionError("the database is down")
        while True:  # a hung connect that swallows the forced stop's cancellation
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
            return

    async def run(self) -> None:
        raise AssertionError("never runs")


async def refused_both(consumer: fluid.QueueConsumer[object], end: Callable[[], Any]) -> None:
    """A thread and a coroutine wait for room; ``end()`` ends the consumer without a run."""
    consumer.send("fills it")
    outcomes: list[BaseException] = []
    thread = start_thread(lambda: _catch(outcomes, lambda: consumer.send("thread", timeout=20)))
    coroutine = asyncio.create_task(consumer.put("coroutine"))
    await wait_until(lambda: waiting(consumer) == 2)
    started = time.monotonic()
    await end()
    assert consumer.is_stopped()
    await join([thread], timeout=10)
    with pytest.raises(fluid.QueueClosed, match="consumer is stopped"):
        async with asyncio.timeout(10):
            await coroutine
    assert time.monotonic() - started < 10  # refused when it ended, not after the thread's 20 s
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], fluid.QueueClosed)
    assert consumer.take_undelivered() == ["fills it"]  # kept for a next run, as documented


async def test_producers_waiting_when_the_first_startup_fails_are_refused() -> None:
    consumer = FailsToStart()

    async def end() -> None:
        with pytest.raises(ConnectionError):
            await consumer.startup()

    await refused_both(consumer, end)
    assert consumer.worker_state is WorkerState.STOPPED


async def test_producers_waiting_when_the_first_startup_is_forced_are_refused() -> None:
    consumer = FailsToStart(hang=True)

    async def end() -> None:
        starting = asyncio.create_task(consumer.startup())
        await consumer.entered.wait()
        await consumer.shutdown()  # forced after its grace period, inside on_startup()
        with pytest.raises(fluid.WorkerStateError, match="never ran"):
            await starting

    await refused_both(consumer, end)
    assert consumer.worker_state is WorkerState.FORCE_STOPPED


async def test_a_stopped_consumer_refuses_waiting_at_once_and_accepts_what_fits() -> None:
    consumer, _ = await full_consumer(maxsize=2, stopping_grace_period=0.05)
    await consumer.shutdown()  # forced: "held" goes back, 0 and 1 stay: 3 queued
    started = time.monotonic()
    with pytest.raises(fluid.QueueClosed):
        await consumer.put("waits")
    errors: list[BaseException] = []
    thread = start_thread(lambda: _catch(errors, lambda: consumer.send("waits", timeout=10)))
    await join([thread], timeout=5)
    assert time.monotonic() - started < 5  # refused at once, not after the 10 s
    assert len(errors) == 1
    assert isinstance(errors[0], fluid.QueueClosed)
    with pytest.raises(fluid.QueueFull) as refused:
        consumer.send("no wait")
    assert type(refused.value) is fluid.QueueFull  # a plain send never waited
    assert consumer.take_undelivered() == ["held", 0, 1]
    consumer.send("fits")  # a stopped consumer keeps what fits for its next run
    await consumer.put("fits too")
    assert consumer.queue_size() == 2


async def test_a_restarted_consumer_opens_its_queue_again() -> None:
    consumer, gate = await full_consumer(maxsize=1, stopping_grace_period=0.05)
    await consumer.shutdown()
    with pytest.raises(fluid.QueueClosed):
        await consumer.put("refused")
    gate.release.set()
    await consumer.startup()  # "held" and 0 are still queued; the handler lets all go
    await consumer.put("admitted")  # waits for room again instead of being refused
    async with asyncio.timeout(5):
        await consumer.shutdown()
    assert gate.done == ["held", 0, "admitted"]


async def test_a_supervised_consumer_refuses_waiting_while_down_and_reopens() -> None:
    async def handle(message: object) -> None:
        if message == "crash":
            raise ValueError("crash")

    consumer = fluid.QueueConsumerWorker(handle, maxsize=1, on_error="stop", name="c")
    tree = fluid.Workers(
        consumer,
        strategy="one_for_one",
        max_restarts=5,
        backoff=fluid.Backoff(initial=0.5, jitter=0),
        stopping_grace_period=1,
    )
    async with tree:
        consumer.send("crash")
        await wait_until(lambda: not consumer.is_running())
        # down for the backoff: what fits is kept, a wait for room is refused at once
        consumer.send("kept")
        with pytest.raises(fluid.QueueClosed):
            await consumer.put("refused")
        assert consumer.is_stopped()  # all of this happened while it was down
        await wait_until(consumer.is_running, timeout=10)
        async with asyncio.timeout(5):
            await consumer.put("after the restart")  # the restart opened it again
        await wait_until(lambda: consumer.queue_status()["handled"] == 2)
    assert consumer.queue_status()["sent"] == 3


# ------------------------------------ 4. no blocking wait on a thread running a loop


async def test_a_timed_send_on_the_loop_thread_is_refused_at_once_even_never_started() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder(), maxsize=1)
    consumer.send("fills it")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="use await put"):
        consumer.send("would block", timeout=20)
    assert time.monotonic() - started < 10  # refused at once: the bug blocked the loop 20 s
    assert consumer.take_undelivered() == ["fills it"]
    with pytest.raises(RuntimeError, match="use await put"):
        consumer.send("room or not", timeout=20)  # refused whatever the queue holds
    assert consumer.queue_status()["sent"] == 1


async def test_a_timed_send_on_an_unbounded_queue_never_blocks_and_is_accepted() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder())
    consumer.send("fine", timeout=5)  # an unbounded queue never makes anybody wait
    assert consumer.take_undelivered() == ["fine"]


# --------------------------------------------- 5. a send wakes a live reader


class Readers(fluid.QueueConsumer[object]):
    """A consumer whose messages are read by tasks the test starts."""

    async def run(self) -> None:
        while self.is_running():
            await self.sleep(60)


async def test_a_send_on_the_loop_skips_a_reader_that_was_just_cancelled() -> None:
    async with Readers() as consumer:
        first = asyncio.create_task(consumer.get_message(timeout=None))
        second = asyncio.create_task(consumer.get_message(timeout=None))
        await wait_until(lambda: readers(consumer) == 2)
        first.cancel()  # its waiter is cancelled; the task has not resumed yet
        consumer.send("m")  # must wake the live reader, not the cancelled one
        async with asyncio.timeout(2):
            assert await second == "m"
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_a_send_from_a_thread_skips_a_reader_that_was_just_cancelled() -> None:
    async with Readers() as consumer:
        first = asyncio.create_task(consumer.get_message(timeout=None))
        second = asyncio.create_task(consumer.get_message(timeout=None))
        await wait_until(lambda: readers(consumer) == 2)
        first.cancel()
        await asyncio.to_thread(consumer.send, "m")
        async with asyncio.timeout(2):
            assert await second == "m"
        with pytest.raises(asyncio.CancelledError):
            await first


# ------------------------------------------------------------- timed waits


@pytest.mark.parametrize("timeout", [0.05, 0.3])
async def test_a_thread_send_waits_its_whole_timeout_before_queue_full(timeout: float) -> None:
    consumer, gate = await full_consumer(maxsize=1)
    measured: list[float] = []
    errors: list[BaseException] = []

    def from_thread() -> None:
        started = time.monotonic()
        try:
            consumer.send("impatient", timeout=timeout)
        except fluid.QueueFull as exc:
            errors.append(exc)
        measured.append(time.monotonic() - started)

    await join([start_thread(from_thread)])
    assert len(errors) == 1
    assert type(errors[0]) is fluid.QueueFull
    assert timeout - EPSILON <= measured[0] <= timeout + SLACK
    gate.release.set()
    await consumer.shutdown()
    assert "impatient" not in gate.done
    assert consumer.queue_status()["sent"] == 2


async def test_a_thread_send_admitted_before_its_timeout_returns_early() -> None:
    consumer, gate = await full_consumer(maxsize=1)
    measured: list[float] = []

    def from_thread() -> None:
        started = time.monotonic()
        consumer.send("patient", timeout=30)
        measured.append(time.monotonic() - started)

    thread = start_thread(from_thread)
    await wait_until(lambda: waiting(consumer) == 1)
    gate.release.set()
    await join([thread], timeout=10)
    assert measured[0] < 10  # admitted when room was made, not at the timeout
    await consumer.shutdown()
    assert gate.done == ["held", 0, "patient"]


async def test_a_put_under_a_deadline_waits_the_deadline_and_sends_nothing() -> None:
    consumer, gate = await full_consumer(maxsize=1)
    deadline = 0.1
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(deadline):
            await consumer.put("late")
    assert deadline - EPSILON <= time.monotonic() - started <= deadline + SLACK
    assert waiting(consumer) == 0
    gate.release.set()
    await consumer.shutdown()
    assert gate.done == ["held", 0]


async def test_a_huge_finite_timeout_is_a_wait_not_an_overflow() -> None:
    consumer, gate = await full_consumer(maxsize=1)
    errors: list[BaseException] = []
    thread = start_thread(lambda: _catch(errors, lambda: consumer.send("x", timeout=1e12)))
    await wait_until(lambda: waiting(consumer) == 1)
    gate.release.set()
    await join([thread], timeout=10)
    assert errors == []
    await consumer.shutdown()


# -------------------------------------------- cancellation of put() at every await


@pytest.mark.parametrize("phase", ["before it ran", "in line", "woken", "appended"])
async def test_a_put_cancelled_at_each_await_sends_once_or_nothing(phase: str) -> None:
    consumer = fluid.QueueConsumerWorker(Recorder(), maxsize=1)  # never started: the
    consumer.send("first")  # test makes room itself, with take_undelivered()
    put = asyncio.create_task(consumer.put("second"))
    behind = asyncio.create_task(consumer.put("third"))
    if phase != "before it ran":
        await wait_until(lambda: waiting(consumer) == 2)
    if phase in ("woken", "appended"):
        assert consumer.take_undelivered() == ["first"]
        assert expecting(consumer)  # "second" has room, has not resumed
    if phase == "appended":
        await wait_until(lambda: consumer.queue_size() == 1)
    put.cancel()
    try:
        await put
        second_sent = True
    except asyncio.CancelledError:
        second_sent = False
    assert second_sent is (phase == "appended")
    taken = consumer.take_undelivered()  # room for "third"
    async with asyncio.timeout(5):
        await behind  # nobody is stranded behind a cancelled put
    taken += consumer.take_undelivered()
    expected = {
        "before it ran": ["first", "third"],
        "in line": ["first", "third"],
        "woken": ["third"],
        "appended": ["second", "third"],
    }[phase]
    assert taken == expected
    books = consumer.queue_status()
    assert books["sent"] == balance(books) == 2 + second_sent
    assert waiting(consumer) == 0


async def test_a_cancelled_put_never_strands_the_producers_behind_it() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder(), maxsize=1)
    consumer.send(0)
    puts = [asyncio.create_task(consumer.put(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert consumer.take_undelivered() == [0]  # 1 is woken...
    puts[0].cancel()  # ...and cancelled before it resumes
    puts[2].cancel()  # 3 is cancelled while it waits in line
    taken: list[object] = []
    async with asyncio.timeout(5):
        while len(taken) < 3:
            await asyncio.sleep(0)
            taken += consumer.take_undelivered()
    assert taken == [2, 4, 5]
    for index in (0, 2):
        with pytest.raises(asyncio.CancelledError):
            await puts[index]
    await asyncio.gather(puts[1], puts[3], puts[4])


# ------------------------------------------------------- the channel on its own


class Owner:
    worker_name = "owner"


def test_an_unbounded_channel_keeps_order_and_books() -> None:
    channel: Channel[int] = Channel(Owner())
    for n in range(5):
        channel.send(n)
    assert [channel.take(), channel.take()] == [0, 1]
    channel.put_back(1)
    assert channel.take_all() == [1, 2, 3, 4]
    assert channel.take() is EMPTY
    assert (channel.sent, channel.started, channel.taken, len(channel)) == (5, 1, 4, 0)


def test_a_bounded_channel_refuses_what_does_not_fit_without_waiting() -> None:
    channel: Channel[int] = Channel(Owner(), maxsize=2)
    channel.send(1)
    channel.send(2)
    with pytest.raises(fluid.QueueFull, match=r"queue of worker 'owner' is full \(2 messages\)"):
        channel.send(3)
    assert channel.sent == 2


def test_a_priority_channel_takes_the_lowest_first_and_puts_back_in_front() -> None:
    channel: Channel[tuple[int, str]] = Channel(Owner(), priority=lambda m: m[0])
    for message in [(2, "a"), (1, "b"), (1, "c"), (0, "d")]:
        channel.send(message)
    first = channel.take()
    assert first == (0, "d")
    assert channel.take() == (1, "b")
    channel.put_back((1, "b"))
    assert channel.take_all() == [(1, "b"), (1, "c"), (2, "a")]


async def test_a_closed_channel_accepts_what_fits_and_refuses_waiting() -> None:
    channel: Channel[int] = Channel(Owner(), maxsize=1)
    channel.open(asyncio.get_running_loop())
    assert channel.is_open
    assert channel.close() == 0
    assert not channel.is_open
    channel.send(1)  # fits
    with pytest.raises(fluid.QueueClosed, match="'owner' is full"):
        await channel.put(2)
    with pytest.raises(fluid.QueueFull):
        channel.send(2)
    channel.open(asyncio.get_running_loop())
    waiting = asyncio.create_task(channel.put(2))
    await wait_until(lambda: channel.waiting == 1)
    assert channel.take() == 1
    async with asyncio.timeout(2):
        await waiting
    assert channel.take_all() == [2]


async def test_closing_with_a_coroutine_on_its_way_lets_it_append_and_refuses_the_rest() -> None:
    channel: Channel[str] = Channel(Owner(), maxsize=1)
    channel.open(asyncio.get_running_loop())
    channel.send("full")
    on_its_way = asyncio.create_task(channel.put("on its way"))
    behind = asyncio.create_task(channel.put("behind"))
    await wait_until(lambda: channel.waiting == 2)
    assert channel.take() == "full"  # admits "on its way": woken, not resumed
    assert channel.expecting
    assert channel.close() == 0
    async with asyncio.timeout(2):
        await on_its_way  # it fits: accepted, kept for the next run
        with pytest.raises(fluid.QueueClosed):
            await behind  # it would have to wait for a consumer that is gone
    assert channel.take_all() == ["on its way"]
    assert channel.waiting == 0


async def test_a_waiting_producer_is_admitted_whoever_makes_room() -> None:
    channel: Channel[str] = Channel(Owner(), maxsize=1)
    channel.open(asyncio.get_running_loop())
    channel.send("a")
    errors: list[BaseException] = []
    thread = start_thread(lambda: _catch(errors, lambda: channel.send("b", timeout=30)))
    await wait_until(lambda: channel.waiting == 1)
    assert channel.take() == "a"  # the take admits the thread: its message is in at once
    assert len(channel) == 1
    await join([thread])
    assert errors == []
    assert channel.take_all() == ["b"]


class YieldingDeque(deque[Any]):
    """A deque that lets another thread run whenever its length is read.

    It widens the windows between "is there room?" and what a producer or the
    consumer does next, so that a race between them happens at once.
    """

    def __len__(self) -> int:
        length = super().__len__()
        time.sleep(0)  # the length read may be stale by the time the caller uses it
        return length


@pytest.mark.parametrize("maxsize", [1, 2])
async def test_a_producer_lining_up_as_room_is_made_is_admitted(maxsize: int) -> None:
    """The one producer checks for room, the taker makes room, then the producer lines up."""
    count = 1500
    channel: Channel[int] = Channel(Owner(), maxsize=maxsize)
    channel._buffer = YieldingDeque()
    channel._append = channel._buffer.append
    taken: list[int] = []
    stop = threading.Event()

    def produce() -> None:
        with contextlib.suppress(fluid.QueueClosed):  # closed: the test failed
            for n in range(count):
                channel.send(n, timeout=math.inf)

    def take() -> None:
        while len(taken) < count and not stop.is_set():
            message = channel.take()
            if message is not EMPTY:
                taken.append(message)

    threads = [start_thread(produce), start_thread(take)]
    try:
        progress, since = -1, time.monotonic()
        while any(t.is_alive() for t in threads):
            if len(taken) != progress:
                progress, since = len(taken), time.monotonic()
            assert time.monotonic() - since < 5, (
                f"stalled after {progress} messages: {len(channel)} queued, "
                f"{channel.waiting} waiting for room"
            )
            await asyncio.sleep(0.001)
    finally:
        stop.set()
        channel.close()  # wakes a producer left in line, if the test failed
        await join(threads)
    assert taken == list(range(count))


def _catch(errors: list[BaseException], call: Callable[[], object]) -> None:
    try:
        call()
    except BaseException as exc:
        errors.append(exc)
