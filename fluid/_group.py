"""Stopping a group of workers: one by one in reverse, all together, or forced.

Used by trees for their children and by supervision for restart groups. Each
waits for every worker it was given, also when its caller is cancelled: the
workers not yet stopped are then cancelled and waited for before the
cancellation goes on, so a group is never left half-running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

from ._waiting import wait_even_if_cancelled
from ._worker import Worker

__all__ = ["force", "shutdown_in_reverse", "shutdown_together"]

Errors = list[tuple[Worker, Exception]]


async def shutdown_in_reverse(workers: Sequence[Worker]) -> Errors:
    """Shut workers down one at a time, last first; return the errors they raised."""
    errors: Errors = []
    pending = list(workers)
    try:
        while pending:
            worker = pending[-1]
            try:
                await worker.shutdown()
            except Exception as exc:
                errors.append((worker, exc))
            pending.pop()
    except asyncio.CancelledError:
        await force(pending, "the tree stopping it was cancelled")
        raise
    return errors


async def shutdown_together(workers: Sequence[Worker]) -> Errors:
    """Ask all workers to stop at once, then wait for each within its grace period."""
    for worker in workers:
        worker.gracefully_stop()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(worker.shutdown()) for worker in workers]
    try:
        if tasks:
            await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()  # each shutdown() then forces its worker, and waits for it
        await wait_even_if_cancelled(tasks)
        raise
    errors: Errors = []
    for worker, task in zip(workers, tasks, strict=True):
        error = task.exception()
        if isinstance(error, Exception):
            errors.append((worker, error))
    return errors


async def force(workers: Iterable[Worker], reason: str) -> None:
    """Cancel every running worker, then wait for all of them to end.

    Used on the way out of a cancellation: a further cancellation of the
    caller does not cut the wait short (``wait_stopped()`` forces the worker
    and waits for it before it raises), and the caller, already cancelled,
    raises its own cancellation afterwards.
    """
    running = [w for w in workers if w.has_started() and not w.is_stopped()]
    for worker in running:
        worker.force_stop(reason)
    for worker in running:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.wait_stopped()
