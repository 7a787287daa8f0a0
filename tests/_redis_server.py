"""A real ``redis-server`` for the tests: 127.0.0.1, a free port, its own directory.

The server keeps nothing on disk (no RDB, no AOF) and is stopped by its pid.
It can be stopped and started again on the same port, so that a test can
take the broker away under a running consumer. A missing ``redis-server``
binary is a failure, never a skip: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["SERVER_PIDS", "RedisServer"]

SERVER_PIDS: set[int] = set()
"""The pids of the servers the session owns: not a test's leaked children."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process this test session owns."""

    def __init__(self, *, appendonly: bool = False) -> None:
        """``appendonly=True``: an append-only file synced at every write, so that
        a restart (even after a SIGKILL) finds every write the server acknowledged."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: the Redis tests need a real server "
                "(apt-get install redis-server; .ci/run installs it)"
            )
        self.binary = binary
        self.port = _free_port()
        self.directory = tempfile.mkdtemp(prefix="fluid-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        assert self.process is None, "already running"
        for attempt in range(5):
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if self.appendonly else "no",
                    "--appendfsync",
                    "always",
                    "--dir",
                    self.directory,
                    "--protected-mode",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the test run is not sent to it
            )
            SERVER_PIDS.add(self.process.pid)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break  # the port was taken in between: try another
                if _ping(self.port):
                    return
                time.sleep(0.01)
            else:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            SERVER_PIDS.discard(self.process.pid)
            self.process = None
            if attempt < 4:
                self.port = _free_port()
        raise RuntimeError("redis-server could not start: no free port took it")

    def flush(self) -> None:
        """Empty every database: each test starts from a blank server."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            assert conn.recv(16).startswith(b"+OK")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        SERVER_PIDS.discard(process.pid)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()
            SERVER_PIDS.discard(process.pid)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
