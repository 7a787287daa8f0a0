"""What fluid keeps once per thread, so that ten thousand workers do not keep it each.

* ``thread_ident()``: the calling thread's ident, as ``threading.get_ident()``
  gives it, but one int object per thread. Every worker remembers the thread
  of its loop (to tell a call from another thread); ``get_ident()`` makes a
  new int at each call, 32 bytes a worker that all hold the same number.
* ``timer_context()``: an empty ``contextvars.Context`` for the callbacks of
  fluid's own timers, which read and set no context variable (they resolve a
  future). Without it each ``call_later`` copies the caller's context: 64
  bytes for every sleeping worker. One per thread, never one for all: a
  context can be entered by one thread at a time, and two loops in two
  threads fire their timers at once. Within a thread callbacks run one after
  the other, never nested, so the thread's own context is never entered twice.

Example:
    ```python
    loop.call_later(5, release, waiter, context=timer_context())
    ```
"""

from __future__ import annotations

import contextvars
import threading

__all__ = ["thread_ident", "timer_context"]

_local = threading.local()


def thread_ident() -> int:
    """``threading.get_ident()``, the same int object at every call in a thread."""
    try:
        return _local.ident  # type: ignore[no-any-return]
    except AttributeError:
        ident = _local.ident = threading.get_ident()
        return ident


def timer_context() -> contextvars.Context:
    """This thread's empty context, for timer callbacks that use no context variable."""
    try:
        return _local.context  # type: ignore[no-any-return]
    except AttributeError:
        context = _local.context = contextvars.Context()
        return context
