"""Programs started by the tests of the runner, the CLI and prefork: read with deadlines.

A test starts a real process (``python -m fluid run ...``), waits for a line
of its output (never a fixed sleep), sends it signals and checks its exit
status. ``async with Program.start(...)`` kills it, if it still runs, when
the test ends, so nothing is left behind even when an assertion fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from .helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


class Program:
    """A process whose output (stdout and stderr together) is read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(
        cls, *args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None
    ) -> Program:
        """Start ``python -u *args`` in ``cwd``, with ``env`` added to the environment."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process)

    @classmethod
    async def fluid(
        cls, *args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None
    ) -> Program:
        """Start ``python -m fluid *args``."""
        return await cls.start("-m", "fluid", *args, cwd=cwd, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Read lines until one matches ``pattern`` (a regex); fail after ``timeout``."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self._readline()
                    if not line:
                        raise AssertionError(f"exited before {pattern!r}:\n{self.output}")
                    match = regex.search(line)
                    if match:
                        return match
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.output}") from None

    async def wait(self, timeout: float = 10.0) -> int:
        """Read the rest of the output and return the exit status."""
        try:
            async with asyncio.timeout(timeout):
                while await self._readline():
                    pass
                return await self.process.wait()
        except TimeoutError:
            raise AssertionError(f"still running after {timeout}s:\n{self.output}") from None

    def send(self, sig: signal.Signals) -> bool:
        """Signal the program unless it exited; False if it had.

        Not ``Process.send_signal()``: its ``Popen.poll()`` may reap the program
        behind the back of asyncio's child watcher, which then reports exit
        status 255 instead of the real one.
        """
        if self.process.returncode is not None:
            return False
        try:
            os.kill(self.pid, sig)  # not reaped yet: the pid is still the program's
        except ProcessLookupError:
            return False
        return True

    async def _readline(self) -> str:
        assert self.process.stdout is not None
        line = (await self.process.stdout.readline()).decode(errors="replace")
        if line:
            self.lines.append(line)
        return line

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A test that failed half way: stop the program as a user would (its
        # children stop with it), kill it if it does not, and read what is left
        # of its output so that the pipe is closed before the loop is.
        if self.send(signal.SIGTERM):
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
        await self.process.wait()
        if self.process.stdout is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.process.stdout.read()


def children_of(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux: from /proc)."""
    pids: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
    except OSError:
        pass
    return pids


def descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (Linux: from /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pending_signals(pid: int) -> int | None:
    """The mask of signals sent to process ``pid`` and not yet delivered (None: it is gone).

    Bit ``n - 1`` is signal ``n`` (``ShdPnd`` in /proc). A standard signal
    sent while the same one is still pending is merged into it: wait until
    it is delivered before sending it again, to count on two deliveries.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    if fields.get("State", "").strip().startswith("Z"):
        return None
    return int(fields["ShdPnd"].strip(), 16)


def is_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def wait_gone(pids: set[int], timeout: float = 5.0) -> None:
    """Wait until none of ``pids`` is alive; fail after ``timeout``."""
    try:
        await wait_until(lambda: not any(is_alive(pid) for pid in pids), timeout)
    except AssertionError:
        alive = sorted(pid for pid in pids if is_alive(pid))
        raise AssertionError(f"processes still running: {alive}") from None
