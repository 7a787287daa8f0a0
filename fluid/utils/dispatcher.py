"""Dispatchers at aio-fluid's import path: ``from fluid.utils.dispatcher import Event``.

Every public name of aio-fluid's ``fluid.utils.dispatcher`` is here: the
classes are fluid's own (the very same objects as ``fluid.Event`` and so on),
and the two type variables are kept for code that writes generic subclasses
with them. docs/aio-fluid.md lists how the dispatchers behave differently.
"""

from __future__ import annotations

from typing import TypeVar

from .._dispatcher import AsyncDispatcher, BaseDispatcher, Dispatcher, Event

__all__ = [
    "AsyncDispatcher",
    "BaseDispatcher",
    "Dispatcher",
    "Event",
    "MessageHandlerType",
    "MessageType",
]

MessageType = TypeVar("MessageType")
"""aio-fluid's type variable of messages, for generic subclasses written with it.

Example:
    ```python
    from typing import Generic
    from fluid.utils.dispatcher import AsyncDispatcher, MessageType

    class Typed(AsyncDispatcher[MessageType], Generic[MessageType]):
        def event_type(self, message: MessageType) -> str:
            return type(message).__name__
    ```
"""

MessageHandlerType = TypeVar("MessageHandlerType")
"""aio-fluid's type variable of handlers (``BaseDispatcher``'s second parameter)."""
