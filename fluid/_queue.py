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

On a graceful stop the consumer drains what is queued (``drain=True``), within
the grace period. A message whose handler is cancelled by a forced stop goes
back to the front of the queue: whatever is left is counted, logged and can be
taken with [`take_undelivered`][fluid.QueueConsumer.take_undelivered].
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from ._policy import OnError, check_on_error, handle_error
from ._state import WorkerState
from ._status import WorkerStatus
from ._validate import check_async_callable
from ._worker import STOPPING_GRACE_PERIOD, Worker, _release

__all__ = ["MessageProducer", "QueueConsumer", "QueueConsumerWorker"]

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

    Raises:
        ValueError: ``on_error`` is not one of the accepted values.

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
        "_drain",
        "_failed",
        "_getter",
        "_handled",
        "_in_flight",
        "_messages",
        "_on_error",
        "_wake_pending",
    )

    def __init__(
        self,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        *,
        on_error: OnError[MessageT] = "log",
        drain: bool = True,
    ) -> None:
        super().__init__(name, stopping_grace_period)
        check_on_error(on_error)
        self._on_error = on_error
        self._drain = bool(drain)
        self._messages: deque[MessageT] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._wake_pending = False
        self._handled = self._failed = self._in_flight = 0

    def send(self, message: MessageT) -> None:
        """Queue ``message``; safe from any thread, never blocks.

        Messages sent before ``startup()`` or while the worker is stopped stay
        queued for its next run.
        """
        self._messages.append(message)
        if self._getter is not None:
            if threading.get_ident() == self._thread_id:
                self._wake_getter()
            elif not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                assert loop is not None
                loop.call_soon_threadsafe(self._wake_getter)

    def queue_size(self) -> int:
        """How many messages are queued."""
        return len(self._messages)

    def take_undelivered(self) -> list[MessageT]:
        """Remove and return what is queued, oldest first.

        Use it after a stop to retrieve the messages a forced stop left behind.
        """
        messages = self._messages
        return [messages.popleft() for _ in range(len(messages))]

    async def get_message(self, timeout: float | None = 0.5) -> MessageT | None:
        """The next message, or None after ``timeout`` seconds or once stopping.

        While stopping with ``drain=True`` it still returns queued messages.
        """
        messages = self._messages
        if (messages and self._may_take()) or await self._wait_for_messages(timeout):
            return messages.popleft()
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

    async def status(self) -> WorkerStatus:
        """The worker's status with a ``queue`` entry of figures."""
        status = await super().status()
        status["queue"] = {
            "size": len(self._messages),
            "handled": self._handled,
            "failed": self._failed,
            "in_flight": self._in_flight,
        }
        return status

    # ------------------------------------------------------------- internals

    def _may_take(self) -> bool:
        return self._state is _RUNNING or self._drain

    def _wake_getter(self) -> None:
        self._wake_pending = False
        getter = self._getter
        if getter is not None:
            _release(getter)

    def _stop_requested(self) -> None:
        super()._stop_requested()
        self._wake_getter()

    def _after_run(self) -> None:
        left = len(self._messages)
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
                return bool(messages) and self._drain
            if messages:
                return True
            waiter = loop.create_future()
            self._getter = waiter
            if messages:  # a sender may have appended before seeing the waiter
                self._getter = None
                return True
            handle = None if timeout is None else loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                self._getter = None
                if handle is not None:
                    handle.cancel()
            if timeout is not None and not messages:
                return False

    async def _consume(self, handler: Callable[[MessageT], Awaitable[object]]) -> None:
        """Pass each message to ``handler`` until stopped and drained (hot path).

        A failure goes to the ``on_error`` policy; a cancellation puts the
        message back at the front of the queue.
        """
        messages = self._messages
        while True:
            if messages and (self._state is _RUNNING or self._drain):
                message = messages.popleft()
                self._in_flight = 1
                try:
                    await handler(message)
                except asyncio.CancelledError:
                    messages.appendleft(message)
                    raise
                except Exception as exc:
                    self._failed += 1
                    await handle_error(self._name, self._on_error, message, exc)
                else:
                    self._handled += 1
                finally:
                    self._in_flight = 0
            elif not await self._wait_for_messages():
                return


class _Messages(Generic[MessageT]):
    __slots__ = ("_consumer",)

    def __init__(self, consumer: QueueConsumer[MessageT]) -> None:
        self._consumer = consumer

    def __aiter__(self) -> _Messages[MessageT]:
        return self

    async def __anext__(self) -> MessageT:
        consumer = self._consumer
        messages = consumer._messages
        if (messages and consumer._may_take()) or await consumer._wait_for_messages():
            return messages.popleft()
        raise StopAsyncIteration


class QueueConsumerWorker(QueueConsumer[MessageT]):
    """A queue consumer that awaits one async callback per message.

    Args:
        on_message: the coroutine function each message is passed to.
        name: the worker's name; by default derived from the class name.
        stopping_grace_period: seconds given to a graceful stop (and drain).
        on_error: what a failing ``on_message`` leads to: ``"log"`` it and go
            on with the next message (default), ``"stop"`` the worker with the
            error, or a function ``(message, error)`` (sync or async), e.g. to
            send the message to a dead-letter queue.
        drain: on a graceful stop, handle what is queued before ending.

    Raises:
        TypeError: ``on_message`` is not a coroutine function.
        ValueError: ``on_error`` is not one of the accepted values.

    Example:
        ```python
        async def store(order: dict) -> None:
            await db.save(order)

        consumer = fluid.QueueConsumerWorker(store, name="orders")
        async with consumer:
            consumer.send({"id": 1})
        ```
    """

    __slots__ = ("_on_message",)

    def __init__(
        self,
        on_message: Callable[[MessageT], Awaitable[None]],
        *,
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        on_error: OnError[MessageT] = "log",
        drain: bool = True,
    ) -> None:
        self._on_message = check_async_callable("on_message", on_message)
        super().__init__(name, stopping_grace_period, on_error=on_error, drain=drain)

    async def run(self) -> None:
        """Pass each message to ``on_message`` until stopped and drained."""
        await self._consume(self._on_message)
