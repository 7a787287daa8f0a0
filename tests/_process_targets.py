"""Targets for the tests of ProcessWorker and ProcessPool.

They run in child processes started with ``spawn``, which imports them by
name: they must live at module level, here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import fluid

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# --------------------------------------------------------- ProcessWorker targets


def wait_until_stopped(worker: fluid.ProcessWorker) -> None:
    """Sleep until the parent asks for a stop (an hour at most)."""
    while worker.is_running():
        worker.wait_for_stop(3600)


def raise_in_child(worker: fluid.ProcessWorker) -> None:
    """Fail at once with a ValueError."""
    raise ValueError("boom in the child")


class Unpicklable(Exception):
    """An error that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        import threading

        self.lock = threading.Lock()


def raise_unpicklable(worker: fluid.ProcessWorker) -> None:
    """Fail with an error that does not pickle."""
    raise Unpicklable("cannot travel")


def exit_with_3(worker: fluid.ProcessWorker) -> None:
    """Exit the child with code 3, as a crash would."""
    os._exit(3)


def ignore_the_stop(worker: fluid.ProcessWorker) -> None:
    """Never look at the stop request: only a signal ends this child."""
    while True:
        time.sleep(3600)


class _Steps:
    """Records its steps in a file, one line each; fails in ``fail_in`` with ``error``.

    The same body for both hosts: ``Hooks`` runs it in a child process,
    ``ThreadHooks`` in a thread.
    """

    def __init__(
        self,
        path: Path,
        fail_in: str = "",
        error: BaseException | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.fail_in = fail_in
        self.error = error

    def _record(self, what: str) -> None:
        with self.path.open("a") as file:
            file.write(f"{what} {os.getpid()}\n")
        if what == self.fail_in:
            raise self.error or KeyError(f"{what} failed")

    def setup(self) -> None:
        self._record("setup")

    def main(self) -> None:
        self._record("main")
        while not self.wait_for_stop(3600):  # type: ignore[attr-defined]
            pass

    def teardown(self) -> None:
        self._record("teardown")


class Hooks(_Steps, fluid.ProcessWorker):
    """The recorded steps, in a child process."""


class ThreadHooks(_Steps, fluid.ThreadWorker):
    """The recorded steps, in a thread."""


class DeafToSigterm(fluid.ProcessWorker):
    """Ignores both the stop request and SIGTERM: only SIGKILL ends it."""

    def setup(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def main(self) -> None:
        while True:
            time.sleep(3600)


# ------------------------------------------------------ async workers in a child


class FileLogged(fluid.Worker):
    """Writes ``start``/``stop`` lines to a file; can fail or ignore the stop."""

    def __init__(self, path: Path, mode: str = "") -> None:
        super().__init__("file_logged", stopping_grace_period=0.2)
        self.path = path
        self.mode = mode

    async def on_startup(self) -> None:
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        self.path.write_text(f"start {os.getpid()} {loop}\n")

    async def run(self) -> None:
        if self.mode == "fail":
            fail_in_async_child()
        if self.mode == "deaf":
            while True:
                await fluid_sleep_forever()
        while self.is_running():
            await self.sleep(3600)

    async def on_shutdown(self) -> None:
        with self.path.open("a") as file:
            file.write("stop\n")


def fail_in_async_child() -> None:
    """The frame the test looks for in the traceback."""
    raise RuntimeError("async child failed")


async def fluid_sleep_forever() -> None:
    """Sleep on a future nobody resolves: only a cancel ends it."""
    await asyncio.get_running_loop().create_future()


def make_tree(path: Path, mode: str = "") -> fluid.Workers:
    """A worker factory: a tree with one FileLogged worker."""
    return fluid.Workers(FileLogged(path, mode), name="child_tree", stopping_grace_period=5)


def not_a_worker() -> object:
    """A bad worker factory."""
    return 42


# --------------------------------------------------------- ProcessPool functions


def add(a: int, b: int) -> int:
    """A trivial call."""
    return a + b


def pid_and_span(seconds: float) -> tuple[int, float, float]:
    """Sleep ``seconds`` and say which process ran when."""
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()


def fail_in_pool(message: str) -> None:
    """Raise a ValueError in the pool's process."""
    raise ValueError(message)


def die_in_pool(code: int) -> None:
    """End the pool's process abruptly."""
    os._exit(code)


def getpid() -> int:
    """The pid of the process running the call."""
    return os.getpid()


def touch_after(seconds: float, path: Path) -> None:
    """Sleep, then create ``path``: shows that a call ran to its end."""
    time.sleep(seconds)
    path.write_text("done")


def send_two_and_exit(conn: Connection) -> None:
    """A bare child of ``fluid._child.Child``: two messages, then exit."""
    conn.send_bytes(b"one")
    conn.send_bytes(b"two")


def square(number: int) -> int:
    """A CPU-bound handler for a consumer's process pool."""
    return number * number


class BigError(Exception):
    """An error with a short message and a large payload (pickled with it)."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class RaiseBig(fluid.ProcessWorker):
    """Fails in ``main()`` with a ``BigError`` carrying ``size`` bytes."""

    def __init__(self, size: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.size = size

    def main(self) -> None:
        raise BigError(f"{self.size} bytes", b"x" * self.size)


def length(data: bytes) -> int:
    """A pool call whose argument can be large."""
    return len(data)


def make_bytes(size: int) -> bytes:
    """A pool call whose result can be large."""
    return b"x" * size


def sleep_long(message: object) -> None:
    """A consumer's handler that blocks far longer than any grace period."""
    time.sleep(60)


def read_slowly(delay: float, conn: Connection) -> None:
    """A bare child of ``Child``: read nothing for ``delay`` s, then echo the size of a message."""
    time.sleep(delay)
    conn.send_bytes(str(len(conn.recv_bytes())).encode())


def write_slowly(size: int, delay: float, conn: Connection) -> None:
    """A bare child of ``Child``: send one ``size``-byte message, pausing ``delay`` s halfway.

    Written in the ``Connection`` wire format by hand, so that the parent
    sees a message whose first half arrived and whose second half is late.
    """
    import struct

    fd = conn.fileno()
    half = size // 2
    os.write(fd, struct.pack("!i", size))
    for part in (half, size - half):
        view = memoryview(b"x" * part)
        while view:
            view = view[os.write(fd, view) :]
        if part == half:
            time.sleep(delay)


def echo_all(count: int, conn: Connection) -> None:
    """A bare child of ``Child``: send back each of ``count`` messages."""
    for _ in range(count):
        conn.send_bytes(conn.recv_bytes())


def touch_then_sleep(path: Path) -> None:
    """A consumer's handler: say it started (create ``path``), then block for a minute."""
    path.write_text("started")
    time.sleep(60)
