"""Prefork: ``--processes N`` and ``fluid.Prefork``, with real processes and a real socket.

The master binds 127.0.0.1 on a free port (``--bind 127.0.0.1:0``) and says
which in its log; the children of ``examples/prefork_server.py`` answer HTTP
requests with their id and pid, and say when they start and stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

import fluid
from fluid import cli
from fluid._prefork import master_grace_period

from ._programs import Program, children_of, wait_gone

HELLO = re.compile(r"hello from child (\d+) \(pid (\d+)\)")


async def http_get(port: int) -> tuple[int, int]:
    """GET / from the server on ``port``: the (child id, pid) that answered."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        data = (await reader.read()).decode()
        writer.close()
        await writer.wait_closed()
    match = HELLO.search(data)
    assert match, data
    assert data.startswith("HTTP/1.0 200 OK")
    return int(match[1]), int(match[2])


async def test_three_children_serve_one_port_a_killed_one_is_respawned_sigterm_stops_all() -> None:
    async with await Program.fluid(
        "run", "examples.prefork_server:build", "--processes", "3", "--bind", "127.0.0.1:0"
    ) as master:
        port = int((await master.expect(r"listening on 127\.0\.0\.1:(\d+)"))[1])
        pids: dict[int, int] = {}
        for _ in range(3):  # each child's output, prefixed with its id by the master
            match = await master.expect(r"\[child (\d)\] child \1 serving \(pid (\d+)\)")
            pids[int(match[1])] = int(match[2])
        await master.expect("worker 'prefork' is running")
        assert sorted(pids) == [1, 2, 3]
        assert set(pids.values()) <= children_of(master.pid)

        answered: set[int] = set()
        async with asyncio.timeout(10):
            while len(answered) < 2:  # one port, served by more than one process
                answered.add((await http_get(port))[1])
        assert answered <= set(pids.values())

        os.kill(pids[2], signal.SIGKILL)
        for _ in range(20):  # the others go on serving the port meanwhile
            child, pid = await http_get(port)
            assert pid != pids[2]
        respawned = int((await master.expect(r"\[child 2\] child 2 serving \(pid (\d+)\)"))[1])
        assert respawned != pids[2]
        delay = float(
            (
                await master.expect(
                    rf"child-2 respawned \(pid \d+\) after ([\d.]+)s: pid {pids[2]} was killed "
                    "by SIGKILL"
                )
            )[1]
        )
        assert delay > 0  # after a backoff
        for _ in range(10):
            await http_get(port)

        everything = children_of(master.pid) | set(pids.values())
        assert respawned in everything
        master.send(signal.SIGTERM)
        assert await master.wait() == 0, master.output
    for child in (1, 2, 3):  # each stopped gracefully: its on_shutdown ran
        assert f"[child {child}] child {child} stopped" in master.output
    await wait_gone(everything)


async def test_children_that_ignore_the_stop_get_sigterm_after_the_grace_period() -> None:
    async with await Program.fluid(
        "run", "tests._run_targets:Stubborn", "--processes", "2", "--stopping-grace-period", "0.2"
    ) as master:
        for _ in range(2):
            await master.expect(r"\[child \d\] stubborn started")
        await master.expect("worker 'prefork' is running")
        children = children_of(master.pid)
        master.send(signal.SIGTERM)
        # children forced after their grace period: not a clean stop (143)
        assert await master.wait() == 128 + signal.SIGTERM, master.output
    assert "but 'child-1' was forced to stop: exit status 143" in master.output
    # SIGTERM forced the worker of each child, whose on_shutdown still ran
    assert master.output.count("stubborn on_shutdown ran") == 2
    assert "[child 1] stubborn on_shutdown ran" in master.output
    await wait_gone(children)


@pytest.mark.parametrize(
    ("option", "grace"), [((), fluid.STOPPING_GRACE_PERIOD), (("--grace", "0.25"), 0.25)]
)
async def test_the_stop_logs_the_figures_help_gives(option: tuple[str, ...], grace: float) -> None:
    async with await Program.fluid("run", "--help") as done:
        assert await done.wait() == 0, done.output
    help_text = " ".join(done.output.split())
    master = master_grace_period(fluid.STOPPING_GRACE_PERIOD)
    assert (
        f"with --processes, {fluid.STOPPING_GRACE_PERIOD:g} for each child, then SIGTERM and "
        f"SIGKILL 0.5 later: {master:g} in all for the master" in help_text
    )
    master = master_grace_period(grace)
    async with await Program.fluid(
        "run", "tests._run_targets:Stubborn", "--processes", "1", *option
    ) as program:
        await program.expect(r"\[child 1\] stubborn started")
        await program.expect("worker 'prefork' is running")
        program.send(signal.SIGTERM)
        # the master's figure; it was the only one said, where --help said the child's
        await program.expect(f"stopping worker 'prefork' gracefully within {master:g}s ")
        await program.expect(
            f"prefork: stopping 1 child: {grace:g}s each to stop gracefully, then SIGTERM, "
            f"then SIGKILL 0.5s later \\({master:g}s in all\\)"
        )
        program.send(signal.SIGTERM)  # no need to wait it out: force it
        assert await program.wait() == 143, program.output


async def test_a_child_that_ends_cleanly_is_not_respawned_and_the_master_exits_0() -> None:
    start = time.monotonic()
    async with await Program.fluid(
        "run", "tests._run_targets:Quick", "--processes", "2", "--no-uvloop"
    ) as master:
        assert await master.wait() == 0, master.output  # it was 1, TooManyRestarts, ~21 s
    assert time.monotonic() - start < 10  # no backoff waited: nothing was respawned
    output = master.output
    assert output.count("quick ran on asyncio") == 2  # once per child, not again
    assert "respawned (pid" not in output
    assert "restarting it" not in output
    assert "TooManyRestarts" not in output
    for child in (1, 2):
        assert re.search(
            rf"prefork: child-{child} ended by itself \(pid \d+ exited with code 0\): "
            "not respawned, a clean end is not a crash",
            output,
        ), output
    assert "prefork: every child ended by itself: stopping" in output
    assert "SIGKILL" not in output  # no stop plan announced: no child was left to stop
    assert "worker 'prefork' stopped: exit status 0" in output


async def test_a_crashed_child_is_respawned_and_the_respawn_line_says_why(
    tmp_path: Path,
) -> None:
    env = {"FLUID_TEST_MARKER": str(tmp_path / "crashed")}
    async with await Program.fluid(
        "run", "tests._run_targets:crash_then_quick", "--processes", "1", env=env
    ) as master:
        crashed = await master.expect(r"prefork: child-1 crashed: pid (\d+) exited with code 3")
        await master.expect(
            rf"prefork: child-1 respawned \(pid \d+\) after [\d.]+s: pid {crashed[1]} "
            "exited with code 3"
        )
        assert await master.wait() == 0, master.output  # its respawn ended cleanly
    assert "[child 1] quick ran on" in master.output


async def test_children_that_ignore_sigterm_are_killed() -> None:
    async with await Program.fluid(
        "run",
        "tests._run_targets:deaf_to_sigterm",
        "--processes",
        "2",
        "--stopping-grace-period",
        "0.1",
    ) as master:
        for _ in range(2):
            await master.expect(r"\[child \d\] stubborn started")
        await master.expect("worker 'prefork' is running")
        children = children_of(master.pid)
        start = time.monotonic()
        master.send(signal.SIGTERM)
        # within 10 s (SIGKILL came), and forced: 143
        assert await master.wait() == 128 + signal.SIGTERM, master.output
        assert time.monotonic() - start < 10  # grace, SIGTERM, then SIGKILL 0.5 s later
    assert master.output.count("ignored SIGTERM for 0.5s: killing it (SIGKILL)") == 2
    await wait_gone(children)


# ------------------------------------------------------------ the Python API


async def test_prefork_as_a_worker_prefixes_the_output_of_its_children(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    master = fluid.Prefork(
        "examples.prefork_server:build", processes=2, sockets=[sock], use_uvloop=False
    )
    try:
        async with master:
            status = await master.status()
            processes = [cast(dict[str, Any], child)["process"] for child in status["workers"]]
            assert [p["alive"] for p in processes] == [True, True]
            child, pid = await http_get(port)
            assert pid in {p["pid"] for p in processes}
            assert fluid.prefork_child() is None  # this is the master
    finally:
        sock.close()
    out = capsys.readouterr().out
    assert f"[child {child}] child {child} serving (pid {pid})" in out
    assert "[child 1] child 1 stopped" in out
    assert "[child 2] child 2 stopped" in out


async def test_a_child_that_cannot_start_fails_the_master_startup() -> None:
    master = fluid.Prefork("tests._run_targets:returns_a_string", processes=2, capture_output=False)
    with pytest.raises(TypeError, match=r"returned 'not a worker', not a fluid\.Worker"):
        await master.startup()
    assert master.is_stopped()


class Idle(fluid.Worker):
    """Runs until it is asked to stop."""

    async def run(self) -> None:
        while self.is_running():
            await self.sleep(10)


def logging_child() -> fluid.Worker:
    """A prefork child that logs once at INFO and once at DEBUG, then idles."""
    child = fluid.prefork_child()
    assert child is not None
    log = logging.getLogger("tests.prefork")
    log.info("child %d logs", child.id)
    log.debug("child %d debug line", child.id)
    return Idle()


@pytest.mark.parametrize(
    ("formatter", "line"),
    [
        (
            logging.Formatter("%(levelname)s|%(name)s|%(message)s"),
            "[child 1] INFO|tests.prefork|child 1 logs",
        ),
        (
            logging.Formatter("<{levelname}> {message} @{asctime}", style="{", datefmt="%Y"),
            f"[child 1] <INFO> child 1 logs @{time.localtime().tm_year}",
        ),
        # a formatter that cannot reach the children: they use logging.BASIC_FORMAT
        (None, "[child 1] INFO:tests.prefork:child 1 logs"),
    ],
    ids=["percent", "brace-and-datefmt", "not-picklable"],
)
async def test_children_log_like_the_master_with_their_prefix(
    formatter: logging.Formatter | None, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if formatter is None:

        class Unpicklable(logging.Formatter):  # a local class does not pickle
            pass

        formatter = Unpicklable("%(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    level = root.level
    root.handlers.insert(0, handler)  # the master's handler, the first one
    root.setLevel(logging.INFO)
    try:
        master = fluid.Prefork(logging_child, processes=1, use_uvloop=False)
        async with master:
            pass
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert line in err.splitlines(), err
    assert "debug line" not in err  # the master's level reached the child too


def test_a_target_the_master_cannot_load_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "no_such_package:build", "--processes", "2"]) == 2
    assert "module 'no_such_package' not found" in capsys.readouterr().err


def local_factory() -> Callable[[], fluid.Worker]:
    return lambda: fluid.Workers()


@pytest.mark.parametrize(
    ("target", "kwargs", "error", "message"),
    [
        ("examples.prefork_server:build", {"processes": 0}, ValueError, "processes must be >= 1"),
        ("examples.prefork_server", {"processes": 1}, ValueError, "package.module:attribute"),
        (fluid.Workers(), {"processes": 1}, TypeError, "a Worker cannot be sent"),
        (local_factory(), {"processes": 1}, TypeError, "cannot be sent to child processes"),
        (42, {"processes": 1}, TypeError, "a function returning a Worker"),
        ("m:a", {"processes": 1, "sockets": [42]}, TypeError, "socket.socket"),
        ("m:a", {"processes": 1, "stopping_grace_period": -1}, ValueError, "stopping_grace"),
        ("m:a", {"processes": 1, "stopping_grace_period": 1, "grace": 1}, TypeError, "only"),
    ],
)
def test_bad_arguments_raise_at_the_call(
    target: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        fluid.Prefork(target, **kwargs)


def test_the_grace_period_is_stopping_grace_period_and_grace_still_works() -> None:
    kill_after = 0.5
    new = fluid.Prefork("m:a", processes=2, stopping_grace_period=3, kill_after=kill_after)
    with pytest.warns(DeprecationWarning, match="pass stopping_grace_period=") as warned:
        old = fluid.Prefork("m:a", processes=2, grace=3, kill_after=kill_after)
    assert [os.path.basename(w.filename) for w in warned] == ["test_prefork.py"]
    default = fluid.Prefork("m:a", processes=2, kill_after=kill_after)
    for master, grace in ((new, 3.0), (old, 3.0), (default, fluid.STOPPING_GRACE_PERIOD)):
        # each child gets the grace period; the master, what the children's stop may take
        assert [child.stopping_grace_period for child in master.children] == [grace, grace]
        assert master.stopping_grace_period == grace + kill_after + 1.0
        assert master.stopping_grace_period == master_grace_period(grace, kill_after)
