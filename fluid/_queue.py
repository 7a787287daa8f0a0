"""QueueConsumer and QueueConsumerWorker: a worker fed by a thread-safe queue.

The queue is a ``collections.deque``. Appending and popping a deque are atomic,
so ``send`` from any thread is just an append; only when the consumer is
asleep waiting for a message does a sender have to wake it. From the loop's
own thread that is ``future.set_result``; from another thread it is one
``loop.call_soon_threadsafe``, and a flag makes a burst of sends from threads
cost one wake-up, not one per message.

The lost-wake-up race is closed by ordering: the consumer publishes its
waiter *before* it checks the queue a last time, and a sender appends *before*
it looks for a waiter. Whatever the interleaving, either the consumer sees the
message or the sender sees the waiter.

A bounded queue (``maxsize``) takes a lock around "is there room? append":
the one place two senders could race. Producers that wait for room (``await
put()`` on the loop, ``send(timeout=...)`` in a thread) queue up in one FIFO
of waiting puts; the consumer admits them, in order, as it takes messages, so
a waiting producer is never overtaken and a timed-out one is never half-sent.

On a graceful stop the consumer drains what is queued (``drain=True``), within
the grace period. A message whose handler is cancelled by a forced stop goes
back to the front of the queue: whatever is left is counted, logged and can be
taken with [`take_undelivered`][fluid.QueueConsumer.take_undelivered].

``concurrency=N`` runs N copies of the consuming loop over the one queue, each
with at most one message in flight, so that slow I/O handlers overlap.

The books always balance: ``sent = handled + failed + taken + size +
in_flight`` (see [`queue_stats`][fluid.QueueConsumer.queue_stats]). ``sent``
is counted without a lock by an ``itertools.count``, whose ``next()`` is a
single C call and so atomic from any thread; its ``repr`` gives the count.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
import pickle
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar

from ._buffer import PriorityBuffer, WaitingPut
from ._errors import QueueFull
from ._policy import OnError, check_on_error, handle_error
from ._pools import ProcessPool, ThreadPool
from ._state import WorkerState
from ._status import QueueStatus, WorkerStatus
from ._validate import check_async_callable, check_count, function_name, is_async_callable
from ._worker import STOPPING_GRACE_PERIOD, Worker, _release

__all__ = ["MessageProducer", "QueueConsumer", "QueueConsumerWorker", "RunIn"]

logger = logging.getLogger("fluid")

MessageT = TypeVar("MessageT")
MessageT_contra = TypeVar("MessageT_contra", contravariant=True)

_RUNNING = WorkerState.RUNNING

RunIn: TypeAlias = Literal["loop", "thread", "process"]
"""Where a consumer's handler runs: on the event loop, in threads, in processes."""


class MessageProducer(Protocol[MessageT_contra]):
    """Anything messages can be sent to.

    Example:
        ```python
        def publish(producer: fluid.MessageProducer[str]) -> None:
            producer.send("hello")
        ```
    """

    def send(self, message: MessageT_contra) -> None:
        """Deliver ``message``; safe from any thread."""
        ...


class QueueConsumer(Worker, Generic[MessageT]):
    """A worker backed by a queue of messages; subclasses implement ``run``.

    [`send`][fluid.QueueConsumer.send] is safe from any thread and wakes a
    waiting consumer at once. Inside ``run``, iterate over
    [`messages`][fluid.QueueConsumer.messages] (which ends once a stop was
    requested and the queue is drained) or call
    [`get_message`][fluid.QueueConsumer.get_message].

    Args:
        name: the worker's name; by default derived from the class name.
        stopping_grace_period: seconds given to a graceful stop (and drain).
        on_error: the error policy of messages handled through the consumer's
            own loop (see [`QueueConsumerWorker`][fluid.QueueConsumerWorker]).
        drain: on a graceful stop, handle what is queued before ending.
        maxsize: the most messages the queue holds; 0 for no limit. A full
            queue makes ``await put()`` wait and ``send()`` raise
            [`QueueFull`][fluid.QueueFull].
        priority: a function giving each message's priority: lowest first,
            first in first out among equals. None (default) keeps plain FIFO.
        concurrency: how many messages the consumer's own loop handles at
            once (QueueConsumerWorker, AsyncConsumer).

    Raises:
        ValueError: ``on_error``, ``maxsize`` or ``concurrency`` is invalid.
        TypeError: ``priority`` is not callable.

    Example:
        ```python
        class Printer(fluid.QueueConsumer[str]):
            async def run(self) -> None:
                async for message in self.messages():
                    print(message)

        async with Printer() as printer:
            printer.send("hello")
        ```
    """

    __slots__ = (
        "_abort",
        "_concurrency",
        "_count_sent",
        "_drain",
        "_failed",
        "_getters",
        "_handled",
        "_lock",
        "_maxsize",
        "_messages",
        "_on_error",
        "_puts",
        "_sent",
        "_started",
        "_taken",
        "_undelivered",
        "_wake_pending",
    )

    def __init__(
        self,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        *,
        on_error: OnError[MessageT] = "log",
        drain: bool = True,
        maxsize: int = 0,
        priority: Callable[[MessageT], Any] | None = None,
        concurrency: int = 1,
    ) -> None:
        super().__init__(name, stopping_grace_period)
        check_on_error(on_error)
        self._on_error = on_error
        self._drain = bool(drain)
        self._maxsize = check_count("maxsize", maxsize, 0)
        self._concurrency = check_count("concurrency", concurrency, 1)
        if priority is not None and not callable(priority):
            raise TypeError(f"priority must be a function of the message, got {priority!r}")
        self._messages: deque[MessageT] | PriorityBuffer[MessageT] = (
            deque() if priority is None else PriorityBuffer(priority)
        )
        self._lock = threading.Lock() if self._maxsize else None
        self._puts: deque[WaitingPut[MessageT]] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._wake_pending = False
        self._abort = False
        # in flight = started - handled - failed: one counter less on the hot path
        self._started = self._handled = self._failed = self._undelivered = self._taken = 0
        # next() of an itertools.count is one C call: atomic, from any thread
        self._sent = itertools.count()
        self._count_sent = self._sent.__next__

    # ----------------------------------------------------------- producing

    @property
    def maxsize(self) -> int:
        """The most messages the queue holds (0: no limit)."""
        return self._maxsize

    def send(self, message: MessageT, *, timeout: float = 0.0) -> None:
        """Queue ``message``; safe from any thread.

        Messages sent before ``startup()`` or while the worker is stopped stay
        queued for its next run.

        Args:
            message: the message.
            timeout: for a bounded queue that is full, how many seconds a
                thread other than the loop's may block waiting for room
                (``math.inf``: as long as it takes). 0, the default, never
                blocks.

        Raises:
            QueueFull: the queue is full (after ``timeout``, if given); the
                message was not queued.
            RuntimeError: ``timeout`` was given on the event loop's own thread,
                where blocking would freeze the loop: use ``await put()``.
        """
        lock = self._lock
        if lock is None:
            self._messages.append(message)
            self._count_sent()
        else:
            with lock:
                room = len(self._messages) < self._maxsize and not self._puts
                if room:
                    self._messages.append(message)
                    self._count_sent()
            if not room:
                self._send_when_room(message, timeout)
                return
        if self._getters:
            self._wake_getters_from_any_thread()

    async def put(self, message: MessageT) -> None:
        """Queue ``message``, waiting for room if the queue is full.

        Use it on the event loop to apply backpressure to a producer. Waiting
        producers are admitted in the order they came.

        If the call is cancelled, the message is not queued: a producer given
        room appends its message only when it resumes, so a cancellation that
        arrives in between (an ``asyncio.timeout`` expiring) passes the room on
        to the next producer.
        """
        lock = self._lock
        if lock is None:
            self.send(message)
            return
        with lock:
            if len(self._messages) < self._maxsize and not self._puts:
                self._messages.append(message)
                self._count_sent()
                put = None
            else:
                put = WaitingPut(message, asyncio.get_running_loop().create_future())
                self._puts.append(put)
        if put is None:
            if self._getters:
                self._wake_getters_from_any_thread()
            return
        assert put.future is not None
        try:
            await put.future
        except asyncio.CancelledError:
            with lock:
                self._puts.remove(put)
            self._admit_puts()  # if it was woken, the room passes to the next
            raise
        with lock:  # woken: it is the head of the waiting producers
            self._puts.remove(put)
            self._messages.append(message)
            self._count_sent()
        self._admit_puts()
        if self._getters:
            self._wake_getters_from_any_thread()

    def queue_size(self) -> int:
        """How many messages are queued."""
        return len(self._messages)

    def take_undelivered(self) -> list[MessageT]:
        """Remove and return what is queued, in the order it would be handled.

        Use it after a stop to retrieve the messages a forced stop left behind.
        """
        messages = self._messages
        taken = [messages.popleft() for _ in range(len(messages))]
        self._taken += len(taken)
        self._admit_puts()
        return taken

    # ----------------------------------------------------------- consuming

    async def get_message(self, timeout: float | None = 0.5) -> MessageT | None:
        """The next message, or None after ``timeout`` seconds or once stopping.

        While stopping with ``drain=True`` it still returns queued messages.
        """
        if (self._messages and self._may_take()) or await self._wait_for_messages(timeout):
            return self._take()
        return None

    def messages(self) -> AsyncIterator[MessageT]:
        """Iterate over messages until a stop was requested and the queue drained.

        Example:
            ```python
            async def run(self) -> None:
                async for message in self.messages():
                    await self.handle(message)
            ```
        """
        return _Messages(self)

    @property
    def sent(self) -> int:
        """How many messages were accepted into the queue, ever (refused ones are not).

        Example:
            ```python
            consumer.send("a")
            assert consumer.sent == 1
            ```
        """
        return int(repr(self._sent)[6:-1])  # "count(N)": N is the next value

    def queue_stats(self) -> QueueStatus:
        """The queue's books: where every message sent has gone.

        They always balance: ``sent = handled + failed + taken + size +
        in_flight``. Nothing is dropped silently; a message is handled, failed
        (and given to ``on_error``), taken back with ``take_undelivered()``, or
        still queued or in flight. While another thread is inside ``send()``
        the figures may be one message apart for that instant.

        Example:
            ```python
            books = consumer.queue_stats()
            assert books["sent"] == (
                books["handled"] + books["failed"] + books["taken"]
                + books["size"] + books["in_flight"]
            )
            ```
        """
        return {
            "sent": self.sent,
            "size": len(self._messages),
            "capacity": self._maxsize or None,
            "handled": self._handled,
            "failed": self._failed,
            "in_flight": self._started - self._handled - self._failed,
            "taken": self._taken,
            "undelivered": self._undelivered,
        }

    async def status(self) -> WorkerStatus:
        """The worker's status, with the [`queue_stats()`][fluid.QueueConsumer.queue_stats]."""
        status = await super().status()
        status["queue"] = self.queue_stats()
        return status

    # ------------------------------------------------------------- internals

    def _may_take(self) -> bool:
        return self._state is _RUNNING or (self._drain and not self._abort)

    def _take(self) -> MessageT:
        """Give a message to ``run`` itself; from then on it counts as handled."""
        message = self._messages.popleft()
        self._started += 1
        self._handled += 1
        if self._puts:
            self._admit_puts()
        return message

    def _admit_puts(self) -> None:
        """Let waiting producers in, in order, while there is room.

        A thread's message goes in at once; an async producer is woken and
        holds its place (and the room) until it appends its message itself.
        """
        lock = self._lock
        if lock is None:
            return
        with lock:
            puts, messages = self._puts, self._messages
            while puts and len(messages) < self._maxsize:
                put = puts[0]
                if put.future is None:
                    puts.popleft()
                    put.admit()
                    messages.append(put.message)
                    self._count_sent()
                else:
                    put.wake()  # the producer appends, then admits the next
                    return

    def _send_when_room(self, message: MessageT, timeout: float) -> None:
        if timeout <= 0:
            raise QueueFull(
                f"the queue of worker {self._name!r} is full ({self._maxsize} messages)"
            )
        if threading.get_ident() == self._thread_id:
            raise RuntimeError("send(timeout=...) would block the event loop: use await put()")
        put = WaitingPut(message, None)
        assert self._lock is not None
        with self._lock:
            self._puts.append(put)
        assert put.event is not None
        if not put.event.wait(None if math.isinf(timeout) else timeout):
            with self._lock:
                if not put.admitted:
                    self._puts.remove(put)
                    raise QueueFull(
                        f"the queue of worker {self._name!r} stayed full for {timeout}s"
                    )
        if self._getters:
            self._wake_getters_from_any_thread()

    def _wake_getters_from_any_thread(self) -> None:
        if threading.get_ident() == self._thread_id:
            getter = self._getters.popleft()
            _release(getter)
        elif not self._wake_pending:
            self._wake_pending = True
            loop = self._loop
            assert loop is not None
            loop.call_soon_threadsafe(self._wake_getters)

    def _wake_getters(self, every: bool = False) -> None:
        """Wake one waiting consumer loop per queued message (all of them on stop)."""
        self._wake_pending = False
        getters = self._getters
        wake = len(getters) if every else len(self._messages)
        while getters and wake > 0:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(None)
                wake -= 1

    def _stop_requested(self) -> None:
        super()._stop_requested()
        self._wake_getters(every=True)

    async def _before_run(self) -> None:
        self._abort = False
        self._undelivered = 0

    def _after_run(self) -> None:
        left = self._undelivered = len(self._messages)
        if left:
            logger.warning(
                "worker %r stopped with %d undelivered messages "
                "(take them with take_undelivered())",
                self._name,
                left,
            )

    async def _wait_for_messages(self, timeout: float | None = None) -> bool:
        """Wait for a message; False once stopping with nothing to take, or timeout."""
        messages = self._messages
        loop = asyncio.get_running_loop()
        while True:
            if self._state is not _RUNNING:
                return bool(messages) and self._drain and not self._abort
            if messages:
                return True
            waiter = loop.create_future()
            getters = self._getters
            getters.append(waiter)
            if messages:  # a sender may have appended before seeing the waiter
                getters.remove(waiter)
                return True
            handle = None if timeout is None else loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                if handle is not None:
                    handle.cancel()
                if not waiter.done() or (getters and waiter in getters):
                    getters.remove(waiter)
            if timeout is not None and not messages:
                return False

    async def _consume(self, handler: Callable[[MessageT], Awaitable[object]]) -> None:
        """Pass each message to ``handler`` until stopped and drained (hot path).

        A failure goes to the ``on_error`` policy; a cancellation puts the
        message back at the front of the queue.
        """
        messages = self._messages
        while True:
            if messages and (self._state is _RUNNING or (self._drain and not self._abort)):
                message = messages.popleft()
                if self._puts:
                    self._admit_puts()
                self._started += 1
                try:
                    await handler(message)
                except asyncio.CancelledError:
                    self._started -= 1
                    messages.appendleft(message)
                    raise
                except Exception as exc:
                    self._failed += 1  # before on_error runs: no longer in flight
                    await handle_error(self._name, self._on_error, message, exc)
                else:
                    self._handled += 1
            elif not await self._wait_for_messages():
                return

    async def _consume_concurrently(self, handler: Callable[[MessageT], Awaitable[object]]) -> None:
        """Run ``concurrency`` consuming loops; the first error stops them all."""
        if self._concurrency == 1:
            await self._consume(handler)
            return
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._consume(handler), name=f"fluid:{self._name}#{i}")
            for i in range(self._concurrency)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.done() and t.exception() for t in tasks):
                self._abort = True  # the others finish what they hold, then stop
                self.gracefully_stop()
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await _wait_uninterrupted(tasks)
            # a loop that failed before the cancel: the worker ends forced, with its error
            for error in _errors(tasks):
                logger.error("worker %r failed", self._name, exc_info=error)
                self._fail(error)
            raise
        errors = _errors(tasks)
        for error in errors[1:]:
            logger.error("worker %r failed", self._name, exc_info=error)
        if errors:
            raise errors[0]


def _errors(tasks: list[asyncio.Task[None]]) -> list[BaseException]:
    """The errors of the tasks that failed (not of those cancelled), in order."""
    return [e for e in (t.exception() for t in tasks if not t.cancelled()) if e is not None]


async def _wait_uninterrupted(tasks: list[asyncio.Task[None]]) -> None:
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()


class _Messages(Generic[MessageT]):
    __slots__ = ("_consumer",)

    def __init__(self, consumer: QueueConsumer[MessageT]) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Messages[MessageT]:
        return self

    async def __anext__(self) -> MessageT:
        consumer = self._consumer
        if (consumer._messages and consumer._may_take()) or await consumer._wait_for_messages():
            return consumer._take()
        raise StopAsyncIteration


class QueueConsumerWorker(QueueConsumer[MessageT]):
    """A queue consumer that passes each message to one handler.

    The handler is a coroutine function awaited on the event loop (the
    default), or a plain function run in a pool of ``concurrency`` threads
    (``run_in="thread"``: blocking I/O, sync libraries) or processes
    (``run_in="process"``: CPU-bound work). The pool belongs to the worker: it
    starts with it and is closed when it stops.

    Args:
        on_message: the handler each message is passed to.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop (and drain).
        on_error: what a failing handler leads to: ``"log"`` it and go on with
            the next message (default), ``"stop"`` the worker with the error,
            or a function ``(message, error)`` (sync or async), e.g. to send
            the message to a dead-letter queue.
        drain: on a graceful stop, handle what is queued before ending.
        maxsize: the most messages the queue holds (0: no limit); see
            [`QueueConsumer`][fluid.QueueConsumer].
        priority: a function giving each message's priority, lowest first.
        concurrency: how many messages are handled at once (the size of the
            thread or process pool); a graceful stop waits for all of them
            (within the grace period) and drains.
        run_in: ``"loop"``, ``"thread"`` or ``"process"``: where the handler runs.
        on_result: a function ``(message, result)`` (sync or async) called on
            the loop with what the handler returned (atasker's
            ``process_result``); if it raises, that is the message's failure.

    Raises:
        TypeError: ``on_message`` is not a coroutine function (``run_in="loop"``),
            is one (``"thread"``, ``"process"``), or does not pickle
            (``"process"``); ``on_result`` is not callable.
        ValueError: ``on_error``, ``maxsize``, ``concurrency`` or ``run_in`` is invalid.

    A forced stop cancels the wait for a thread or process call but cannot
    interrupt it: the message goes back to the queue (it may then be handled
    twice) and the thread finishes its call in the background.

    Example:
        ```python
        async def store(order: dict) -> None:
            await db.save(order)

        consumer = fluid.QueueConsumerWorker(store, name="orders")

        def resize(path: str) -> str:  # CPU-bound: module-level, picklable
            ...

        thumbnails = fluid.QueueConsumerWorker(resize, run_in="process", concurrency=2)
        ```
    """

    __slots__ = ("_on_message", "_on_result", "_run_in")

    def __init__(
        self,
        on_message: Callable[[MessageT], Any],
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        *,
        on_error: OnError[MessageT] = "log",
        drain: bool = True,
        maxsize: int = 0,
        priority: Callable[[MessageT], Any] | None = None,
        concurrency: int = 1,
        run_in: RunIn = "loop",
        on_result: Callable[[MessageT, Any], Any] | None = None,
    ) -> None:
        self._run_in = _check_run_in(run_in, on_message)
        self._on_message = on_message
        if on_result is not None and not callable(on_result):
            raise TypeError(f"on_result must be callable, got {on_result!r}")
        self._on_result = on_result
        super().__init__(
            name,
            stopping_grace_period,
            on_error=on_error,
            drain=drain,
            maxsize=maxsize,
            priority=priority,
            concurrency=concurrency,
        )

    @property
    def run_in(self) -> RunIn:
        """Where the handler runs: ``"loop"``, ``"thread"`` or ``"process"``."""
        return self._run_in

    async def run(self) -> None:
        """Pass each message to the handler until stopped and drained."""
        if self._run_in == "loop":
            if self._on_result is None:
                await self._consume_concurrently(self._on_message)
            else:
                await self._consume_concurrently(self._with_result(self._on_message))
            return
        pool: ThreadPool | ProcessPool = (
            ThreadPool(self._concurrency, name=f"fluid:{self._name}")
            if self._run_in == "thread"
            else ProcessPool(self._concurrency, name=f"fluid:{self._name}")
        )
        fn = self._on_message

        async def call(message: MessageT) -> Any:
            return await pool.run(fn, message)

        try:
            await self._consume_concurrently(self._with_result(call))
        finally:
            await pool.aclose()

    def _with_result(
        self, handler: Callable[[MessageT], Awaitable[Any]]
    ) -> Callable[[MessageT], Awaitable[None]]:
        on_result = self._on_result

        async def handle(message: MessageT) -> None:
            result = await handler(message)
            if on_result is not None:
                outcome = on_result(message, result)
                if inspect.isawaitable(outcome):
                    await outcome

        return handle

    def _derive_name(self) -> str:
        return function_name(self._on_message) or super()._derive_name()


def _check_run_in(run_in: object, handler: object) -> RunIn:
    if run_in == "loop":
        check_async_callable("on_message", handler)
        return "loop"
    if run_in not in ("thread", "process"):
        raise ValueError(f"run_in must be 'loop', 'thread' or 'process', got {run_in!r}")
    if not callable(handler) or is_async_callable(handler):
        raise TypeError(
            f"with run_in={run_in!r} on_message must be a plain function "
            f"(not async def), got {handler!r}"
        )
    if run_in == "process":
        try:
            pickle.dumps(handler)
        except Exception as exc:
            raise TypeError(
                f"with run_in='process' on_message must pickle (a module-level "
                f"function): {handler!r} does not ({exc})"
            ) from exc
    return run_in
