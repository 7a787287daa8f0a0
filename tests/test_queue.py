"""Queue consumers: contract items 8, 10 and 11 of DESIGN.md."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

import fluid
from fluid import WorkerState

from .helpers import Recorder, wait_until


class Gate:
    """A handler that blocks each message until released, to hold messages in flight."""

    def __init__(self) -> None:
        self.entered: list[object] = []
        self.release = asyncio.Event()

    async def __call__(self, message: object) -> None:
        self.entered.append(message)
        await self.release.wait()


# ------------------------------------------------------------------ 8. send


async def test_send_from_the_loop_wakes_a_waiting_consumer() -> None:
    recorder = Recorder()
    async with fluid.QueueConsumerWorker(recorder) as consumer:
        await asyncio.sleep(0)  # the consumer is now waiting
        consumer.send("a")
        await recorder.wait_for(1)
    assert recorder.messages == ["a"]


async def test_send_from_a_thread_wakes_a_waiting_consumer_at_once() -> None:
    recorder = Recorder()
    async with fluid.QueueConsumerWorker(recorder) as consumer:
        await asyncio.sleep(0)
        thread = threading.Thread(target=consumer.send, args=("from thread",))
        thread.start()
        await recorder.wait_for(1, timeout=1)  # nothing polls: only the wake-up delivers it
        thread.join()
    assert recorder.messages == ["from thread"]


async def test_sends_from_many_threads_all_arrive_in_order_per_thread() -> None:
    recorder = Recorder()
    per_thread = 2000

    def produce(consumer: fluid.QueueConsumerWorker[object], tag: int) -> None:
        for i in range(per_thread):
            consumer.send((tag, i))

    async with fluid.QueueConsumerWorker(recorder) as consumer:
        threads = [threading.Thread(target=produce, args=(consumer, t)) for t in range(4)]
        for thread in threads:
            thread.start()
        await recorder.wait_for(4 * per_thread, timeout=5)
        for thread in threads:
            thread.join()
    for tag in range(4):
        pairs = [m for m in recorder.messages if isinstance(m, tuple)]
        seen = [i for t, i in pairs if t == tag]
        assert seen == list(range(per_thread))


async def test_sent_read_from_threads_never_goes_back_and_ends_exact() -> None:
    # ``sent`` is a count of accepted messages, readable from any thread: read
    # while threads send and the loop takes (threads switching as often as the
    # interpreter allows), it only grows, and it ends at the number sent.
    senders, per_sender = 3, 2000
    done = threading.Event()
    backwards: list[tuple[int, int]] = []

    async def handle(message: object) -> None:
        pass

    def read(consumer: fluid.QueueConsumerWorker[object]) -> None:
        last = 0
        while not done.is_set():
            now = consumer.sent
            if now < last:
                backwards.append((last, now))
            last = now

    def send(consumer: fluid.QueueConsumerWorker[object]) -> None:
        for n in range(per_sender):
            consumer.send(n)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        async with fluid.QueueConsumerWorker(handle) as consumer:
            readers = [threading.Thread(target=read, args=(consumer,)) for _ in range(2)]
            writers = [threading.Thread(target=send, args=(consumer,)) for _ in range(senders)]
            for thread in readers + writers:
                thread.start()
            try:
                await wait_until(
                    lambda: consumer.queue_status()["handled"] == senders * per_sender, 20
                )
            finally:
                done.set()
                for thread in readers + writers:
                    await asyncio.to_thread(thread.join)
    finally:
        sys.setswitchinterval(old)
    assert not backwards, f"sent went back: {backwards[:5]}"
    assert consumer.sent == consumer.queue_status()["sent"] == senders * per_sender


def test_sent_read_by_many_threads_at_once_stays_exact() -> None:
    consumer = fluid.QueueConsumerWorker(Recorder())
    for n in range(3):
        consumer.send(n)
    wrong: list[int] = []

    def read() -> None:
        for _ in range(3000):
            if (sent := consumer.sent) != 3:
                wrong.append(sent)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert not wrong, f"sent read as {sorted(set(wrong))}"
    assert consumer.sent == 3


async def test_messages_sent_before_startup_are_handled_after_it() -> None:
    recorder = Recorder()
    consumer = fluid.QueueConsumerWorker(recorder)
    consumer.send(1)
    consumer.send(2)
    assert consumer.queue_size() == 2
    async with consumer:
        await recorder.wait_for(2)
    assert recorder.messages == [1, 2]


async def test_none_is_a_message_like_any_other() -> None:
    recorder = Recorder()
    async with fluid.QueueConsumerWorker(recorder) as consumer:
        consumer.send(None)
        await recorder.wait_for(1)
    assert recorder.messages == [None]


# ------------------------------------------------------------- 10. drain


async def test_graceful_stop_drains_the_queue() -> None:
    recorder = Recorder()
    consumer = fluid.QueueConsumerWorker(recorder)
    async with consumer:
        for i in range(100):
            consumer.send(i)
        consumer.gracefully_stop()
        consumer.send(100)  # still accepted while stopping: it is drained too
    assert recorder.messages == list(range(101))
    assert consumer.queue_size() == 0


async def test_without_drain_queued_messages_are_kept_and_retrievable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, drain=False, name="nodrain")
    await consumer.startup()
    for i in range(5):
        consumer.send(i)
    await wait_until(lambda: gate.entered == [0])
    consumer.gracefully_stop()
    gate.release.set()
    await consumer.wait_for_shutdown()
    assert consumer.queue_size() == 4
    assert "worker 'nodrain' stopped with 4 undelivered messages" in caplog.text
    assert consumer.take_undelivered() == [1, 2, 3, 4]
    assert consumer.queue_size() == 0


async def test_a_forced_stop_puts_the_interrupted_message_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()  # never released: the handler ignores the stop
    consumer = fluid.QueueConsumerWorker(gate, stopping_grace_period=0.05, name="stuck")
    await consumer.startup()
    for i in range(3):
        consumer.send(i)
    await wait_until(lambda: gate.entered == [0])
    status = await consumer.status()
    assert status["queue"] == {
        "sent": 3,
        "size": 2,
        "capacity": None,
        "handled": 0,
        "failed": 0,
        "in_flight": 1,
        "taken": 0,
        "undelivered": 0,
    }
    await consumer.shutdown()
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    assert "3 undelivered messages" in caplog.text
    assert (await consumer.status())["queue"]["undelivered"] == 3
    assert consumer.take_undelivered() == [0, 1, 2]
    books = consumer.queue_status()
    assert (books["sent"], books["taken"], books["size"], books["in_flight"]) == (3, 3, 0, 0)


async def test_a_restarted_consumer_handles_what_was_left() -> None:
    gate = Gate()
    consumer = fluid.QueueConsumerWorker(gate, stopping_grace_period=0.05)
    await consumer.startup()
    consumer.send("x")
    await wait_until(lambda: gate.entered == ["x"])
    await consumer.shutdown()
    gate.release.set()
    async with consumer:
        await wait_until(lambda: consumer.queue_size() == 0)
    assert gate.entered == ["x", "x"]


@pytest.mark.parametrize("drain", [False, True])
async def test_a_stop_requested_during_on_startup_drains_only_if_asked(drain: bool) -> None:
    # The stop comes before the run: opening the queue for the run must not
    # undo it (drain=False used to handle every queued message anyway).
    recorder = Recorder()
    in_startup, go_on = asyncio.Event(), asyncio.Event()

    class SlowStart(fluid.QueueConsumerWorker[int]):
        async def on_startup(self) -> None:
            in_startup.set()
            await go_on.wait()

    consumer = SlowStart(recorder, drain=drain)
    for i in range(5):
        consumer.send(i)
    starting = asyncio.create_task(consumer.startup())
    await in_startup.wait()
    consumer.gracefully_stop()
    go_on.set()
    await starting
    async with asyncio.timeout(10):
        await consumer.wait_for_shutdown()
    assert consumer.worker_state is WorkerState.STOPPED
    if drain:
        assert recorder.messages == [0, 1, 2, 3, 4]
        assert consumer.queue_size() == 0
    else:
        assert recorder.messages == []
        assert consumer.queue_status()["undelivered"] == 5
        assert consumer.take_undelivered() == [0, 1, 2, 3, 4]


# --------------------------------------------------------- 11. on_error


async def test_default_policy_logs_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    handled: list[int] = []

    async def handle(message: int) -> None:
        if message == 13:
            raise ValueError("unlucky")
        handled.append(message)

    consumer = fluid.QueueConsumerWorker(handle, name="c")
    with caplog.at_level(logging.ERROR, logger="fluid"):
        async with consumer:
            for message in (12, 13, 14):
                consumer.send(message)
            await wait_until(lambda: handled == [12, 14])
    assert "worker 'c' failed to handle 13" in caplog.text
    status = await consumer.status()
    assert status["queue"]["handled"] == 2
    assert status["queue"]["failed"] == 1


async def test_stop_policy_ends_the_worker_with_the_error() -> None:
    async def handle(message: int) -> None:
        raise ValueError(f"poison {message}")

    consumer = fluid.QueueConsumerWorker(handle, on_error="stop")
    await consumer.startup()
    consumer.send(1)
    consumer.send(2)
    with pytest.raises(ValueError, match="poison 1"):
        await consumer.wait_for_shutdown()
    assert consumer.take_undelivered() == [2]


@pytest.mark.parametrize("is_async", [False, True])
async def test_callback_policy_gets_the_message_and_the_error(is_async: bool) -> None:
    dead: list[tuple[object, str]] = []

    async def handle(message: int) -> None:
        if message % 2:
            raise ValueError(str(message))

    def sync_dead_letter(message: object, error: Exception) -> None:
        dead.append((message, str(error)))

    async def async_dead_letter(message: object, error: Exception) -> None:
        dead.append((message, str(error)))

    on_error = async_dead_letter if is_async else sync_dead_letter
    consumer = fluid.QueueConsumerWorker(handle, on_error=on_error)
    async with consumer:
        for i in range(5):
            consumer.send(i)
        await wait_until(lambda: len(dead) == 2)
    assert dead == [(1, "1"), (3, "3")]


async def test_an_error_in_the_callback_stops_the_worker() -> None:
    async def handle(message: int) -> None:
        raise ValueError("handler")

    def broken(message: object, error: Exception) -> None:
        raise RuntimeError("dead-letter store down")

    consumer = fluid.QueueConsumerWorker(handle, on_error=broken)
    await consumer.startup()
    consumer.send(1)
    with pytest.raises(RuntimeError, match="dead-letter store down"):
        await consumer.wait_for_shutdown()


def _hangs_on_slow(cancelled: list[str], swallow: int = 0) -> Callable[[str], Awaitable[None]]:
    """A handler failing on "bad" and hung on "slow", swallowing its first ``swallow`` cancels."""

    async def handle(message: str) -> None:
        if message == "bad":
            raise ValueError("poison")
        for _ in range(swallow + 1):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(message)
        raise asyncio.CancelledError

    return handle


async def test_a_concurrent_stop_policy_gives_the_others_the_grace_period_then_cancels_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With one handler the failure ends the worker at once; with two, the
    # other one used to be waited for without limit: the worker stayed
    # STOPPING and its error was never reported.
    cancelled: list[str] = []
    grace = 0.2
    consumer = fluid.QueueConsumerWorker(
        _hangs_on_slow(cancelled),
        name="c",
        concurrency=2,
        on_error="stop",
        stopping_grace_period=grace,
    )
    await consumer.startup()
    consumer.send("slow")
    await wait_until(lambda: consumer.queue_status()["in_flight"] == 1)
    start = time.monotonic()
    consumer.send("bad")
    with pytest.raises(ValueError, match="poison"):
        async with asyncio.timeout(10):
            await consumer.wait_for_shutdown()
    assert time.monotonic() - start >= grace * 0.9  # the slow handler had its grace period
    assert consumer.worker_state is WorkerState.STOPPED  # it failed; nobody forced it
    assert cancelled == ["slow"]
    assert "did not finish within its grace period of 0.2s: cancelling them" in caplog.text
    assert consumer.take_undelivered() == ["slow"]  # put back, as a forced stop does
    books = consumer.queue_status()
    assert (books["sent"], books["failed"], books["taken"], books["in_flight"]) == (2, 1, 1, 0)


async def test_a_concurrent_stop_policy_cancels_again_a_handler_that_swallows_the_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled: list[str] = []
    consumer = fluid.QueueConsumerWorker(
        _hangs_on_slow(cancelled, swallow=1),
        name="c",
        concurrency=2,
        on_error="stop",
        stopping_grace_period=0.05,
    )
    await consumer.startup()
    consumer.send("slow")
    await wait_until(lambda: consumer.queue_status()["in_flight"] == 1)
    consumer.send("bad")
    with pytest.raises(ValueError, match="poison"):
        async with asyncio.timeout(10):
            await consumer.wait_for_shutdown()
    assert cancelled == ["slow", "slow"]
    assert "worker 'c' is still running after cancel" in caplog.text
    assert consumer.take_undelivered() == ["slow"]


async def test_a_supervised_concurrent_consumer_failing_beside_a_hung_handler_is_restarted() -> (
    None
):
    # The reproducer of the review: a bounded consumer in a tree, a producer
    # thread waiting for room. The failure used to leave the consumer
    # STOPPING for good: never restarted, and the producer waiting with it.
    handled: list[str] = []

    async def handle(message: str) -> None:
        if message == "bad":
            raise ValueError("poison")
        if message == "slow" and consumer.restarts == 0:
            await asyncio.Event().wait()  # hung in the first run only
        handled.append(message)

    consumer = fluid.QueueConsumerWorker(
        handle, name="c", maxsize=1, concurrency=2, on_error="stop", stopping_grace_period=0.2
    )
    tree = fluid.Workers(
        consumer, strategy="one_for_one", backoff=fluid.Backoff(initial=0, jitter=0)
    )
    await tree.startup()
    outcome: list[str] = []

    def produce() -> None:
        try:
            consumer.send("y", timeout=math.inf)
            outcome.append("sent")
        except fluid.QueueClosed:
            outcome.append("refused")

    producer = threading.Thread(target=produce)
    try:
        consumer.send("slow")
        await wait_until(lambda: consumer.queue_status()["in_flight"] == 1)
        consumer.send("bad")
        await wait_until(lambda: consumer.queue_status()["failed"] == 1)
        consumer.send("x")  # the queue is full now
        producer.start()
        await wait_until(lambda: consumer.restarts == 1 and len(handled) >= 2)
        assert handled[:2] == ["slow", "x"]  # put back first, then what was queued
        await wait_until(lambda: bool(outcome))
        assert tree.worker_state is WorkerState.RUNNING
    finally:
        await tree.shutdown()
        producer.join(10)


def test_bad_on_error_and_handler_are_rejected() -> None:
    async def handle(message: int) -> None:
        pass

    with pytest.raises(ValueError, match="on_error must be 'log', 'stop' or a callable"):
        fluid.QueueConsumerWorker(handle, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_message must be a coroutine function"):
        fluid.QueueConsumerWorker(print)


# ------------------------------------- handlers returning awaitables (aio-fluid's)


class _ReturnsCoroutine:
    """A sync ``__call__`` that returns a coroutine, as aio-fluid code may pass."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __call__(self, message: object) -> Awaitable[None]:
        return self.recorder(("object", message))


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_handler_returning_an_awaitable_is_awaited(concurrency: int) -> None:
    recorder = Recorder()

    def relay(tag: str, message: object) -> Awaitable[None]:
        return recorder((tag, message))

    handlers: list[Callable[[object], Awaitable[None]]] = [
        lambda m: recorder(("lambda", m)),
        functools.partial(relay, "partial"),
        _ReturnsCoroutine(recorder),
    ]
    for handler in handlers:
        consumer = fluid.QueueConsumerWorker(handler, concurrency=concurrency)
        assert consumer.on_message is handler  # as given, not the wrapper awaiting it
        async with consumer:
            consumer.send(1)
            await recorder.wait_for(len(recorder.messages) + 1)
    assert recorder.messages == [("lambda", 1), ("partial", 1), ("object", 1)]


async def test_a_handler_returning_an_awaitable_gives_its_result_to_on_result() -> None:
    results: list[tuple[object, object]] = []

    async def double(message: int) -> int:
        return message * 2

    consumer = fluid.QueueConsumerWorker[int](
        lambda m: double(m), on_result=lambda m, r: results.append((m, r))
    )
    async with consumer:
        consumer.send(4)
        await wait_until(lambda: results == [(4, 8)])


def _says_none(message: object) -> None:
    pass


async def test_a_handler_returning_no_awaitable_fails_the_message_naming_it() -> None:
    handled: list[object] = []

    def sync_store(message: object):  # type: ignore[no-untyped-def]
        handled.append(message)  # no "-> None": nothing says it returns no awaitable

    with pytest.raises(TypeError, match="or a callable returning an awaitable"):
        fluid.QueueConsumerWorker(_says_none)  # this one says so: refused at once
    consumer = fluid.QueueConsumerWorker(sync_store, on_error="stop")
    assert consumer.worker_name == "sync_store"
    await consumer.startup()
    consumer.send("order")
    with pytest.raises(TypeError) as caught:
        await consumer.wait_for_shutdown()
    assert str(caught.value) == (
        f"on_message {sync_store!r} returned None, not an awaitable: it must be a "
        "coroutine function (async def) or return an awaitable"
    )
    assert handled == ["order"]


async def test_a_forced_stop_puts_back_the_message_of_a_wrapped_handler() -> None:
    """Through the wrapper, a cancelled handler still gives its message back."""
    gate = Gate()
    consumer = fluid.QueueConsumerWorker[str](lambda m: gate(m), stopping_grace_period=0.05)
    await consumer.startup()
    consumer.send("stuck")
    await wait_until(lambda: gate.entered == ["stuck"])
    began = time.monotonic()
    await consumer.shutdown()
    assert 0.05 <= time.monotonic() - began < 10
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    assert consumer.take_undelivered() == ["stuck"]


def test_a_coroutine_function_is_awaited_as_is() -> None:
    """The fast path: an async def handler gets no wrapper, so no cost per message."""

    async def store(message: object) -> None:
        pass

    consumer = fluid.QueueConsumerWorker(store)
    assert consumer.on_message is store
    assert consumer._call is store


# ------------------------------------------------- QueueConsumer for subclasses


class Collector(fluid.QueueConsumer[int]):
    def __init__(self) -> None:
        super().__init__(name="collector")
        self.got: list[int] = []

    async def run(self) -> None:
        async for message in self.messages():
            self.got.append(message)


async def test_messages_iterator_ends_after_stop_and_drain() -> None:
    collector = Collector()
    async with collector:
        collector.send(1)
        collector.send(2)
    assert collector.got == [1, 2]


async def test_get_message_times_out_with_none() -> None:
    collector = Collector()
    assert await collector.get_message(timeout=0.01) is None  # not running: no wait


async def test_get_message_returns_messages_and_none_on_stop() -> None:
    class Manual(fluid.QueueConsumer[str]):
        async def run(self) -> None:
            while self.is_running():
                await self.sleep(60)

    consumer = Manual()
    async with consumer:
        started = time.monotonic()
        assert await consumer.get_message(timeout=0.05) is None
        assert 0.05 - 0.005 <= time.monotonic() - started <= 5  # waited its timeout
        consumer.send("m")
        assert await consumer.get_message() == "m"
        waiting = asyncio.create_task(consumer.get_message(timeout=60))
        await asyncio.sleep(0)
        consumer.gracefully_stop()
        async with asyncio.timeout(1):
            assert await waiting is None


async def test_queue_status_is_json_serialisable() -> None:
    collector = Collector()
    collector.send(5)
    status = await collector.status()
    assert json.loads(json.dumps(status))["queue"] == {
        "sent": 1,
        "size": 1,
        "capacity": None,
        "handled": 0,
        "failed": 0,
        "in_flight": 0,
        "taken": 0,
        "undelivered": 0,
    }


async def test_queue_stats_is_the_earlier_name_of_queue_status() -> None:
    collector = Collector()
    collector.send(5)
    collector.send(6)
    collector.take_undelivered()
    books = collector.queue_status()
    assert (books["sent"], books["taken"]) == (2, 2)
    assert collector.queue_stats() == books == (await collector.status())["queue"]


def test_a_consumer_is_named_after_its_handler_and_suffixed_in_a_tree() -> None:
    async def store_order(message: object) -> None:
        pass

    first = fluid.QueueConsumerWorker(store_order)
    assert first.worker_name == "store_order"
    tree = fluid.Workers(first, fluid.QueueConsumerWorker(store_order))
    assert [c.worker_name for c in tree.children] == ["store_order", "store_order-2"]


async def test_a_concurrent_stop_policy_does_not_wait_for_a_hung_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The awaits of the calls are cancelled after the grace period, but the
    # pool they run in used to be closed by waiting for them: a hung call held
    # the failed worker for ever.
    release = threading.Event()

    def handle(message: str) -> None:
        if message == "bad":
            raise ValueError("poison")
        release.wait(30)

    consumer = fluid.QueueConsumerWorker(
        handle, concurrency=2, on_error="stop", stopping_grace_period=0.1, run_in="thread"
    )
    await consumer.startup()
    try:
        consumer.send("slow")
        await wait_until(lambda: consumer.queue_status()["in_flight"] == 1)
        consumer.send("bad")
        with pytest.raises(ValueError, match="poison"):
            async with asyncio.timeout(10):
                await consumer.wait_for_shutdown()
        assert consumer.worker_state is WorkerState.STOPPED
        assert consumer.take_undelivered() == ["slow"]
    finally:
        release.set()  # the abandoned thread ends its call


async def test_a_concurrent_consumer_ends_with_the_error_that_stopped_it() -> None:
    """Not with what another handler raised as it was cancelled afterwards."""

    async def handle(message: str) -> None:
        if message == "hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise RuntimeError("cleanup after cancel") from None
        await asyncio.sleep(0.01)
        raise ValueError("the real failure")

    consumer = fluid.QueueConsumerWorker(
        handle, concurrency=2, on_error="stop", stopping_grace_period=0.05
    )
    consumer.send("hang")
    consumer.send("fail")
    await consumer.startup()
    with pytest.raises(ValueError, match="the real failure"):
        async with asyncio.timeout(10):
            await consumer.wait_for_shutdown()
