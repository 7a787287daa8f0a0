"""Executor adapters: await a sync callable in a bounded thread pool or process pool.

Why fluid has its own pools, and not ``concurrent.futures`` or anyio's
``to_thread`` / ``to_process``: measurement, on the project's 2-core Linux
machine with Python 3.11 (``python -m bench --case executors`` gives today's
figures).

20,000 trivial calls from 64 tasks through 4 threads, calls/s:

    loop.run_in_executor + ThreadPoolExecutor     62,000  (uvloop  77,000)
    anyio.to_thread.run_sync + CapacityLimiter    21,000  (uvloop  26,000)
    ThreadPool.run                               298,000  (uvloop 522,000)

With 2 spawned processes, one trivial call took 318 us through
``ProcessPoolExecutor``, 108 us through ``anyio.to_process`` and 40 us through
``ProcessPool``; 32 concurrent callers got 8,300, 13,200 and 27,400 calls/s.

Where the others spend it: ``run_in_executor`` makes a
``concurrent.futures.Future`` per call, wraps it in an asyncio future and
wakes the loop with a write to its self-pipe per result;
``ProcessPoolExecutor`` puts a management thread and a feeder thread between
the loop and each child; anyio adds a cancel scope and a limiter acquisition
per call, and its process pool is global to the event loop: it outlives its
users and cannot be closed, owned by a worker or given a start method.

How these pools work:

* ``ThreadPool``: up to N daemon threads, started on demand, take calls from
  a ``queue.SimpleQueue`` and append results to a deque. The first result of
  a batch wakes the loop with one ``call_soon_threadsafe``, which delivers
  every result ready by then (the same lost-wake-up-free ordering as the
  queue consumers: append, then look at the flag).
* ``ProcessPool``: up to N child processes, started on demand, each with a
  duplex pipe. A call is pickled on the loop (so an unpicklable argument
  fails at the call), written to an idle child, and its result read with
  ``loop.add_reader``: no thread at all. A child that crashes fails only the
  call it was running, and a new child takes its place.
* Cancelling an ``await pool.run(...)`` drops a call that has not started.
  A call that started runs to its end, since Python cannot interrupt a thread
  and killing a process would lose its state; its result is discarded, and it
  keeps its thread or process until then, so at most N calls run at once.
* A pool closed by a cancelled task (a worker that owns it being forced to
  stop) does not wait for its calls: that would stretch a forced stop past
  its grace period (``Task.cancelling()`` tells, so the owner's
  ``finally: await pool.aclose()`` needs nothing special). Processes are
  terminated; threads, which cannot be, are abandoned with one warning
  naming them and their functions.
* Each thread call runs in a copy of the caller's context
  (``contextvars.copy_context``): context variables flow into threads. They
  do not cross into processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import pickle
import queue
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from ._child import (
    STOP_CALLS,
    Child,
    ProcessWorkerError,
    describe_exit,
    get_context,
    kill_all,
    serve_calls,
    unpack_error,
)
from ._pipe import Message
from ._validate import check_name
from ._waiting import release

__all__ = ["ProcessPool", "ThreadPool"]

logger = logging.getLogger("fluid")

RetT = TypeVar("RetT")
ArgsT = TypeVarTuple("ArgsT")

_Call = tuple[asyncio.Future[Any], contextvars.Context, Callable[..., Any], tuple[Any, ...]]
_Result = tuple[asyncio.Future[Any], BaseException | None, Any]


def _check_max_workers(max_workers: object) -> int:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int):
        raise TypeError(f"max_workers must be an integer, got {max_workers!r}")
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
    return max_workers


def _being_cancelled() -> bool:
    """True in a task that was cancelled and did not swallow it (``Task.cancelling()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Pool(ABC):
    """What both pools share: the bound loop, the limit, closing."""

    __slots__ = ("_closed", "_loop", "_max_workers", "_name", "_no_more")

    def __init__(self, max_workers: int, name: str, default_name: str) -> None:
        self._max_workers = _check_max_workers(max_workers)
        self._name = check_name(name) or default_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._no_more: asyncio.Future[None] | None = None  # released when all are gone

    @property
    def max_workers(self) -> int:
        """The most calls that run at once."""
        return self._max_workers

    def _bind(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise RuntimeError(f"pool {self._name!r} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(f"pool {self._name!r} belongs to another event loop")
        return loop

    async def _wait_all_gone(self, alive: Callable[[], bool]) -> None:
        if alive():
            assert self._loop is not None
            if self._no_more is None:
                self._no_more = self._loop.create_future()
            await asyncio.shield(self._no_more)

    def _all_gone(self) -> None:
        """The last thread or process ended: wake ``_wait_all_gone``, if it waits."""
        if self._no_more is not None:
            release(self._no_more)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @abstractmethod
    async def aclose(self) -> None:
        """Close the pool and wait until its threads or processes ended."""


class ThreadPool(_Pool):
    """Run sync callables in at most ``max_workers`` threads, awaiting their results.

    Threads start on demand and are reused; at most ``max_workers`` calls run
    at once and the others wait their turn, in order. Each call runs in a copy
    of the caller's context, so context variables are visible in the thread.
    An exception raised by the callable is raised by ``await pool.run(...)``
    with its traceback.

    Cancelling the ``await`` drops a call that has not started. A call that
    started runs to its end in its thread (a thread cannot be interrupted);
    its result is discarded and it keeps its thread until then. Closed by a
    cancelled task (a worker that owns the pool forced to stop),
    [`aclose`][fluid.ThreadPool.aclose] does not wait for running calls: it
    abandons their threads, with one warning naming them.

    Args:
        max_workers: the most threads, and so the most calls running at once.
        name: a prefix for the threads' names.

    Raises:
        TypeError: ``max_workers`` is not an integer.
        ValueError: ``max_workers`` is less than 1.

    Example:
        ```python
        async with fluid.ThreadPool(4) as pool:
            digest = await pool.run(hash_file, "big.iso")
            pages = await asyncio.gather(*(pool.run(fetch, url) for url in urls))
        ```
    """

    __slots__ = (
        "_abandoned",
        "_alive",
        "_in_flight",
        "_queue",
        "_results",
        "_running",
        "_threads",
        "_wakeup_pending",
    )

    def __init__(self, max_workers: int, *, name: str = "") -> None:
        super().__init__(max_workers, name, "fluid:thread_pool")
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._results: deque[_Result] = deque()
        self._threads: list[threading.Thread] = []
        self._running: list[Callable[..., Any] | None] = []  # per thread: its call's function
        self._abandoned = False
        self._alive = 0
        self._in_flight = 0
        self._wakeup_pending = False

    async def run(self, fn: Callable[[Unpack[ArgsT]], RetT], /, *args: *ArgsT) -> RetT:
        """Call ``fn(*args)`` in a thread of the pool and return its result.

        Raises:
            RuntimeError: the pool is closed, or bound to another event loop.
            Exception: whatever ``fn`` raised.

        Example:
            ```python
            size = await pool.run(os.path.getsize, path)
            ```
        """
        loop = self._bind()
        future: asyncio.Future[RetT] = loop.create_future()
        self._queue.put((future, contextvars.copy_context(), fn, args))
        self._in_flight += 1
        if self._in_flight > len(self._threads) and len(self._threads) < self._max_workers:
            self._start_thread(loop)
        return await future

    @property
    def in_flight(self) -> int:
        """Calls submitted whose result was not delivered yet (running or waiting)."""
        return self._in_flight

    def close(self) -> None:
        """Accept no more calls; threads end once the calls already submitted are done.

        Returns at once; idempotent.
        """
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    async def aclose(self) -> None:
        """Close the pool and wait until its threads ended.

        Calls already submitted still run, and this waits for them, unless
        the caller is cancelled: if this wait is cancelled, or if ``aclose()``
        is called by a task being cancelled (in the ``finally`` or
        ``__aexit__`` of a cancelled block, as when a worker that owns the
        pool is forced to stop), the pool stops waiting at once. Calls not
        started are then dropped (their awaits are cancelled), and the threads
        of the running calls are abandoned: a thread cannot be interrupted.
        One warning names their threads and functions; each runs on to the
        end of its call as a daemon thread, then ends (``in_flight`` counts
        them until then).
        """
        self.close()
        if _being_cancelled():
            self._stop_waiting()
            return
        try:
            await self._wait_all_gone(lambda: self._alive > 0)
        except asyncio.CancelledError:
            self._stop_waiting()
            raise
        for thread in self._threads:
            thread.join()  # each one's last step just ran: this returns at once

    def _stop_waiting(self) -> None:
        """The forced close: drop the calls not started, abandon the running ones."""
        if self._abandoned:
            return
        self._abandoned = True
        dropped = 0
        with contextlib.suppress(queue.Empty):
            while True:
                call = self._queue.get_nowait()
                if call is not None:
                    call[0].cancel()
                    dropped += 1
        self._in_flight -= dropped
        for _ in self._threads:
            self._queue.put(None)
        running = [
            f"{thread.name} ({getattr(fn, '__qualname__', None) or fn!r})"
            for thread, fn in zip(self._threads, self._running, strict=True)
            if fn is not None
        ]
        if running:
            logger.warning(
                "thread pool %r was closed while cancelled: abandoning %d running call(s) in "
                "%s; a thread cannot be interrupted: each runs on as a daemon thread until "
                "its call returns",
                self._name,
                len(running),
                ", ".join(running),
            )

    def _start_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        self._running.append(None)
        thread = threading.Thread(
            target=self._work,
            args=(loop, len(self._threads)),
            name=f"{self._name}-{len(self._threads)}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        self._alive += 1

    def _work(self, loop: asyncio.AbstractEventLoop, index: int) -> None:
        """The loop of a pool thread."""
        get = self._queue.get
        running = self._running
        while (call := get()) is not None:
            running[index] = call[2]  # for the warning of a forced close
            self._results.append(_call(call))
            running[index] = None
            del call  # hold no argument or result while idle
            if not self._wakeup_pending:
                self._wakeup_pending = True
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(self._deliver)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._thread_ended)

    def _deliver(self) -> None:
        self._wakeup_pending = False  # before draining: a later append wakes again
        results = self._results
        while results:
            future, error, value = results.popleft()
            self._in_flight -= 1
            if future.done():  # cancelled
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _thread_ended(self) -> None:
        self._alive -= 1
        if self._alive == 0:
            self._all_gone()


def _call(call: _Call) -> _Result:
    future, context, fn, args = call
    if future.cancelled():  # a plain read of its state: safe from this thread
        return future, None, None
    try:
        return future, None, context.run(fn, *args)
    except BaseException as exc:
        return future, exc, None


class ProcessPool(_Pool):
    """Run picklable callables in at most ``max_workers`` child processes.

    Processes start on demand (``spawn`` by default) and are reused; at most
    ``max_workers`` calls run at once and the others wait their turn, in
    order. The callable and its arguments are pickled at the call, so they
    must be module-level functions and picklable values. An exception raised
    in the child is raised by ``await pool.run(...)`` with the child's
    traceback as a note. A child that crashes or is killed fails the call it
    was running with a [`ProcessWorkerError`][fluid.ProcessWorkerError] naming
    the exit code or signal, and is replaced for the next call.

    Cancelling the ``await`` drops a call that has not started; a call that
    started runs to its end in its process, whose result is discarded.
    Closed by a cancelled task (a worker that owns the pool forced to stop),
    [`aclose`][fluid.ProcessPool.aclose] terminates the processes still
    running calls instead of waiting for them. Arguments and results cross
    the pipe without blocking the event loop; pickling them is done on the
    loop (about a millisecond per megabyte), at the call.

    Args:
        max_workers: the most processes, and so the most calls running at once.
        mp_context: a start method name (``"spawn"``, ``"forkserver"``,
            ``"fork"``) or a multiprocessing context; ``None`` means spawn.
        name: a prefix for the processes' names.

    Raises:
        TypeError: ``max_workers`` is not an integer.
        ValueError: ``max_workers`` is less than 1, or an unknown start method.

    Example:
        ```python
        async with fluid.ProcessPool(2) as pool:
            primes = await asyncio.gather(*(pool.run(count_primes, n) for n in ranges))
        ```
    """

    __slots__ = ("_busy", "_children", "_context", "_idle", "_started", "_waiting")

    def __init__(self, max_workers: int, *, mp_context: Any = None, name: str = "") -> None:
        super().__init__(max_workers, name, "fluid:process_pool")
        self._context = get_context(mp_context)
        self._children: set[Child] = set()
        self._idle: list[Child] = []
        self._busy: dict[Child, asyncio.Future[Any]] = {}
        self._waiting: deque[tuple[asyncio.Future[Any], bytes]] = deque()
        self._started = 0  # processes started so far: names them

    async def run(self, fn: Callable[[Unpack[ArgsT]], RetT], /, *args: *ArgsT) -> RetT:
        """Call ``fn(*args)`` in a process of the pool and return its result.

        Raises:
            RuntimeError: the pool is closed, or bound to another event loop.
            ProcessWorkerError: the process died while running the call.
            Exception: whatever ``fn`` raised, or the error pickling raised
                for an argument that does not pickle.

        Example:
            ```python
            digest = await pool.run(hashlib.sha256, data)
            ```
        """
        loop = self._bind()
        try:
            data = pickle.dumps((fn, args))
        except Exception as exc:
            exc.add_note("ProcessPool.run() pickles the function and its arguments")
            raise
        future: asyncio.Future[RetT] = loop.create_future()
        self._waiting.append((future, data))
        self._dispatch()
        return await future

    @property
    def in_flight(self) -> int:
        """Calls submitted whose result was not delivered yet (running or waiting)."""
        return len(self._busy) + len(self._waiting)

    def close(self) -> None:
        """Accept no more calls; processes exit once the calls already submitted are done.

        Returns at once; idempotent. The processes are joined as they exit.
        """
        if not self._closed:
            self._closed = True
            self._stop_idle()

    async def aclose(self) -> None:
        """Close the pool and wait until its processes exited.

        Calls already submitted still run, and this waits for them, unless
        the caller is cancelled: if this wait is cancelled, or if ``aclose()``
        is called by a task being cancelled (in the ``finally`` or
        ``__aexit__`` of a cancelled block, as when a worker that owns the
        pool is forced to stop), the calls not started are dropped (their
        awaits are cancelled) and the processes are terminated (SIGTERM,
        then SIGKILL after half a second) and joined. A wait cancelled again
        kills at once; the cancellation propagates once all were joined.
        """
        self.close()
        if _being_cancelled():
            await self._terminate()
            return
        try:
            await self._wait_all_gone(lambda: bool(self._children))
        except asyncio.CancelledError:
            await self._terminate()
            raise

    async def _terminate(self) -> None:
        for future, _ in self._waiting:
            future.cancel()
        self._waiting.clear()
        if self._busy:
            logger.warning(
                "process pool %r was closed while cancelled: terminating %d process(es) "
                "running a call",
                self._name,
                len(self._busy),
            )
        await kill_all(list(self._children))

    def _dispatch(self) -> None:
        """Hand waiting calls to idle processes, starting processes up to the limit.

        A process just started takes its call at once: the call waits in its
        pipe until the process reads it.
        """
        waiting = self._waiting
        while waiting:
            if waiting[0][0].done():  # cancelled while waiting
                waiting.popleft()
                continue
            if self._idle:
                child = self._idle.pop()
            elif len(self._children) < self._max_workers:
                child = self._start_child()
            else:
                return
            future, data = waiting.popleft()
            self._busy[child] = future
            child.send(data)  # if it just died, its exit fails the call
        if self._closed:
            self._stop_idle()

    def _start_child(self) -> Child:
        child = Child.start(
            self._context,
            serve_calls,
            (),
            name=f"{self._name}-{self._started}",
            daemon=True,
            on_message=self._on_result,
            on_exit=self._on_exit,
        )
        self._started += 1
        self._children.add(child)
        return child

    def _stop_idle(self) -> None:
        while self._idle:
            self._idle.pop().send(STOP_CALLS)

    def _on_result(self, child: Child, data: Message) -> None:
        future = self._busy.pop(child, None)
        if future is not None and not future.done():
            try:
                ok, value = pickle.loads(data)
            except Exception as exc:
                future.set_exception(exc)
            else:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(unpack_error(value, f"pool process {child.pid}"))
        self._idle.append(child)
        self._dispatch()

    def _on_exit(self, child: Child) -> None:
        self._children.discard(child)
        with contextlib.suppress(ValueError):
            self._idle.remove(child)
        future = self._busy.pop(child, None)
        if child.start_error is not None:  # cannot start a process: fail what waits
            self._fail_waiting(child.start_error, future)
        elif future is not None and not future.done():
            code = child.exitcode or 0
            future.set_exception(
                ProcessWorkerError(
                    f"pool process {child.pid} {describe_exit(code)} while running a call",
                    exitcode=code,
                )
            )
        self._dispatch()  # a new process takes the waiting calls
        if not self._children:
            self._all_gone()

    def _fail_waiting(self, error: BaseException, future: asyncio.Future[Any] | None) -> None:
        futures = [future] if future is not None else []
        futures += [waiting for waiting, _ in self._waiting]
        self._waiting.clear()
        for waiting in futures:
            if not waiting.done():
                waiting.set_exception(error)
