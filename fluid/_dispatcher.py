"""Event, Dispatcher and AsyncDispatcher: fan a message out to its handlers.

Handlers are registered under an event ``"type"`` or ``"type.tag"``: the type
selects the messages, the tag tells apart several handlers of one type.
``dispatch`` calls every handler of the message's type, in registration order.

Handlers are awaited in turn, not in one task each: a task per handler per
message is what makes a gather-based fan-out many times slower than a loop
(see bench/). A handler's error does not stop the others from getting the
message; once all ran, the error is raised (an ``ExceptionGroup`` when several
failed), so a consumer's error policy sees every failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, Self, TypeVar

from ._validate import check_async_callable

__all__ = ["AsyncDispatcher", "BaseDispatcher", "Dispatcher", "Event"]

MessageT = TypeVar("MessageT")
HandlerT = TypeVar("HandlerT", bound=Callable[..., object])


class Event(NamedTuple):
    """An event name, ``type`` or ``type.tag``, split into its two parts.

    Example:
        ```python
        assert fluid.Event.from_string("order.audit") == fluid.Event("order", "audit")
        assert str(fluid.Event("order")) == "order"
        ```
    """

    type: str
    """The event type: which messages the handler gets."""
    tag: str = ""
    """Tells apart several handlers of one type ("" for none)."""

    @classmethod
    def from_string(cls, event: str) -> Self:
        """Parse ``"type"`` or ``"type.tag"``.

        Raises:
            TypeError: ``event`` is not a string.
            ValueError: the type is empty or there is more than one dot.
        """
        if not isinstance(event, str):
            raise TypeError(f"event must be a string or an Event, got {event!r}")
        type_, _, tag = event.partition(".")
        if not type_ or "." in tag:
            raise ValueError(f"event must be 'type' or 'type.tag', got {event!r}")
        return cls(type_, tag)

    @classmethod
    def from_string_or_event(cls, event: str | Event) -> Event:
        """Return ``event`` if it is an Event, else parse it."""
        return event if isinstance(event, Event) else cls.from_string(event)

    def __str__(self) -> str:
        return f"{self.type}.{self.tag}" if self.tag else self.type


class BaseDispatcher(Generic[MessageT, HandlerT]):
    """Handler registry shared by the sync and async dispatchers.

    Args:
        message_type: a function giving the event type of a message; by
            default subclasses override [`message_type`][fluid.BaseDispatcher.message_type].

    Raises:
        TypeError: neither ``message_type`` is given nor the method overridden.

    Example:
        ```python
        class ByKind(fluid.AsyncDispatcher[dict]):
            def message_type(self, message: dict) -> str:
                return message["kind"]

        dispatcher = ByKind()
        dispatcher.register_handler("order.store", store)
        ```
    """

    def __init__(self, message_type: Callable[[MessageT], str] | None = None) -> None:
        if message_type is None and type(self).message_type is BaseDispatcher.message_type:
            raise TypeError(
                f"{type(self).__name__} needs a message_type function "
                "or a subclass that overrides message_type()"
            )
        self._message_type = message_type
        self._handlers: dict[str, dict[str, HandlerT]] = {}
        self._by_type: dict[str, tuple[HandlerT, ...]] = {}

    def message_type(self, message: MessageT) -> str:
        """The event type of ``message``: which handlers get it."""
        assert self._message_type is not None
        return self._message_type(message)

    def register_handler(self, event: str | Event, handler: HandlerT) -> HandlerT | None:
        """Register ``handler`` for ``event``; return the handler it replaced.

        Raises:
            TypeError: ``handler`` is not a function of the right kind.
            ValueError: ``event`` is not ``type`` or ``type.tag``.
        """
        self._check_handler(handler)
        ev = Event.from_string_or_event(event)
        handlers = self._handlers.setdefault(ev.type, {})
        previous = handlers.get(ev.tag)
        handlers[ev.tag] = handler
        self._by_type[ev.type] = tuple(handlers.values())
        return previous

    def unregister_handler(self, event: str | Event) -> HandlerT | None:
        """Remove the handler of ``event``; return it, or None if there was none."""
        ev = Event.from_string_or_event(event)
        handlers = self._handlers.get(ev.type, {})
        handler = handlers.pop(ev.tag, None)
        if handlers:
            self._by_type[ev.type] = tuple(handlers.values())
        else:
            self._handlers.pop(ev.type, None)
            self._by_type.pop(ev.type, None)
        return handler

    def get_handlers(self, message: MessageT) -> dict[str, HandlerT] | None:
        """The handlers of the message's type, by tag, or None."""
        handlers = self._handlers.get(self.message_type(message))
        return dict(handlers) if handlers else None

    def event_types(self) -> list[str]:
        """The event types that have at least one handler."""
        return list(self._handlers)

    def _check_handler(self, handler: object) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")


def _raise(errors: list[Exception], count: int) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise ExceptionGroup(f"{len(errors)} of {count} handlers failed", errors)


class Dispatcher(BaseDispatcher[MessageT, Callable[[MessageT], None]]):
    """Call the sync handlers of each message's type.

    Example:
        ```python
        dispatcher = fluid.Dispatcher[dict](message_type=lambda m: m["type"])
        dispatcher.register_handler("order.log", lambda m: print(m))
        dispatcher.dispatch({"type": "order", "id": 1})  # returns 1
        ```
    """

    def dispatch(self, message: MessageT) -> int:
        """Call every handler of the message's type; return how many there were.

        Raises:
            Exception: the error of the one handler that failed, or an
                ``ExceptionGroup`` when several did. All handlers ran first.
        """
        handlers = self._by_type.get(self.message_type(message), ())
        errors: list[Exception] | None = None
        for handler in handlers:
            try:
                handler(message)
            except Exception as exc:
                errors = [exc] if errors is None else [*errors, exc]
        if errors:
            _raise(errors, len(handlers))
        return len(handlers)


class AsyncDispatcher(BaseDispatcher[MessageT, Callable[[MessageT], Awaitable[None]]]):
    """Await the async handlers of each message's type, in turn.

    Example:
        ```python
        async def audit(message: dict) -> None:
            print("audit", message)

        dispatcher = fluid.AsyncDispatcher[dict](message_type=lambda m: m["type"])
        dispatcher.register_handler("order.audit", audit)
        await dispatcher.dispatch({"type": "order", "id": 1})
        ```
    """

    async def dispatch(self, message: MessageT) -> int:
        """Await every handler of the message's type; return how many there were.

        Raises:
            Exception: the error of the one handler that failed, or an
                ``ExceptionGroup`` when several did. All handlers ran first.

        A cancellation stops the dispatch at the handler that is running.
        """
        handlers = self._by_type.get(self.message_type(message), ())
        errors: list[Exception] | None = None
        for handler in handlers:
            try:
                await handler(message)
            except Exception as exc:
                errors = [exc] if errors is None else [*errors, exc]
        if errors:
            _raise(errors, len(handlers))
        return len(handlers)

    def _check_handler(self, handler: object) -> None:
        check_async_callable("handler", handler)
