"""Bounded queues (DESIGN item 9), priorities and concurrent handlers."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

import fluid
from fluid import WorkerState

from .helpers import Recorder, wait_until


class Gate:
    """A handler holding every message until released."""

    def __init__(self) -> None:
        self.entered: list[object] = []
        self.done: list[object] = []
        self.release = asyncio.Event()

    async def __call__(self, message: object) -> None:
        self.entered.append(message)
        await self.release.wait()
        self.done.append(message)


async def full_consumer(maxsize: int = 2) -> tuple[fluid.QueueConsumerWorker[object], Gate]:
    """A running consumer holding one message in its handler and ``maxsize`` queued."""
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, maxsize=maxsize, stopping_grace_period=1)
    await consumer.startup()
    consumer.send("held")
    await wait_until(lambda: gate.entered == ["held"])
    for i in range(maxsize):
        consumer.send(i)
    return consumer, gate


# ------------------------------------------------------------- bounded queue


async def test_a_full_queue_makes_an_async_producer_wait() -> None:
    consumer, gate = await full_consumer()
    put = asyncio.create_task(consumer.put("late"))
    await asyncio.sleep(0.01)
    assert not put.done()  # backpressure: waiting for room
    assert consumer.queue_size() == 2
    gate.release.set()
    async with asyncio.timeout(2):
        await put
    await consumer.shutdown()
    assert gate.done == ["held", 0, 1, "late"]


async def test_a_full_queue_rejects_send_with_queue_full() -> None:
    consumer, gate = await full_consumer()
    with pytest.raises(fluid.QueueFull, match=r"queue of worker .* is full \(2 messages\)"):
        consumer.send("one too many")
    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            consumer.send("from thread")
        except fluid.QueueFull as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    gate.release.set()
    await consumer.shutdown()
    assert gate.done == ["held", 0, 1]  # the rejected ones were never queued


async def test_a_thread_can_wait_for_room_with_a_timeout() -> None:
    consumer, gate = await full_consumer()
    sent = threading.Event()

    def from_thread() -> None:
        consumer.send("patient", timeout=5)
        sent.set()

    thread = threading.Thread(target=from_thread)
    thread.start()
    await asyncio.sleep(0.01)
    assert not sent.is_set()
    gate.release.set()
    await wait_until(sent.is_set)
    thread.join()
    await consumer.shutdown()
    assert gate.done == ["held", 0, 1, "patient"]


async def test_a_thread_that_times_out_did_not_send() -> None:
    consumer, gate = await full_consumer()
    errors: list[BaseException] = []
    waited: list[float] = []

    def from_thread() -> None:
        started = time.monotonic()
        try:
            consumer.send("impatient", timeout=0.02)
        except fluid.QueueFull as exc:
            errors.append(exc)
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=from_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert "stayed full for 0.02s" in str(errors[0])
    assert 0.02 - 0.005 <= waited[0] <= 5  # timed by the clock, not by the message
    gate.release.set()
    await consumer.shutdown()
    assert "impatient" not in gate.done


async def test_blocking_send_on_the_loop_thread_is_refused() -> None:
    consumer, gate = await full_consumer()
    with pytest.raises(RuntimeError, match="use await put"):
        consumer.send("x", timeout=1)
    gate.release.set()
    await consumer.shutdown()


async def test_waiting_producers_are_admitted_in_order_and_never_overtaken() -> None:
    consumer, gate = await full_consumer(maxsize=1)
    puts = [asyncio.create_task(consumer.put(f"p{i}")) for i in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(fluid.QueueFull):
        consumer.send("cheat")  # producers are waiting: no room for a newcomer
    gate.release.set()
    async with asyncio.timeout(2):
        await asyncio.gather(*puts)
    await consumer.shutdown()
    assert gate.done == ["held", 0, "p0", "p1", "p2"]


async def test_a_cancelled_put_sends_nothing() -> None:
    consumer, gate = await full_consumer(maxsize=1)
    put = asyncio.create_task(consumer.put("cancelled"))
    await asyncio.sleep(0)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    gate.release.set()
    await consumer.shutdown()
    assert gate.done == ["held", 0]


async def test_a_put_cancelled_once_given_room_sends_nothing_and_passes_it_on() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder(), maxsize=1)
    consumer.send(0)
    first = asyncio.create_task(consumer.put("first"))
    second = asyncio.create_task(consumer.put("second"))
    await asyncio.sleep(0)
    assert consumer.take_undelivered() == [0]  # room for one: "first" is woken...
    first.cancel()  # ...and cancelled before it resumes (a timeout expiring)
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(2):
        await second
    assert consumer.take_undelivered() == ["second"]
    assert consumer.queue_status()["sent"] == 2


async def test_taking_undelivered_messages_makes_room_for_waiting_producers() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder(), maxsize=2)
    consumer.send(1)
    consumer.send(2)
    put = asyncio.create_task(consumer.put(3))
    await asyncio.sleep(0)
    assert consumer.take_undelivered() == [1, 2]
    await put
    assert consumer.take_undelivered() == [3]


async def test_unbounded_put_never_waits_and_capacity_is_reported() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder())
    for i in range(1000):
        await consumer.put(i)
    assert consumer.queue_size() == 1000
    assert (await consumer.status())["queue"]["capacity"] is None
    bounded = fluid.QueueConsumerWorker(Recorder(), maxsize=7)
    assert (await bounded.status())["queue"]["capacity"] == 7
    assert bounded.maxsize == 7
    consumer.take_undelivered()


async def test_eight_threads_against_a_bounded_queue_lose_nothing() -> None:
    recorder = Recorder()
    consumer = fluid.QueueConsumerWorker(recorder, maxsize=10)
    per_thread = 500

    def produce(tag: int) -> None:
        for i in range(per_thread):
            consumer.send((tag, i), timeout=math.inf)

    async with consumer:
        threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        await recorder.wait_for(8 * per_thread, timeout=10)
        for thread in threads:
            thread.join()
    assert sorted(recorder.messages) == sorted((t, i) for t in range(8) for i in range(per_thread))  # type: ignore[type-var]


# ----------------------------------------------------------------- priority


async def test_priority_queue_takes_lowest_first_and_fifo_among_equals() -> None:
    recorder = Recorder()

    def first(message: tuple[int, str]) -> int:
        return message[0]

    consumer = fluid.QueueConsumerWorker[tuple[int, str]](recorder, priority=first)
    for message in [(2, "a"), (1, "b"), (2, "c"), (0, "d"), (1, "e")]:
        consumer.send(message)
    async with consumer:
        await recorder.wait_for(5)
    assert recorder.messages == [(0, "d"), (1, "b"), (1, "e"), (2, "a"), (2, "c")]


async def test_a_forced_stop_puts_a_priority_message_back_in_front() -> None:
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, priority=len, stopping_grace_period=0.05)
    await consumer.startup()
    consumer.send("aa")
    await wait_until(lambda: gate.entered == ["aa"])
    for message in ("bb", "c", "dd"):
        consumer.send(message)
    await consumer.shutdown()
    assert consumer.take_undelivered() == ["c", "aa", "bb", "dd"]


def test_priority_must_be_callable() -> None:
    with pytest.raises(TypeError, match="priority must be a function"):
        fluid.QueueConsumerWorker(Recorder(), priority=3)  # type: ignore[arg-type]


# -------------------------------------------------------------- concurrency


async def test_concurrency_keeps_n_messages_in_flight() -> None:
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, concurrency=3)
    async with consumer:
        for i in range(5):
            consumer.send(i)
        await wait_until(lambda: len(gate.entered) == 3)
        status = await consumer.status()
        assert status["queue"]["in_flight"] == 3
        assert status["queue"]["size"] == 2
        gate.release.set()
    assert sorted(gate.done) == [0, 1, 2, 3, 4]  # type: ignore[type-var]


async def test_graceful_stop_with_n_in_flight_loses_nothing() -> None:
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, concurrency=4, stopping_grace_period=2)
    await consumer.startup()
    for i in range(20):
        consumer.send(i)
    await wait_until(lambda: len(gate.entered) == 4)
    stopping = asyncio.create_task(consumer.shutdown())
    await asyncio.sleep(0.01)
    assert consumer.is_stopping()
    gate.release.set()
    await stopping
    assert sorted(gate.done) == list(range(20))  # type: ignore[type-var]
    assert consumer.worker_state is WorkerState.STOPPED


async def test_a_forced_stop_puts_every_in_flight_message_back() -> None:
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, concurrency=3, stopping_grace_period=0.05)
    await consumer.startup()
    for i in range(5):
        consumer.send(i)
    await wait_until(lambda: len(gate.entered) == 3)
    await consumer.shutdown()
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    assert sorted(consumer.take_undelivered()) == [0, 1, 2, 3, 4]  # type: ignore[type-var]


async def test_stop_policy_with_concurrency_lets_the_others_finish_then_fails() -> None:
    finished: list[int] = []
    release = asyncio.Event()

    async def handle(message: int) -> None:
        if message == 0:
            raise ValueError("poison")
        await release.wait()
        finished.append(message)

    consumer = fluid.QueueConsumerWorker(handle, concurrency=3, on_error="stop")
    await consumer.startup()
    for i in (1, 2, 0, 3, 4):
        consumer.send(i)
    await wait_until(consumer.is_stopping)
    release.set()
    with pytest.raises(ValueError, match="poison"):
        async with asyncio.timeout(2):
            await consumer.wait_for_shutdown()
    assert sorted(finished) == [1, 2]  # in flight when it failed: finished
    assert consumer.take_undelivered() == [3, 4]  # never taken: still queued


async def test_a_failure_is_kept_when_the_others_in_flight_are_forced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handle(message: int) -> None:
        if message == 0:
            raise ValueError("poison")
        await asyncio.Event().wait()  # never ends: the stop has to force it

    consumer = fluid.QueueConsumerWorker(
        handle, concurrency=2, on_error="stop", stopping_grace_period=30
    )
    await consumer.startup()
    consumer.send(1)
    consumer.send(0)
    await wait_until(consumer.is_stopping)
    consumer.force_stop()  # within the grace period the failure gives the other handler
    with pytest.raises(ValueError, match="poison"):
        async with asyncio.timeout(10):  # not the 30 s grace period
            await consumer.wait_for_shutdown()
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    assert "worker 'handle' failed" in caplog.text
    assert consumer.take_undelivered() == [1]  # forced: put back


async def test_an_async_consumer_can_dispatch_concurrently() -> None:
    gate = Gate()
    dispatcher = fluid.AsyncDispatcher[object](message_type=lambda m: "m")
    dispatcher.register_handler("m", gate)
    consumer = fluid.AsyncConsumer(dispatcher, concurrency=2)
    async with consumer:
        for i in range(4):
            consumer.send(i)
        await wait_until(lambda: len(gate.entered) == 2)
        gate.release.set()
    assert sorted(gate.done) == [0, 1, 2, 3]  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"maxsize": -1}, ValueError, "maxsize must be >= 0"),
        ({"maxsize": 1.5}, TypeError, "maxsize must be an integer"),
        ({"concurrency": 0}, ValueError, "concurrency must be >= 1"),
        ({"concurrency": True}, TypeError, "concurrency must be an integer"),
    ],
)
def test_bad_sizes_are_rejected(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        fluid.QueueConsumerWorker(Recorder(), **kwargs)  # type: ignore[arg-type]
