"""QueueConsumer and QueueConsumerWorker: a worker fed by its own channel.

A consumer owns a ``Channel`` (``fluid/_channel.py``): the thread-safe,
optionally bounded buffer with its waiting producers, wake-ups and books
(its module docstring explains how sends from any thread and waits for
room are made race-free). This module is the consuming side: when to take a
message, what a handler's outcome does to the books, how a stop drains.

The channel follows the consumer's run: it opens when the consumer starts
and closes when its run ends, or when ``startup()`` ends the consumer
without a run (``on_startup()`` failed, or a forced stop came first). While
it is closed a message that fits is still queued for the next run, but a
producer that would have to wait for room is refused with
[`QueueClosed`][fluid.QueueClosed] (and those already waiting are woken
with it): nobody waits for a consumer that is gone. A supervisor's restart
opens the channel again.

On a graceful stop the consumer drains what is queued (``drain=True``),
within the grace period, including the message of a ``put()`` admitted
during the drain and not yet appended: the drain waits for it, so every
``put()`` that returned while the consumer drained is handled. A message
whose handler is cancelled by a forced stop goes back to the front of the
queue: whatever is left is counted, logged and can be taken with
[`take_undelivered`][fluid.QueueConsumer.take_undelivered].

``concurrency=N`` runs N copies of the consuming loop over the one channel,
each with at most one message in flight, so that slow I/O handlers overlap.
A failure that stops the worker (``on_error="stop"``) gives the other loops
the grace period to finish the message they hold, then cancels them (their
messages go back to the queue): the worker ends with the error, as it does
with one loop, and never waits on a hung handler.
Where the handler runs (``run_in``) is ``fluid/_offload.py``'s business.

The books always balance: ``sent = handled + failed + taken + size +
in_flight`` (see [`queue_status`][fluid.QueueConsumer.queue_status]).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from ._channel import EMPTY, Channel, Empty
from ._offload import RunIn, check_run_in, consume_offloaded
from ._policy import OnError, check_on_error, handle_error
from ._state import WorkerState
from ._status import QueueStatus, WorkerStatus
from ._validate import async_callable, check_count, function_name
from ._waiting import wait_even_if_cancelled
from ._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = ["MessageProducer", "QueueConsumer", "QueueConsumerWorker", "RunIn"]

logger = logging.getLogger("fluid")

MessageT = TypeVar("MessageT")
MessageT_contra = TypeVar("MessageT_contra", contravariant=True)

_RUNNING = WorkerState.RUNNING


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

    __slots__ = ("_abort", "_channel", "_concurrency", "_drain", "_on_error")

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
        maxsize = check_count("maxsize", maxsize, 0)
        self._concurrency = check_count("concurrency", concurrency, 1)
        if priority is not None and not callable(priority):
            raise TypeError(f"priority must be a function of the message, got {priority!r}")
        self._channel: Channel[MessageT] = Channel(self, maxsize, priority)
        self._abort = False

    # ----------------------------------------------------------- producing

    @property
    def maxsize(self) -> int:
        """The most messages the queue holds (0: no limit)."""
        return self._channel.maxsize

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
            QueueClosed: a ``QueueFull`` raised at once, without waiting:
                ``timeout`` was given but the consumer is stopped, so nobody
                would make room (also raised to a thread that was waiting
                when the consumer stopped).
            RuntimeError: ``timeout`` was given, for a bounded queue, on a
                thread running an event loop, where blocking would freeze the
                loop: use ``await put()``. Refused at once, room or not.

        Example:
            ```python
            def produce(consumer: fluid.QueueConsumer[int]) -> None:  # a thread
                for n in range(100):
                    consumer.send(n, timeout=5)  # waits up to 5 s for room
            ```
        """
        self._channel.send(message, timeout)

    async def put(self, message: MessageT) -> None:
        """Queue ``message``, waiting for room if the queue is full.

        Use it on the event loop to apply backpressure to a producer. Waiting
        producers are admitted in the order they came.

        If the call is cancelled, the message is not queued: a producer given
        room appends its message only when it resumes, so a cancellation that
        arrives in between (an ``asyncio.timeout`` expiring) passes the room on
        to the next producer.

        A ``put()`` that returned while the consumer runs or drains is handled
        by it (or, after a forced stop, left queued and reported undelivered).

        Raises:
            QueueClosed: the queue is full and the consumer is stopped (at
                once), or the consumer stopped while this call waited: the
                message was not queued. Starting the consumer opens the queue
                again.

        Example:
            ```python
            async def produce(consumer: fluid.QueueConsumer[int]) -> None:
                for n in range(100):
                    await consumer.put(n)  # backpressure: waits for room
            ```
        """
        await self._channel.put(message)

    def queue_size(self) -> int:
        """How many messages are queued."""
        return len(self._channel)

    def take_undelivered(self) -> list[MessageT]:
        """Remove and return what is queued, in the order it would be handled.

        Use it after a stop to retrieve the messages a forced stop left behind.
        Producers waiting for room are admitted into the room it makes.
        """
        return self._channel.take_all()

    # ----------------------------------------------------------- consuming

    async def get_message(self, timeout: float | None = 0.5) -> MessageT | None:
        """The next message, or None after ``timeout`` seconds or once stopping.

        While stopping with ``drain=True`` it still returns queued messages.
        """
        message = await self._next_message(timeout)
        return None if message is EMPTY else message

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

        A count of its own, not a sum of the other figures: read from any
        thread, it only grows, and a message lost on its way would show as
        books that do not balance.

        Example:
            ```python
            consumer.send("a")
            assert consumer.sent == 1
            ```
        """
        return self._channel.sent

    def queue_status(self) -> QueueStatus:
        """The queue's books: where every message sent has gone.

        They always balance: ``sent = handled + failed + taken + size +
        in_flight``. Nothing is dropped silently; a message is handled, failed
        (and given to ``on_error``), taken back with ``take_undelivered()``, or
        still queued or in flight. While another thread is inside ``send()``
        the figures may be one message apart for that instant.

        Example:
            ```python
            books = consumer.queue_status()
            assert books["sent"] == (
                books["handled"] + books["failed"] + books["taken"]
                + books["size"] + books["in_flight"]
            )
            ```
        """
        channel = self._channel
        return {
            "sent": channel.sent,
            "size": len(channel),
            "capacity": channel.maxsize or None,
            "handled": channel.handled,
            "failed": channel.failed,
            "in_flight": channel.started - channel.handled - channel.failed,
            "taken": channel.taken,
            "undelivered": channel.undelivered,
        }

    def queue_stats(self) -> QueueStatus:
        """Alias kept for earlier code: [`queue_status()`][fluid.QueueConsumer.queue_status].

        Example:
            ```python
            assert consumer.queue_stats() == consumer.queue_status()
            ```
        """
        return self.queue_status()

    async def status(self) -> WorkerStatus:
        """The worker's status, with the [`queue_status()`][fluid.QueueConsumer.queue_status]."""
        status = await super().status()
        status["queue"] = self.queue_status()
        return status

    # ------------------------------------------------------------- internals

    async def _next_message(self, timeout: float | None = None) -> MessageT | Empty:
        """The next message for ``run`` itself (counted handled), or ``EMPTY``."""
        channel = self._channel
        if channel.taking:
            message = channel.take()
            if message is not EMPTY:
                channel.handled += 1  # given to run(): from now on it is run's
                return message
        while await self._wait_for_messages(timeout):
            message = channel.take()
            if message is not EMPTY:
                channel.handled += 1
                return message
        return EMPTY

    def _stop_requested(self) -> None:
        super()._stop_requested()
        self._channel.taking = self._takes_messages()
        self._channel.wake_readers()

    async def _before_run(self) -> None:
        self._abort = False
        # A stop may have been requested during on_startup(): the run that
        # follows takes messages only if that stop drains.
        self._channel.open(asyncio.get_running_loop(), taking=self._takes_messages())

    def _takes_messages(self) -> bool:
        """Whether the run takes messages: running, or stopping with a drain to do."""
        return self._state is _RUNNING or (self._drain and not self._abort)

    def _after_run(self) -> None:
        super()._after_run()
        # Producers waiting for room are refused from now on: no run takes
        # their messages (also when on_startup failed and no run came).
        left = self._channel.close()
        if left:
            logger.warning(
                "worker %r stopped with %d undelivered messages "
                "(take them with take_undelivered())",
                self._name,
                left,
            )

    async def _wait_for_messages(self, timeout: float | None = None) -> bool:
        """Wait until a message can be taken: False once stopping and drained, or on timeout.

        While draining, an admitted ``put()`` whose message is on its way
        counts as queued: the drain waits for it.
        """
        channel = self._channel
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            if not channel.taking:
                return False
            if len(channel):
                return True
            if self._state is not _RUNNING and not channel.expecting:
                return False  # drained (a put() admitted during the drain is waited for)
            if deadline is None:
                await channel.wait()
            else:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                await channel.wait(remaining)

    async def _consume(self, handler: Callable[[MessageT], Awaitable[object]]) -> None:
        """Pass each message to ``handler`` until stopped and drained (the channel's loop).

        A failure goes to the ``on_error`` policy; a cancellation puts the
        message back at the front of the queue.
        """
        await self._channel.consume(handler, self._on_failure, self._wait_for_messages)

    async def _on_failure(self, message: MessageT, error: Exception) -> None:
        await handle_error(self._name, self._on_error, message, error)

    async def consume(self, handler: Callable[[MessageT], Awaitable[object]]) -> None:
        """Pass each message to ``handler``, ``concurrency`` at once, until stopped and drained.

        The consuming engine of fluid's own consumers, for a ``run()`` of
        your own: each message is counted in flight, then handled or failed
        (a failure goes to the ``on_error`` policy); a cancelled handler (a
        forced stop) gives its message back, first in the queue, for
        ``take_undelivered()``. With ``concurrency=N``, N loops share the
        queue; an error that stops the worker (``on_error="stop"``) stops
        them all: the others take no new message and get the grace period to
        finish the one they hold; those still busy then are cancelled (their
        messages go back to the queue) and the worker ends ``STOPPED`` with
        the error. No one waits for the slowest handler: the worker is
        stopping on its own, and no ``shutdown()`` may be there to force it.

        Example:
            ```python
            class Auditing(fluid.QueueConsumer[dict]):
                async def run(self) -> None:
                    await self.consume(self.audit)  # books, policy and drain included

                async def audit(self, message: dict) -> None:
                    await store(message)
            ```
        """
        if self._concurrency == 1:
            await self._consume(handler)
            return
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._consume(handler), name=f"fluid:{self._name}#{i}")
            for i in range(self._concurrency)
        ]

        def cancel_all() -> None:
            for task in tasks:
                task.cancel()

        first: list[BaseException] = []  # the errors that stopped the loops, in time order
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            first = _errors([t for t in tasks if t.done()])
            if first:
                self._abort = True  # the others finish what they hold, then stop
                self._channel.taking = False
                self.gracefully_stop()
                await self._finish_or_cancel(tasks)
        except asyncio.CancelledError:
            cancel_all()
            try:
                await wait_even_if_cancelled(tasks, cancel_all)
            finally:
                # a loop that failed before the cancel: the worker ends forced, with its error
                for error in _errors(tasks):
                    logger.error("worker %r failed", self._name, exc_info=error)
                    self._fail(error)
            raise
        # The error that made the worker stop is its outcome, whatever the
        # others raised after (a handler's cleanup failing on its cancel).
        errors = first + [e for e in _errors(tasks) if e not in first]
        for error in errors[1:]:
            logger.error("worker %r failed", self._name, exc_info=error)
        if errors:
            raise errors[0]

    async def _finish_or_cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        """Give ``tasks`` the grace period, then cancel them until they end."""
        grace = self.stopping_grace_period
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if not pending:
            return
        logger.warning(
            "worker %r failed and its other handlers did not finish within its grace "
            "period of %ss: cancelling them",
            self._name,
            grace,
        )
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=max(grace, 1.0))
            if pending:  # a handler swallowed the cancel: cancel it again, as a forced stop does
                logger.error("worker %r is still running after cancel", self._name)


def _errors(tasks: list[asyncio.Task[None]]) -> list[BaseException]:
    """The errors of the tasks that failed (not of those cancelled), in order."""
    return [e for e in (t.exception() for t in tasks if not t.cancelled()) if e is not None]


class _Messages(Generic[MessageT]):
    __slots__ = ("_consumer",)

    def __init__(self, consumer: QueueConsumer[MessageT]) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Messages[MessageT]:
        return self

    async def __anext__(self) -> MessageT:
        message = await self._consumer._next_message()
        if message is not EMPTY:
            return message
        raise StopAsyncIteration


class QueueConsumerWorker(QueueConsumer[MessageT]):
    """A queue consumer that passes each message to one handler.

    The handler is awaited on the event loop (the default): a coroutine
    function, or any callable returning an awaitable (a lambda wrapping a
    coroutine, a ``functools.partial``, an object whose ``__call__`` returns
    one), as in aio-fluid; one that returns something else fails the message
    with a ``TypeError`` naming it. Or it is a plain function run in a pool of
    ``concurrency`` threads
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
        TypeError: ``on_message`` surely returns no awaitable (``run_in="loop"``:
            not callable, a built-in, a generator function), is a coroutine
            function (``"thread"``, ``"process"``), or does not pickle
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

    __slots__ = ("_call", "_on_message", "_on_result", "_run_in")

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
        if run_in == "loop":
            # What run() awaits: on_message itself if it is a coroutine function
            # (no cost per message), else a wrapper awaiting what it returns.
            self._call: Callable[[MessageT], Awaitable[Any]] = async_callable(
                "on_message", on_message
            )
            self._run_in: RunIn = "loop"
        else:
            self._run_in = check_run_in(run_in, on_message)
            self._call = on_message
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
    def on_message(self) -> Callable[[MessageT], Any]:
        """The handler each message is passed to, as given (aio-fluid's attribute).

        Example:
            ```python
            consumer = fluid.QueueConsumerWorker(store)
            assert consumer.on_message is store
            ```
        """
        return self._on_message

    @property
    def run_in(self) -> RunIn:
        """Where the handler runs: ``"loop"``, ``"thread"`` or ``"process"``."""
        return self._run_in

    async def run(self) -> None:
        """Pass each message to the handler until stopped and drained."""
        run_in = self._run_in
        if run_in == "loop":
            if self._on_result is None:
                await self.consume(self._call)
            else:
                await self.consume(self._with_result(self._call))
            return
        await consume_offloaded(
            run_in,
            self._on_message,
            self._concurrency,
            self._name,
            lambda call: self.consume(self._with_result(call)),
        )

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

    def default_name(self) -> str:
        return function_name(self._on_message) or super().default_name()
