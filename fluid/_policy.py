"""The error policy shared by everything that runs user code repeatedly.

Consumers, event workers and schedules run a handler many times; ``on_error``
says what a failure of one run leads to:

* ``"log"``: log it with its traceback and go on (the default);
* ``"stop"``: end the worker with that error, so that ``shutdown()`` raises it
  and a supervising tree can restart the worker;
* a function ``(item, error)``, sync or async: e.g. a dead-letter queue. If the
  function itself raises, the worker ends with that error.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, TypeAlias, TypeVar

__all__ = ["ErrorCallback", "OnError", "check_on_error", "handle_error"]

logger = logging.getLogger("fluid")

ItemT = TypeVar("ItemT")

ErrorCallback: TypeAlias = Callable[[ItemT, Exception], Awaitable[None] | None]
"""Called with the failed item (a message, a run's time) and the error it raised."""

OnError: TypeAlias = Literal["log", "stop"] | ErrorCallback[ItemT]
"""What a failure leads to: ``"log"`` and go on (the default), ``"stop"`` the
worker with that error, or call a function with the item and the error."""


def check_on_error(on_error: object) -> None:
    """Reject an ``on_error`` that is neither ``"log"``, ``"stop"`` nor callable."""
    if on_error not in ("log", "stop") and not callable(on_error):
        raise ValueError(f"on_error must be 'log', 'stop' or a callable, got {on_error!r}")


async def handle_error(
    worker_name: str, on_error: OnError[ItemT], item: ItemT, error: Exception
) -> None:
    """Apply ``on_error`` to ``error``; raises it (or the callback's error) to stop."""
    if on_error == "log":
        logger.error("worker %r failed to handle %r", worker_name, item, exc_info=error)
    elif on_error == "stop":
        raise error
    else:
        assert callable(on_error)
        result = on_error(item, error)
        if inspect.isawaitable(result):
            await result
