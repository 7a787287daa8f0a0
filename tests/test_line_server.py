"""examples/line_server.py: a worker type built outside fluid on its public API only.

It proves the extension protocol (``default_name``, ``before_run``,
``on_stop_requested``, ``stop_requested()``, ``after_run``): the server is
ready when ``startup()`` returns, drains a request in progress on a graceful
stop, lets idle clients go, stops within its grace period when a handler
hangs, and lives in trees like fluid's own workers.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

import fluid
from examples.line_server import LineServer, echo

pytestmark = pytest.mark.interleave  # the proof of the protocol: on shuffled loops too

EXAMPLE = Path(__file__).parent.parent / "examples" / "line_server.py"


async def shout(line: str) -> str:
    return line.upper()


async def ask(port: int, *lines: str) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answers = []
        for line in lines:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            answers.append((await reader.readline()).decode().rstrip("\n"))
        return answers
    finally:
        writer.close()
        await writer.wait_closed()


def test_the_example_uses_no_private_name_of_fluid() -> None:
    """Only public names: no import of a private module, no private attribute of fluid's."""
    tree = ast.parse(EXAMPLE.read_text())
    private_of_worker = {name for name in dir(fluid.Worker) if name.startswith("_")}
    private_of_worker |= set(fluid.Worker.__slots__)
    own = {"_server", "_connections", "_serve", "_answer"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module is not None
            assert not node.module.startswith("fluid._"), node.module
        if isinstance(node, ast.Import):
            assert all(not alias.name.startswith("fluid._") for alias in node.names)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            assert node.attr in own, f"line {node.lineno}: {node.attr}"
            assert node.attr not in private_of_worker, f"line {node.lineno}: {node.attr}"


async def test_startup_returns_once_it_listens() -> None:
    server = LineServer(shout)
    await server.startup()
    try:
        assert server.port != 0
        assert await ask(server.port, "hello", "again") == ["HELLO", "AGAIN"]
        status = await server.status()
        assert status["served"] == 2
        assert status["state"] == "running"
    finally:
        await server.shutdown()
    assert server.worker_state is fluid.WorkerState.STOPPED


async def test_a_port_in_use_fails_startup_and_after_run_still_runs() -> None:
    async with LineServer(echo) as first:
        second = LineServer(echo, port=first.port)
        with pytest.raises(OSError, match="address already in use"):
            await second.startup()
        assert second.worker_state is fluid.WorkerState.STOPPED
    # after_run released the first server's socket: the port can be bound again
    async with LineServer(echo, port=first.port) as again:
        assert await ask(again.port, "x") == ["x"]


async def test_a_graceful_stop_answers_the_request_in_progress_and_lets_idle_clients_go() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(line: str) -> str:
        entered.set()
        await release.wait()
        return f"done {line}"

    server = LineServer(slow, stopping_grace_period=10)
    await server.startup()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    busy = asyncio.create_task(ask(server.port, "job"))
    async with asyncio.timeout(10):
        await entered.wait()
    stopping = asyncio.create_task(server.shutdown())
    async with asyncio.timeout(10):
        assert await idle_reader.read() == b""  # the idle client is let go at once
    with pytest.raises(ConnectionRefusedError):  # no new connection once the stop was requested
        await asyncio.open_connection("127.0.0.1", server.port)
    assert not busy.done()
    assert server.is_stopping()
    release.set()
    async with asyncio.timeout(10):
        assert await busy == ["done job"]
        await stopping
    assert server.worker_state is fluid.WorkerState.STOPPED
    idle_writer.close()
    await idle_writer.wait_closed()


async def test_a_hung_handler_is_forced_after_the_grace_period() -> None:
    entered = asyncio.Event()

    async def hang(line: str) -> str:
        entered.set()
        await asyncio.Event().wait()
        return line

    server = LineServer(hang, stopping_grace_period=0.2)
    await server.startup()
    client = asyncio.create_task(ask(server.port, "x"))
    async with asyncio.timeout(10):
        await entered.wait()
        await server.shutdown()
    assert server.worker_state is fluid.WorkerState.FORCE_STOPPED
    assert await client == [""]  # the connection was closed, not answered


async def test_it_lives_in_a_supervised_tree_named_for_its_handler() -> None:
    tree = fluid.Workers(LineServer(echo), LineServer(echo), strategy="one_for_one")
    async with tree:
        names = [w.worker_name for w in tree.workers()]
        assert names == ["echo", "echo-2"]
        ports = [w.port for w in tree.workers() if isinstance(w, LineServer)]
        assert [await ask(port, "hi") for port in ports] == [["hi"], ["hi"]]
    assert all(w.is_stopped() for w in tree.workers())


def test_bad_handler_is_refused_at_the_call() -> None:
    def not_async(line: str) -> str:
        return line

    with pytest.raises(TypeError, match="handler must be an async function"):
        LineServer(not_async)  # type: ignore[arg-type]
