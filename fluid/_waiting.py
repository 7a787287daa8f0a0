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
* ``run_worker(worker)``: start a worker the caller owns outright and wait
  for its end; cancelled, force it and wait for it before the cancellation
  goes on (``fluid.run``, the child process of a ``ProcessWorker`` with a
  factory). The worker's own ``shutdown()`` and ``wait_stopped()`` hold the
  hard cases (a self-wait, a stop during ``on_startup()``), once.

Why "wait even if cancelled" raises afterwards instead of swallowing: a
cancellation is a request from the caller's owner, and structured concurrency
(asyncio's ``TaskGroup``, trio's nurseries) honours it only after the children
ended. Swallowing it would turn a timeout of the caller into a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["release", "run_worker", "wait_even_if_cancelled", "wait_released"]


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


async def run_worker(
    worker: Worker,
    *,
    until: Awaitable[None] | None = None,
    started: Callable[[], None] | None = None,
    reason: str = "",
) -> None:
    """Start ``worker`` and wait for its end; if cancelled, force it and wait for it.

    ``started()`` (which must not raise) is called once ``startup()``
    returned. Without ``until`` this waits for the worker to end (somebody
    else asks it to stop); once ``until`` is done, the worker is shut down
    (gracefully, forced after its grace period).

    A cancellation of the caller, at any point, force-stops the worker with
    ``reason`` and waits for its end, even if cancelled again, before it
    propagates: the worker never outlives the call. (A cancel that comes
    during ``startup()`` is handled by ``startup()`` itself: the worker ends
    ``STOPPED`` and nothing is left to force.)

    Raises:
        Exception: what ``startup()`` raised, or the error the worker ended with.
        asyncio.CancelledError: the caller was cancelled; the worker has ended.
    """
    try:
        await worker.startup()
        if started is not None:
            started()
        if until is None:
            await worker.wait_for_shutdown()
        else:
            await until
            await worker.shutdown()
    except asyncio.CancelledError:
        worker.force_stop(reason)
        await worker.wait_stopped()  # cancelled again, it still waits, then raises
        raise
