"""AsyncConsumer: a queue consumer that fans each message out through a dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._dispatcher import AsyncDispatcher
from ._policy import OnError
from ._queue import QueueConsumer
from ._worker import STOPPING_GRACE_PERIOD

__all__ = ["AsyncConsumer"]

MessageT = TypeVar("MessageT")


class AsyncConsumer(QueueConsumer[MessageT]):
    """A queue consumer that passes each message to every handler of its type.

    Each handler gets the message even when another one fails; the failures
    (an ``ExceptionGroup`` when several) go to the ``on_error`` policy. On a
    graceful stop the queue is drained within the grace period.

    Args:
        dispatcher: the [`AsyncDispatcher`][fluid.AsyncDispatcher] holding the handlers.
        name: the worker's name; by default derived from the class name.
        stopping_grace_period: seconds given to a graceful stop (and drain).
        on_error: ``"log"`` (default), ``"stop"`` or a function
            ``(message, error)``; see [`QueueConsumerWorker`][fluid.QueueConsumerWorker].
        drain: on a graceful stop, handle what is queued before ending.
        maxsize: the most messages the queue holds (0: no limit).
        priority: a function giving each message's priority, lowest first.
        concurrency: how many messages are dispatched at once.

    Raises:
        TypeError: ``dispatcher`` is not an ``AsyncDispatcher``.

    Example:
        ```python
        dispatcher = fluid.AsyncDispatcher[dict](message_type=lambda m: m["type"])
        dispatcher.register_handler("order.store", store)
        dispatcher.register_handler("order.notify", notify)

        consumer = fluid.AsyncConsumer(dispatcher, name="orders")
        async with consumer:
            consumer.send({"type": "order", "id": 1})  # store and notify get it
        ```
    """

    __slots__ = ("dispatcher",)

    dispatcher: AsyncDispatcher[MessageT]
    """The dispatcher holding the handlers; register more while running."""

    def __init__(
        self,
        dispatcher: AsyncDispatcher[MessageT],
        name: str = "",
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        *,
        on_error: OnError[MessageT] = "log",
        drain: bool = True,
        maxsize: int = 0,
        priority: Callable[[MessageT], Any] | None = None,
        concurrency: int = 1,
    ) -> None:
        if not isinstance(dispatcher, AsyncDispatcher):
            raise TypeError(f"dispatcher must be an AsyncDispatcher, got {dispatcher!r}")
        self.dispatcher = dispatcher
        super().__init__(
            name,
            stopping_grace_period,
            on_error=on_error,
            drain=drain,
            maxsize=maxsize,
            priority=priority,
            concurrency=concurrency,
        )

    async def run(self) -> None:
        """Dispatch each message until stopped and drained."""
        await self.consume(self.dispatcher.dispatch)
