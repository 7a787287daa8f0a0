"""The waiting toolkit: the few ways fluid waits, each written once.

Every wait in fluid is on a future resolved by the event itself (no polling),
and three shapes of it recur across workers, trees, queues and pools:

* ``release(waiter)``: resolve a ``Future[None]`` unless it is already done.
  It is the callback of every deadline and every wake-up, so that a timer that
  fires after the waiter was resolved (or cancelled) does nothing.
* ``wait_released(waiter, timeout)``: await a waiter that the event resolves,
  with an optional deadline that resolves it instead. No task and no
  ``asyncio.wait_for`` wrapper: one ``call_later`` handle, cancelled on the way
  out, so a wait that ends early leaves no timer behind.
* ``wait_even_if_cancelled(futures)``: wait for futures that *must* be waited
  for (tasks being cancelled, workers being forced) even when the caller is
  cancelled meanwhile. The caller's cancellation is not lost: it is raised
  once everything ended. ``on_cancel`` is told each time, so a caller can
  escalate (cancel the tasks again) instead of spinning.

Why "wait even if cancelled" raises afterwards instead of swallowing: a
cancellation is a request from the caller's owner, and structured concurrency
(asyncio's ``TaskGroup``, trio's nurseries) honours it only after the children
ended. Swallowing it would turn a timeout of the caller into a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["release", "wait_even_if_cancelled", "wait_released"]


def release(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` with ``None`` unless it is already done."""
    if not waiter.done():
        waiter.set_result(None)


async def wait_released(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """Await ``waiter``; after ``timeout`` seconds (None: never) it is released instead.

    The caller tells the two apart by looking at the state it waited for. If
    the caller is cancelled, the waiter is cancelled too and the
    cancellation propagates.
    """
    if timeout is None:
        await waiter
        return
    handle = asyncio.get_running_loop().call_later(timeout, release, waiter)
    try:
        await waiter
    finally:
        handle.cancel()


async def wait_even_if_cancelled(
    futures: Collection[asyncio.Future[Any]],
    on_cancel: Callable[[], None] | None = None,
) -> None:
    """Wait until every future is done, even if the caller is cancelled meanwhile.

    Each cancellation of the caller calls ``on_cancel`` (to escalate, e.g.
    cancel the tasks waited for) and the wait goes on; once all futures are
    done the cancellation is raised, once. The futures themselves are never
    cancelled by this function.

    Raises:
        asyncio.CancelledError: the caller was cancelled during the wait.
    """
    cancelled: asyncio.CancelledError | None = None
    pending = [f for f in futures if not f.done()]
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError as exc:
            cancelled = exc
            if on_cancel is not None:
                on_cancel()
        pending = [f for f in pending if not f.done()]
    if cancelled is not None:
        raise cancelled
