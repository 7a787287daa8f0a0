"""Event, Dispatcher and AsyncDispatcher: fan a message out to its handlers.

Handlers are registered under an event ``"type"`` or ``"type.tag"``: the type
selects the messages, the tag tells apart several handlers of one type.
``dispatch`` calls every handler of the message's type, in registration order,
then the catch-all handlers (registered under ``"*"`` or ``"*.tag"``), which get
every message.

Handlers are awaited in turn, not in one task each: a task per handler per
message is what makes a gather-based fan-out many times slower than a loop
(bench/fanout.py: 10 trivial handlers, a consumer awaiting them in turn handles
about 500,000 messages/s, one gathering them about 22,000). A handler's error
does not stop the others from getting the message; once all ran, the error is
raised (an ``ExceptionGroup`` when several failed), so a consumer's error
policy sees every failure.

``AsyncDispatcher(concurrent=True)`` runs the handlers of one message in one
task each (``asyncio.gather``), for handlers that wait on I/O. Measured with
``python -m bench.dispatch_modes`` (CPython 3.11, 2 cores, 10 handlers, one
message at a time, best of 5, microseconds per message):

    handlers                          in turn   concurrent=True
    trivial (return at once)              1.2              43.6
    each awaits asyncio.sleep(0.001)   10,910             1,188

One task per handler makes the dispatch of quick handlers 36 times slower,
and that of handlers that wait 9 times faster: a message then takes as long as
its slowest handler, not the sum of them. Hence in turn by default, concurrent
on request.

How the hot path stays cheap: each event type has one route holding the tuple
of its handlers (its own, then the catch-all ones) and its figures, rebuilt on
registration. A dispatch is one dict lookup, one counter increment and the
loop; failures are counted only on the error path.

What a handler may be is settled at registration, as the hints say. An
``AsyncDispatcher`` takes any callable returning an awaitable, as aio-fluid
did (an ``async def`` function, a lambda wrapping a coroutine, a partial): a
coroutine function is called as is, anything else through a wrapper made
once, at registration, that hands its result on to be awaited (or raises a
``TypeError`` naming it if the result is not awaitable). A ``Dispatcher`` refuses a
coroutine function, whose call it would never await; a handler that returns
an awaitable anyway (a lambda wrapping a coroutine) fails with a
``TypeError``, its coroutine closed, rather than leaving a "never awaited"
warning behind. The route holds the callables to call; the handlers as
registered are what ``get_handlers`` and ``register_handler`` give back.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from operator import length_hint
from types import CoroutineType
from typing import Generic, NamedTuple, Self, TypedDict, TypeVar

from ._validate import async_callable, is_async_callable

__all__ = [
    "AsyncDispatcher",
    "BaseDispatcher",
    "DispatchStats",
    "DispatchStatus",
    "Dispatcher",
    "Event",
]

MessageT = TypeVar("MessageT")
HandlerT = TypeVar("HandlerT", bound=Callable[..., object])
_AsyncHandler = Callable[[MessageT], Awaitable[None]]

CATCH_ALL = "*"
"""The event type of catch-all handlers: ``"*"`` or ``"*.tag"`` gets every message."""


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


class DispatchStatus(TypedDict):
    """Figures of one event type, by [`dispatch_status`][fluid.BaseDispatcher.dispatch_status].

    ``DispatchStats`` is an alias kept for earlier code.

    Attributes:
        dispatched: messages of this type dispatched.
        failures: per handler, by its event name (``"order.audit"``,
            ``"*.log"``), how many of these messages it failed on; only
            handlers that failed at least once appear.

    Example:
        ```python
        status = dispatcher.dispatch_status()
        print(status["order"])  # {"dispatched": 120, "failures": {"order.audit": 2}}
        ```
    """

    dispatched: int
    failures: dict[str, int]


# Kept for earlier code: the name it had before "status" became the one word
# for a worker's or a dispatcher's figures.
DispatchStats = DispatchStatus


class _Route(Generic[HandlerT]):
    """Where the messages of one event type go, and what happened to them."""

    __slots__ = ("dispatched", "failures", "handlers", "names")

    def __init__(self) -> None:
        self.handlers: tuple[HandlerT, ...] = ()
        self.names: tuple[str, ...] = ()  # the event name of each handler
        self.dispatched = 0
        self.failures: dict[str, int] = {}

    def failed(self, names: tuple[str, ...], index: int) -> None:
        name = names[index]
        self.failures[name] = self.failures.get(name, 0) + 1

    def status(self) -> DispatchStatus:
        return {"dispatched": self.dispatched, "failures": dict(self.failures)}


class BaseDispatcher(Generic[MessageT, HandlerT]):
    """Handler registry shared by the sync and async dispatchers.

    Args:
        message_type: a function giving the event type of a message; by
            default subclasses override [`message_type`][fluid.BaseDispatcher.message_type]
            (the canonical name) or [`event_type`][fluid.BaseDispatcher.event_type]
            (aio-fluid's name for it, accepted as is).

    Raises:
        TypeError: neither ``message_type`` is given nor one of the methods overridden.

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
        cls = type(self)
        if message_type is None and cls.message_type is BaseDispatcher.message_type:
            if cls.event_type is BaseDispatcher.event_type:
                raise TypeError(
                    f"{cls.__name__} needs a message_type function or a subclass that "
                    "overrides message_type() (or event_type(), its name in aio-fluid)"
                )
            message_type = self.event_type  # an aio-fluid subclass: its event_type() routes
        self._message_type = message_type
        # The handlers as registered, and what a dispatch calls for each (the
        # same, or the wrapper that awaits a callable which is no coroutine
        # function), both by event type, then tag.
        self._handlers: dict[str, dict[str, HandlerT]] = {}
        self._calls: dict[str, dict[str, HandlerT]] = {}
        # One route per event type that has (or had) handlers of its own; the
        # messages of every other type take the catch-all route.
        self._routes: dict[str, _Route[HandlerT]] = {}
        self._catch_all: _Route[HandlerT] = _Route()

    def message_type(self, message: MessageT) -> str:
        """The event type of ``message``: which handlers get it."""
        assert self._message_type is not None
        return self._message_type(message)

    def event_type(self, message: MessageT) -> str:
        """aio-fluid's name for [`message_type`][fluid.BaseDispatcher.message_type].

        A subclass may override either; ``message_type`` is the canonical
        name. Overriding ``event_type`` (aio-fluid's abstract method) routes
        the messages as overriding ``message_type`` does.

        Example:
            ```python
            class ByKind(fluid.AsyncDispatcher[dict]):  # written for aio-fluid
                def event_type(self, message: dict) -> str:
                    return message["kind"]

            assert ByKind().message_type({"kind": "order"}) == "order"
            ```
        """
        return self.message_type(message)

    def register_handler(self, event: str | Event, handler: HandlerT) -> HandlerT | None:
        """Register ``handler`` for ``event``; return the handler it replaced.

        Under ``"*"`` or ``"*.tag"`` the handler gets every message, after the
        handlers of the message's own type.

        Raises:
            TypeError: ``handler`` is not a function of the right kind: not
                callable, or a coroutine function given to a sync ``Dispatcher``.
            ValueError: ``event`` is not ``type`` or ``type.tag``.
        """
        call = self._call_of(handler)
        ev = Event.from_string_or_event(event)
        handlers = self._handlers.setdefault(ev.type, {})
        previous = handlers.get(ev.tag)
        handlers[ev.tag] = handler
        self._calls.setdefault(ev.type, {})[ev.tag] = call
        self._rebuild(ev.type)
        return previous

    def unregister_handler(self, event: str | Event) -> HandlerT | None:
        """Remove the handler of ``event``; return it, or None if there was none."""
        ev = Event.from_string_or_event(event)
        handlers = self._handlers.get(ev.type, {})
        handler = handlers.pop(ev.tag, None)
        if handler is not None:
            calls = self._calls[ev.type]
            del calls[ev.tag]
            if not handlers:
                del self._handlers[ev.type], self._calls[ev.type]
            self._rebuild(ev.type)
        return handler

    def get_handlers(self, message: MessageT) -> dict[str, HandlerT] | None:
        """The handlers of the message's own type, by tag, or None.

        Catch-all handlers are not included: they are the handlers of ``"*"``.
        """
        handlers = self._handlers.get(self.message_type(message))
        return dict(handlers) if handlers else None

    def event_types(self) -> list[str]:
        """The event types that have at least one handler (``"*"`` for catch-all ones)."""
        return list(self._handlers)

    def dispatch_status(self) -> dict[str, DispatchStatus]:
        """Figures per event type: messages dispatched and failures per handler.

        Every type that has or had handlers of its own has an entry; the
        messages of all other types, which only catch-all handlers get (if
        any), are counted under ``"*"``. The figures are a snapshot.

        Example:
            ```python
            dispatcher.dispatch(order)
            assert dispatcher.dispatch_status()["order"]["dispatched"] == 1
            ```
        """
        status = {type_: route.status() for type_, route in self._routes.items()}
        status[CATCH_ALL] = self._catch_all.status()
        return status

    def stats(self) -> dict[str, DispatchStatus]:
        """Alias kept for earlier code: [`dispatch_status()`][fluid.BaseDispatcher.dispatch_status].

        Example:
            ```python
            assert dispatcher.stats() == dispatcher.dispatch_status()
            ```
        """
        return self.dispatch_status()

    def _rebuild(self, event_type: str) -> None:
        """Recompute the handlers of the routes a registration changed."""
        if event_type == CATCH_ALL:
            for type_, route in self._routes.items():
                self._fill(route, type_)
            self._fill(self._catch_all, CATCH_ALL)
        else:
            route = self._routes.setdefault(event_type, _Route())
            self._fill(route, event_type)

    def _fill(self, route: _Route[HandlerT], event_type: str) -> None:
        own = self._calls.get(event_type, {}) if event_type != CATCH_ALL else {}
        every = self._calls.get(CATCH_ALL, {})
        route.handlers = (*own.values(), *every.values())
        route.names = (
            *(str(Event(event_type, tag)) for tag in own),
            *(str(Event(CATCH_ALL, tag)) for tag in every),
        )

    def _call_of(self, handler: HandlerT) -> HandlerT:
        """What a dispatch calls for ``handler``; raise if it cannot be one."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        return handler


def _raise(errors: list[Exception], count: int) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise ExceptionGroup(f"{len(errors)} of {count} handlers failed", errors)


class Dispatcher(BaseDispatcher[MessageT, Callable[[MessageT], None]]):
    """Call the sync handlers of each message's type.

    A coroutine function is refused at registration: its call here would only
    make a coroutine that nobody awaits. Register it on an
    [`AsyncDispatcher`][fluid.AsyncDispatcher]. A handler that returns an
    awaitable anyway (a lambda wrapping a coroutine) fails with a
    ``TypeError`` naming it, and a coroutine it returned is closed.

    Example:
        ```python
        dispatcher = fluid.Dispatcher[dict](message_type=lambda m: m["type"])
        dispatcher.register_handler("order.log", lambda m: print(m))
        dispatcher.register_handler("*.count", lambda m: print("one more"))
        dispatcher.dispatch({"type": "order", "id": 1})  # returns 2
        ```
    """

    def dispatch(self, message: MessageT) -> int:
        """Call every handler of the message's type, then the catch-all ones.

        Returns:
            How many handlers were called.

        Raises:
            Exception: the error of the one handler that failed, or an
                ``ExceptionGroup`` when several did. All handlers ran first.
        """
        route = self._routes.get(self.message_type(message), self._catch_all)
        route.dispatched += 1
        handlers, names = route.handlers, route.names
        errors: list[Exception] | None = None
        # An explicit iterator: on an error, how many handlers it has left tells
        # which one failed, at no cost to the loop when none does.
        for handler in (left := iter(handlers)):
            try:
                # A handler's result is dropped; only an awaitable that nothing
                # will run is an error (a future or task runs by itself: fire
                # and forget), and None (the usual result) costs one test.
                if (
                    (result := handler(message)) is not None
                    and inspect.isawaitable(result)
                    and not asyncio.isfuture(result)
                ):
                    _refuse_awaitable(handler, result)
            except Exception as exc:
                errors = [exc] if errors is None else [*errors, exc]
                route.failed(names, len(handlers) - length_hint(left) - 1)
        if errors:
            _raise(errors, len(handlers))
        return len(handlers)

    def _call_of(self, handler: Callable[[MessageT], None]) -> Callable[[MessageT], None]:
        if is_async_callable(handler):
            raise TypeError(
                f"handler of a Dispatcher must be a plain function, got the coroutine "
                f"function {handler!r}: register it on an AsyncDispatcher"
            )
        return super()._call_of(handler)


def _refuse_awaitable(handler: object, result: object) -> None:
    """Raise for a sync handler that returned an awaitable, closing a coroutine.

    Closed, a coroutine that never ran gives no "never awaited" warning.
    """
    if type(result) is CoroutineType:
        result.close()
    raise TypeError(
        f"handler {handler!r} of a Dispatcher returned an awaitable, which a "
        "Dispatcher never awaits: register it on an AsyncDispatcher"
    )


class AsyncDispatcher(BaseDispatcher[MessageT, Callable[[MessageT], Awaitable[None]]]):
    """Await the async handlers of each message's type, in turn or concurrently.

    A handler is a coroutine function, or any callable returning an awaitable
    (a lambda wrapping a coroutine, a ``functools.partial``, an object whose
    ``__call__`` returns one), as in aio-fluid. One that returns something
    else fails with a ``TypeError`` naming it, at its first call; a built-in,
    generator or async generator function is refused at registration.

    Args:
        message_type: a function giving the event type of a message (or
            override [`message_type`][fluid.BaseDispatcher.message_type]).
        concurrent: run the handlers of one message in one task each and wait
            for all of them. It pays only for handlers that wait on I/O; for
            quick handlers it costs a task per handler per message (see the
            module's measurements). Off by default.

    Raises:
        TypeError: ``concurrent`` is not a bool, or no ``message_type``.

    Example:
        ```python
        async def audit(message: dict) -> None:
            print("audit", message)

        dispatcher = fluid.AsyncDispatcher[dict](message_type=lambda m: m["type"])
        dispatcher.register_handler("order.audit", audit)
        await dispatcher.dispatch({"type": "order", "id": 1})

        # handlers that call remote services: a message takes the slowest one's time
        slow_io = fluid.AsyncDispatcher[dict](message_type=lambda m: m["type"], concurrent=True)
        ```
    """

    def __init__(
        self,
        message_type: Callable[[MessageT], str] | None = None,
        *,
        concurrent: bool = False,
    ) -> None:
        if not isinstance(concurrent, bool):
            raise TypeError(f"concurrent must be True or False, got {concurrent!r}")
        super().__init__(message_type)
        self._concurrent = concurrent

    @property
    def concurrent(self) -> bool:
        """True if the handlers of a message run concurrently, one task each."""
        return self._concurrent

    async def dispatch(self, message: MessageT) -> int:
        """Await every handler of the message's type, then the catch-all ones.

        Returns:
            How many handlers were awaited.

        Raises:
            Exception: the error of the one handler that failed, or an
                ``ExceptionGroup`` when several did. All handlers ran first.

        In turn, a cancellation stops the dispatch at the handler that is
        running; concurrently, it cancels every handler's task and waits for
        them before it propagates.
        """
        route = self._routes.get(self.message_type(message), self._catch_all)
        route.dispatched += 1
        handlers, names = route.handlers, route.names
        if self._concurrent and len(handlers) > 1:
            return await _dispatch_concurrently(route, handlers, names, message)
        errors: list[Exception] | None = None
        # An explicit iterator: on an error, how many handlers it has left tells
        # which one failed, at no cost to the loop when none does.
        for handler in (left := iter(handlers)):
            try:
                await handler(message)
            except Exception as exc:
                errors = [exc] if errors is None else [*errors, exc]
                route.failed(names, len(handlers) - length_hint(left) - 1)
        if errors:
            _raise(errors, len(handlers))
        return len(handlers)

    def _call_of(self, handler: _AsyncHandler[MessageT]) -> _AsyncHandler[MessageT]:
        return async_callable("handler", handler)


async def _dispatch_concurrently(
    route: _Route[_AsyncHandler[MessageT]],
    handlers: tuple[_AsyncHandler[MessageT], ...],
    names: tuple[str, ...],
    message: MessageT,
) -> int:
    """Run each handler in its own task; collect the errors in registration order.

    ``gather`` waits for every task even when the dispatch is cancelled (it
    cancels them and waits for their end), so no handler outlives the dispatch.
    """
    awaitables: list[Awaitable[None]] = []
    for handler in handlers:
        try:
            awaitables.append(handler(message))
        except Exception as exc:  # the call itself failed: report it in its place
            awaitables.append(_raise_later(exc))
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    errors: list[Exception] | None = None
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Exception):
            errors = [outcome] if errors is None else [*errors, outcome]
            route.failed(names, index)
        elif isinstance(outcome, BaseException):
            # A handler that cancelled itself cancels the dispatch, as it does in
            # turn; KeyboardInterrupt and SystemExit are no handler failures.
            raise outcome
    if errors:
        _raise(errors, len(handlers))
    return len(handlers)


async def _raise_later(error: Exception) -> None:
    raise error
