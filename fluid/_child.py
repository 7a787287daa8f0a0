"""A child process watched from the event loop: the plumbing of process workers and pools.

Why it is shaped this way:

* ``multiprocessing`` is imported on first use, never by ``import fluid``.
* The end of a child is seen from its sentinel, a pipe the kernel closes when
  the process exits for any reason (return, exception, SIGKILL).
  ``loop.add_reader`` on it wakes the loop at once, with no thread per child
  and no polling, and the child is joined right there: it never lingers as
  a zombie.
* Messages from the child arrive on one duplex pipe, read with
  ``loop.add_reader`` too. A child writes its last message before it exits,
  and the sentinel callback reads whatever is left before it reports the
  exit, so the order of the two wake-ups does not matter.
* Errors cross as ``(pickled error or None, summary, formatted traceback)``:
  traceback objects do not pickle, so the text travels next to the error and
  is added to it as a note. An error that does not pickle (or unpickle)
  becomes a ``ProcessWorkerError`` that carries the text.
* A forced stop is SIGTERM, then SIGKILL after ``kill_after`` seconds. The
  wait for the exit survives cancellation (a second cancel kills at once), so
  a child is always joined.
* In a child that serves an async worker, the stop request and SIGTERM are
  both seen by the child's loop (``add_reader``, ``add_signal_handler``): a
  stop request stops the worker gracefully, SIGTERM forces it, so that its
  ``on_shutdown`` hooks still run before SIGKILL would come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from ._errors import FluidError
from ._group import force
from ._lifecycle import LifecycleEvent
from ._worker import Worker

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess

__all__ = [
    "KILL_AFTER",
    "Child",
    "STOP_CALLS",
    "PackedError",
    "ProcessWorkerError",
    "describe_exit",
    "get_context",
    "kill_all",
    "pack_error",
    "serve_calls",
    "serve_worker",
    "unpack_error",
]

logger = logging.getLogger("fluid")

KILL_AFTER = 0.5
"""Default seconds between SIGTERM and SIGKILL when a child is forced to stop."""

_FINAL_EVENTS = ("stopped", "force_stopped", "crashed")

STOP_CALLS = b""
"""What a pool sends a process of ``serve_calls`` to make it exit."""

PackedError: TypeAlias = tuple[bytes | None, str, str]
"""An error on its way from a child: pickled (or None), ``"Type: message"``, traceback."""


class ProcessWorkerError(FluidError):
    """A child process failed without a Python error of its own to show for it.

    Raised for the child process of a [`ProcessWorker`][fluid.ProcessWorker]
    or of a [`ProcessPool`][fluid.ProcessPool] that exited with a non-zero
    code or was killed by a signal (the message names the code or the
    signal), that raised an error which could not be pickled back (the
    message names it and ``child_traceback`` has its traceback), or that
    could not be started because what it runs does not pickle.

    Attributes:
        exitcode: the child's exit code, negative for a signal (``-9`` is
            SIGKILL), or ``None`` when it did not exit.
        child_traceback: the traceback formatted in the child, or ``""``.

    Example:
        ```python
        try:
            await worker.wait_for_shutdown()
        except fluid.ProcessWorkerError as exc:
            print(exc)  # the process of worker 'crunch' (pid 4242) was killed by SIGKILL
        ```
    """

    def __init__(
        self, message: str, *, exitcode: int | None = None, child_traceback: str = ""
    ) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.child_traceback = child_traceback


def get_context(mp_context: object) -> BaseContext:
    """The multiprocessing context for a start method name, a context, or None (spawn)."""
    import multiprocessing
    from multiprocessing.context import BaseContext

    if mp_context is None:
        mp_context = "spawn"
    if isinstance(mp_context, BaseContext):
        return mp_context
    if not isinstance(mp_context, str):
        raise TypeError(f"mp_context must be a start method name or a context, got {mp_context!r}")
    methods = multiprocessing.get_all_start_methods()
    if mp_context not in methods:
        raise ValueError(f"unknown start method {mp_context!r}: expected one of {methods}")
    return multiprocessing.get_context(mp_context)


def describe_exit(exitcode: int) -> str:
    """``"exited with code 3"`` or ``"was killed by SIGKILL"``."""
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"was killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"was killed by signal {-exitcode}"


def pack_error(error: BaseException) -> PackedError:
    """What a child sends back for ``error``: see the module docstring."""
    text = "".join(traceback.format_exception(error))
    try:
        data: bytes | None = pickle.dumps(error)
    except Exception:
        data = None
    return data, f"{type(error).__name__}: {error}", text


def unpack_error(packed: PackedError, where: str) -> Exception:
    """The error a child sent, with its traceback as a note (see the module docstring)."""
    data, summary, text = packed
    error: object = None
    if data is not None:
        with contextlib.suppress(Exception):
            error = pickle.loads(data)
    if not isinstance(error, Exception):
        error = ProcessWorkerError(
            f"{where} raised {summary} (the error could not be sent back: it does not pickle)",
            child_traceback=text,
        )
    error.add_note(f"Traceback in {where}:\n{text.rstrip()}")
    return error


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Child:
    """A started child process and its pipe, watched from the event loop.

    ``on_message`` gets each message the child sends (bytes), ``on_exit`` is
    called once after the child was joined; both get the child first.
    """

    __slots__ = (
        "_conn",
        "_loop",
        "_on_exit",
        "_on_message",
        "_process",
        "_reading",
        "_sentinel",
        "_waiters",
        "exitcode",
        "pid",
    )

    def __init__(
        self,
        process: BaseProcess,
        conn: Connection,
        on_message: Callable[[Child, bytes], None],
        on_exit: Callable[[Child], None],
    ) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._process = process
        self._conn = conn
        self._on_message = on_message
        self._on_exit = on_exit
        self._waiters: list[asyncio.Future[None]] = []
        self.pid: int = process.pid or 0
        self.exitcode: int | None = None
        self._sentinel = process.sentinel
        self._reading = True
        loop.add_reader(self._sentinel, self._process_ended)
        loop.add_reader(conn.fileno(), self._readable)

    @classmethod
    def start(
        cls,
        context: BaseContext,
        target: Callable[..., object],
        args: tuple[Any, ...],
        *,
        name: str,
        daemon: bool,
        on_message: Callable[[Child, bytes], None],
        on_exit: Callable[[Child], None],
    ) -> Child:
        """Start ``target(*args, conn)`` in a child process and watch it.

        Raises:
            Exception: whatever ``Process.start()`` raised (with spawn, a
                pickling error for what does not pickle); nothing is left open.
        """
        parent_conn, child_conn = context.Pipe()
        process = context.Process(  # type: ignore[attr-defined]
            target=target, args=(*args, child_conn), name=name, daemon=daemon
        )
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # the child has its own copy
        return cls(process, parent_conn, on_message, on_exit)

    @property
    def exited(self) -> bool:
        """True once the child exited and was joined."""
        return self.exitcode is not None

    def send(self, data: bytes) -> bool:
        """Send ``data`` to the child; False if it is gone."""
        if self.exited:
            return False
        try:
            self._conn.send_bytes(data)
        except OSError:  # it died: the sentinel will tell
            return False
        return True

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the child exited or ``timeout`` passed; True if it exited."""
        if self.exited:
            return True
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        handle = None if timeout is None else self._loop.call_later(timeout, _release, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return self.exited

    async def kill(self, kill_after: float) -> None:
        """SIGTERM, then SIGKILL after ``kill_after`` seconds; return once it was joined.

        A cancellation while waiting kills at once; it is raised once the child
        was joined.
        """
        cancelled = False
        if not self.exited:
            self._process.terminate()
            try:
                await self.wait(kill_after)
            except asyncio.CancelledError:
                cancelled = True
        if not self.exited:
            if cancelled:
                logger.warning(
                    "child process %s: the wait for its exit was cancelled: killing it (SIGKILL)",
                    self.pid,
                )
            else:
                logger.warning(
                    "child process %s ignored SIGTERM for %ss: killing it (SIGKILL)",
                    self.pid,
                    kill_after,
                )
            self._process.kill()
        while not self.exited:
            try:
                await self.wait()
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def _readable(self) -> None:
        try:
            data = self._conn.recv_bytes()
        except (EOFError, OSError):  # it is exiting: the sentinel will tell
            self._stop_reading()
            return
        self._on_message(self, data)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._conn.fileno())

    def _process_ended(self) -> None:
        self._loop.remove_reader(self._sentinel)
        with contextlib.suppress(EOFError, OSError):
            while self._reading and self._conn.poll():
                self._on_message(self, self._conn.recv_bytes())
        self._stop_reading()
        self._conn.close()
        process = self._process
        process.join()  # it exited: this only reaps it
        self.exitcode = process.exitcode if process.exitcode is not None else -1
        process.close()
        for waiter in self._waiters:
            _release(waiter)
        self._on_exit(self)


async def serve_worker(worker: Worker, conn: Connection, ready: Callable[[], None]) -> None:
    """In a child: run ``worker`` until it ends or the parent asks it to stop.

    ``ready`` is called once the worker runs. A message (or the end of the
    pipe) on ``conn`` stops the worker gracefully; SIGTERM forces it.

    Raises:
        Exception: the error the worker ended with.
    """
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def stop_requested() -> None:  # the message stays unread: stop watching at once
        loop.remove_reader(fd)
        _release(stop)

    def ended(event: LifecycleEvent) -> None:  # the worker ended on its own
        if event.worker is worker and event.kind in _FINAL_EVENTS:
            _release(stop)

    task = asyncio.current_task()
    assert task is not None
    loop.add_reader(fd, stop_requested)
    loop.add_signal_handler(signal.SIGTERM, task.cancel, "SIGTERM")
    worker.add_observer(ended)
    try:
        await worker.startup()
        ready()
        await stop
        await worker.shutdown()
    except asyncio.CancelledError:  # SIGTERM: the parent is forcing the stop
        await force([worker], "its process got SIGTERM")
    finally:
        worker.remove_observer(ended)
        loop.remove_reader(fd)
        loop.remove_signal_handler(signal.SIGTERM)


async def kill_all(children: list[Child]) -> None:
    """Terminate, then kill, every child; join them all even if cancelled again."""
    cancelled = False
    for child in children:
        try:
            await child.kill(KILL_AFTER)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def serve_calls(conn: Connection) -> None:
    """In a pool process: receive a call, send its outcome, until ``STOP_CALLS`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(EOFError, OSError):  # the parent is gone
        while data := conn.recv_bytes():
            conn.send_bytes(_run_call(data))


def _run_call(data: bytes) -> bytes:
    try:
        fn, args = pickle.loads(data)
        return pickle.dumps((True, fn(*args)))
    except Exception as exc:
        return pickle.dumps((False, pack_error(exc)))
