"""A child process watched from the event loop: the plumbing of process workers and pools.

Why it is shaped this way:

* ``multiprocessing`` is imported on first use, never by ``import fluid``.
* The end of a child is seen from its sentinel, a pipe the kernel closes when
  the process exits for any reason (return, exception, SIGKILL).
  ``loop.add_reader`` on it wakes the loop at once, with no thread per child
  and no polling, and the child is joined right there: it never lingers as
  a zombie.
* The process starts without blocking the loop: ``spawn`` and
  ``forkserver`` start it from a short-lived thread (``Process.start()``
  pickles the target and waits for the new interpreter to take it), and the
  loop awaits that thread's report. ``fork`` returns at once and forks
  inline: forking from a thread is what asyncio and CPython warn about.
* Messages cross one socket pair. The child has a plain, blocking
  ``Connection``; the parent reads and writes its end through the loop
  (``_pipe.MessagePipe``): no message, of any size, blocks the loop. A
  child writes its last message before it exits, and the sentinel callback
  reads whatever is left before it reports the exit, so the order of the
  two wake-ups does not matter.
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
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from ._errors import FluidError
from ._lifecycle import Transition
from ._pipe import Message, MessagePipe, pipe_pair
from ._waiting import release, run_worker, wait_even_if_cancelled, wait_released
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


def unpack_error(packed: PackedError, where: str) -> BaseException:
    """The error a child sent, with its traceback as a note (see the module docstring)."""
    data, summary, text = packed
    error: object = None
    if data is not None:
        with contextlib.suppress(Exception):
            error = pickle.loads(data)
    if not isinstance(error, BaseException):
        error = ProcessWorkerError(
            f"{where} raised {summary} (the error could not be sent back: it does not pickle)",
            child_traceback=text,
        )
    error.add_note(f"Traceback in {where}:\n{text.rstrip()}")
    return error


def _start_process(process: BaseProcess, child_end: Connection) -> BaseException | None:
    """Start ``process``; return the error that prevented it. Runs in a boot thread."""
    try:
        process.start()
    except BaseException as exc:
        return exc
    finally:
        child_end.close()  # the child has its own copy
    return None


class Child:
    """A child process and its message pipe, watched from the event loop.

    The process starts at once: inline with the ``fork`` start method (a
    fork returns at once), in a short-lived thread otherwise (``spawn`` and
    ``forkserver`` write the pickled target to the new process and wait on
    it). Messages may be sent right away: they wait in the socket until the
    child reads them. ``on_message`` gets each message the child sends
    (bytes, or a bytearray for a large one), ``on_exit`` is called once after
    the child was joined, or once if it could not be started
    (``start_error`` then says why); both get the child first.
    """

    __slots__ = (
        "_boot_thread",
        "_booted",
        "_loop",
        "_on_exit",
        "_on_message",
        "_pipe",
        "_process",
        "_sentinel",
        "_waiters",
        "exitcode",
        "pid",
        "start_error",
    )

    def __init__(
        self,
        context: BaseContext,
        target: Callable[..., object],
        args: tuple[Any, ...],
        *,
        name: str,
        daemon: bool,
        on_message: Callable[[Child, Message], None],
        on_exit: Callable[[Child], None],
    ) -> None:
        from multiprocessing.connection import Connection

        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._on_exit = on_exit
        self._waiters: list[asyncio.Future[None]] = []
        self._booted: asyncio.Future[None] = self._loop.create_future()
        self._boot_thread: threading.Thread | None = None
        self._sentinel: int | None = None
        self.pid: int = 0
        self.exitcode: int | None = None
        self.start_error: BaseException | None = None
        parent_end, child_sock = pipe_pair()
        child_end = Connection(child_sock.detach())
        self._pipe = MessagePipe(parent_end, lambda data: self._on_message(self, data))
        self._process = process = context.Process(  # type: ignore[attr-defined]
            target=target, args=(*args, child_end), name=name, daemon=daemon
        )
        if context.get_start_method() == "fork":  # a fork returns at once
            error = _start_process(process, child_end)
            if error is None:
                self._boot_done(None)
            else:  # reported on the next turn, as from a boot thread
                self._loop.call_soon(self._boot_done, error)
        else:
            self._boot_thread = thread = threading.Thread(
                target=self._boot, args=(child_end,), name=f"fluid:start:{name}", daemon=True
            )
            thread.start()

    @classmethod
    def start(
        cls,
        context: BaseContext,
        target: Callable[..., object],
        args: tuple[Any, ...],
        *,
        name: str,
        daemon: bool,
        on_message: Callable[[Child, Message], None],
        on_exit: Callable[[Child], None],
    ) -> Child:
        """Start ``target(*args, conn)`` in a child process and watch it.

        Returns at once; [`started`][] tells when (and whether) the process
        runs. ``conn`` is the child's end of the pipe, a blocking
        ``multiprocessing`` ``Connection``.
        """
        return cls(
            context,
            target,
            args,
            name=name,
            daemon=daemon,
            on_message=on_message,
            on_exit=on_exit,
        )

    @property
    def exited(self) -> bool:
        """True once the child exited and was joined (or could not be started)."""
        return self.exitcode is not None or self.start_error is not None

    async def started(self) -> None:
        """Wait until the process was started (not until its code runs).

        The wait is shielded: cancelling it leaves the start to finish.

        Raises:
            BaseException: what ``Process.start()`` raised (with ``spawn``,
                a pickling error for what does not pickle).
        """
        await asyncio.shield(self._booted)
        if self.start_error is not None:
            raise self.start_error

    def send(self, data: bytes) -> bool:
        """Send ``data`` to the child without blocking; False if it is gone."""
        if self.exited:
            return False
        return self._pipe.send(data)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the child exited or ``timeout`` passed; True if it exited."""
        if self.exited:
            return True
        waiter = self._exit_waiter()
        try:
            await wait_released(waiter, timeout)
        finally:
            self._waiters.remove(waiter)
        return self.exited

    def terminate(self) -> None:
        """Send SIGTERM to a child that was started and still runs."""
        if self._booted.done() and not self.exited:
            self._process.terminate()

    async def kill(self, kill_after: float) -> None:
        """SIGTERM, then SIGKILL after ``kill_after`` seconds; return once it was joined.

        A child still starting is first let start (the start cannot be
        interrupted). A cancellation while waiting kills at once; it is
        raised once the child was joined.
        """
        cancelled: asyncio.CancelledError | None = None
        try:
            await wait_even_if_cancelled([self._booted])
        except asyncio.CancelledError as exc:
            cancelled = exc
        if not self.exited:
            self._process.terminate()
            try:
                await self.wait(kill_after)
            except asyncio.CancelledError as exc:
                cancelled = exc
        if not self.exited:
            if cancelled is not None:
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
            waiter = self._exit_waiter()
            try:
                await wait_even_if_cancelled([waiter])
            except asyncio.CancelledError as exc:
                cancelled = exc
            finally:
                self._waiters.remove(waiter)
        if cancelled is not None:
            raise cancelled

    def _exit_waiter(self) -> asyncio.Future[None]:
        """A future released when the child exited (or could not start); remove it after."""
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        return waiter

    # ------------------------------------------------------------ internals

    def _boot(self, child_end: Connection) -> None:
        """The boot thread: start the process, then tell the loop."""
        error = _start_process(self._process, child_end)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._boot_done, error)

    def _boot_done(self, error: BaseException | None) -> None:
        if self._boot_thread is not None:
            self._boot_thread.join()  # its last step just ran: this returns at once
            self._boot_thread = None
        if error is not None:
            self.start_error = error
            self._pipe.close()
            self._process.close()
            release(self._booted)
            self._ended()
            return
        self.pid = self._process.pid or 0
        self._sentinel = self._process.sentinel
        self._loop.add_reader(self._sentinel, self._process_ended)
        release(self._booted)

    def _process_ended(self) -> None:
        assert self._sentinel is not None
        self._loop.remove_reader(self._sentinel)
        # A child writes its last message before it exits: deliver what the
        # socket still holds before reporting the exit.
        self._pipe.read_now()
        self._pipe.close()
        self.exitcode = _reap(self._process)
        self._ended()

    def _ended(self) -> None:
        for waiter in self._waiters:
            release(waiter)
        self._on_exit(self)


def _reap(process: BaseProcess) -> int:
    """Join a process that exited (its sentinel is ready) and return its exit code.

    ``multiprocessing`` also reaps exited children from whatever thread calls
    ``Process.start()`` (a boot thread, or the user's code), so the status can
    be taken by that thread between its ``waitpid`` and its recording of the
    code: give it the moment it needs, with the GIL released.
    """
    process.join()  # it exited: this only reaps it
    code = process.exitcode
    for _ in range(100):
        if code is not None:
            break
        time.sleep(0.0001)
        code = process.exitcode
    with contextlib.suppress(ValueError):  # never reaped: it cannot be closed
        process.close()
    return -1 if code is None else code


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
        release(stop)

    def ended(event: Transition) -> None:  # the worker ended on its own
        if event.worker is worker and event.kind in _FINAL_EVENTS:
            release(stop)

    task = asyncio.current_task()
    assert task is not None
    loop.add_reader(fd, stop_requested)
    loop.add_signal_handler(signal.SIGTERM, task.cancel, "SIGTERM")
    worker.add_observer(ended)
    try:
        await run_worker(worker, until=stop, started=ready, reason="its process got SIGTERM")
    except asyncio.CancelledError:  # SIGTERM: the parent forced the stop, the worker ended
        pass
    finally:
        worker.remove_observer(ended)
        loop.remove_reader(fd)
        loop.remove_signal_handler(signal.SIGTERM)


async def kill_all(children: list[Child]) -> None:
    """Terminate, then kill, every child; join them all even if cancelled again.

    All get SIGTERM at once, so that ``KILL_AFTER`` is waited once, not once each.
    """
    cancelled = False
    for child in children:
        child.terminate()
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
    except BaseException as exc:  # SystemExit too: it ends the call, as in a thread
        return pickle.dumps((False, pack_error(exc)))
