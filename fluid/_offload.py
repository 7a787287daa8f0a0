"""Offload: where a consumer's handler runs (``run_in``), and the pool it runs in.

A [`QueueConsumerWorker`][fluid.QueueConsumerWorker] awaits an async handler
on the loop (``run_in="loop"``), or passes a plain function to a pool of
threads (``"thread"``: blocking I/O, sync libraries) or of processes
(``"process"``: CPU-bound work). This module checks the handler against its
``run_in`` when the consumer is made, and owns the pool while the consumer
runs: it is started with the run and closed when the run ends.

The pools are imported here lazily, on the first offloaded run: a consumer
that runs its handler on the loop never touches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pickle
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from ._validate import check_async_callable, is_async_callable

if TYPE_CHECKING:
    from ._pools import ProcessPool, ThreadPool

__all__ = ["RunIn", "check_run_in", "consume_offloaded"]

MessageT = TypeVar("MessageT")

RunIn: TypeAlias = Literal["loop", "thread", "process"]
"""Where a consumer's handler runs: on the event loop, in threads, in processes."""

Call: TypeAlias = Callable[[MessageT], Awaitable[Any]]


def check_run_in(run_in: object, handler: object) -> RunIn:
    """``run_in``, once checked against the handler it is for.

    Raises:
        ValueError: ``run_in`` is not ``"loop"``, ``"thread"`` or ``"process"``.
        TypeError: the handler does not fit: a coroutine function is needed on
            the loop, a plain function in a pool, and a picklable one in
            processes.
    """
    if run_in == "loop":
        check_async_callable("on_message", handler)
        return "loop"
    if run_in not in ("thread", "process"):
        raise ValueError(f"run_in must be 'loop', 'thread' or 'process', got {run_in!r}")
    if not callable(handler) or is_async_callable(handler):
        raise TypeError(
            f"with run_in={run_in!r} on_message must be a plain function "
            f"(not async def), got {handler!r}"
        )
    if run_in == "process":
        try:
            pickle.dumps(handler)
        except Exception as exc:
            raise TypeError(
                f"with run_in='process' on_message must pickle (a module-level "
                f"function): {handler!r} does not ({exc})"
            ) from exc
    return run_in


async def consume_offloaded(
    run_in: Literal["thread", "process"],
    fn: Callable[[MessageT], Any],
    concurrency: int,
    name: str,
    consume: Callable[[Call[MessageT]], Awaitable[None]],
) -> None:
    """Run ``consume(call)``, where ``await call(m)`` runs ``fn(m)`` in a pool.

    The pool has ``concurrency`` threads or processes, is named after the
    worker, and is closed when ``consume`` ends, however it ends. When
    ``consume`` fails, it has already given the calls in flight their grace
    period and cancelled the awaits of those still running: the pool is then
    closed without waiting for them (threads abandoned, processes
    terminated), as for a forced stop, or a hung call would hold the failed
    worker forever.
    """
    from ._pools import ProcessPool, ThreadPool  # only an offloading consumer needs them

    pool: ThreadPool | ProcessPool = (
        ThreadPool(concurrency, name=f"fluid:{name}")
        if run_in == "thread"
        else ProcessPool(concurrency, name=f"fluid:{name}")
    )

    async def call(message: MessageT) -> Any:
        result = await pool.run(fn, message)
        if result is not None and inspect.isawaitable(result):
            # a lambda wrapping a coroutine function: nothing ran it, in a
            # thread with no loop; the message fails instead of passing
            if isinstance(result, Coroutine):
                result.close()  # no "never awaited" warning besides
            raise TypeError(
                f"on_message {fn!r} returned an awaitable in a {run_in}: run_in="
                f"{run_in!r} calls a sync function; an async handler runs on the loop"
            )
        return result

    try:
        await consume(call)
    except Exception:
        if pool.in_flight:  # calls the failed run gave up on
            await _close_without_waiting(pool)
        else:
            await pool.aclose()
        raise
    except BaseException:
        await pool.aclose()  # cancelled: the pool stops waiting by itself
        raise
    await pool.aclose()


async def _close_without_waiting(pool: ThreadPool | ProcessPool) -> None:
    """Close ``pool`` as a cancelled owner does: its running calls are not waited for.

    ``aclose()`` whose wait is cancelled abandons running threads and
    terminates running processes; a deadline already past cancels it at its
    first wait.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0):
            await pool.aclose()
