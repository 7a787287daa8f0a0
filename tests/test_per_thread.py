"""What fluid keeps once per thread (``fluid._per_thread``), never shared across threads.

A worker remembers its loop's thread as one int object per thread, and its
sleep's timer runs in its thread's empty context instead of a copy of the
caller's: 96 bytes less a sleeping worker. A context entered by two threads
at once raises ``RuntimeError``, so the timers of two loops in two threads,
firing together, are the case that must hold.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import fluid
from fluid._per_thread import thread_ident, timer_context

from .helpers import tiny_switch_interval

THREADS = 3
WORKERS = 200
BEATS = 40


def in_thread(function: object) -> object:
    """What ``function()`` returns when called in a new thread."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(function()))  # type: ignore[operator]
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return results[0]


def test_a_thread_gets_its_own_ident_as_one_object() -> None:
    assert thread_ident() == threading.get_ident()
    assert thread_ident() is thread_ident()
    assert in_thread(thread_ident) != thread_ident()


def test_a_thread_gets_its_own_empty_timer_context() -> None:
    marker: contextvars.ContextVar[int] = contextvars.ContextVar("marker")
    marker.set(1)
    context = timer_context()
    assert context is timer_context()
    assert marker not in context  # empty: the caller's variables are not copied
    assert len(context) == 0
    assert in_thread(timer_context) is not context


async def test_workers_of_one_thread_share_its_ident_object() -> None:
    async def noop() -> None:
        pass

    workers = [fluid.WorkerFunction(noop, heartbeat=60, name=f"w{i}") for i in range(3)]
    tree = fluid.Workers(*workers)
    async with tree:
        idents = {id(w._thread_id) for w in workers}
    assert len(idents) == 1


async def test_a_workers_task_is_named_by_its_name_string_itself() -> None:
    """No formatted string per task: the task holds the worker's own name."""

    async def noop() -> None:
        pass

    worker = fluid.WorkerFunction(noop, heartbeat=60, name="poll")
    async with worker:
        task = worker._task
        assert task is not None
        assert task.get_name() is worker.worker_name


def run_loop_with_sleepers(errors: list[BaseException]) -> int:
    """Run a loop in this thread whose workers sleep short timers; return the beats counted."""
    beats = 0
    loop_errors: list[object] = []
    over: asyncio.Event | None = None

    async def beat() -> bool:
        nonlocal beats
        beats += 1
        if beats >= WORKERS * BEATS and over is not None:
            over.set()
        return beats < WORKERS * BEATS

    def report(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        loop_errors.append(context)
        if over is not None:
            over.set()

    async def main() -> None:
        nonlocal over
        over = asyncio.Event()
        asyncio.get_running_loop().set_exception_handler(report)
        workers = [
            fluid.WorkerFunction(beat, heartbeat=0.001, name=f"w{i}") for i in range(WORKERS)
        ]
        tree = fluid.Workers(*workers, stopping_grace_period=5)
        await tree.startup()
        try:
            async with asyncio.timeout(10):  # a lost wake-up shows here, not as a hang
                await over.wait()
        finally:
            await tree.shutdown()

    try:
        asyncio.run(main())
    except BaseException as exc:
        errors.append(exc)
    if loop_errors:
        errors.append(AssertionError(f"the loop reported: {loop_errors[:3]}"))
    return beats


def test_sleep_timers_of_loops_in_three_threads_fire_together_without_error() -> None:
    errors: list[BaseException] = []
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda: counts.append(run_loop_with_sleepers(errors)))
        for _ in range(THREADS)
    ]
    with tiny_switch_interval():  # the loops' timers interleave as much as they can
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(counts) == THREADS
    assert all(count >= WORKERS * BEATS for count in counts), counts
