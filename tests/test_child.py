"""The pipes of child processes never block the event loop (``fluid._child``, ``fluid._pipe``).

Each test runs a "loop ticker": a ``call_later`` chain that records the
longest gap between its wake-ups while a transfer goes on. A blocking read
or write on the loop shows as a gap as long as the transfer; a non-blocking
one leaves only gaps of a few milliseconds (the bound below is generous for
a loaded machine, and far below what blocking I/O costs in these tests).

The white-box tests pace the peer on purpose (a child that reads late, or
writes half a message and pauses), so that blocking I/O would stall for the
pause whatever the speed of the machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import fluid
from fluid._child import Child, get_context
from fluid._pipe import Message

from . import _process_targets as targets

MAX_GAP = 0.25  # seconds; blocking I/O stalls the paced tests 0.6 s or more


class Ticker:
    """Records the longest gap between wake-ups of a 1 ms ``call_later`` chain."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None

    def _tick(self) -> None:
        now = time.monotonic()
        self.max_gap = max(self.max_gap, now - self._last)
        self._last = now
        self._handle = asyncio.get_running_loop().call_later(0.001, self._tick)

    def start(self) -> None:
        self._last = time.monotonic()
        self._handle = asyncio.get_running_loop().call_later(0.001, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


@asynccontextmanager
async def ticking() -> AsyncIterator[Ticker]:
    ticker = Ticker()
    ticker.start()
    try:
        yield ticker
    finally:
        ticker.stop()


async def run_child(target: object, args: tuple[object, ...], send: bytes | None) -> list[Message]:
    """Start a bare child, optionally send it ``send``, collect its messages until it exits."""
    got: list[Message] = []
    exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    child = Child.start(
        get_context("fork"),
        target,  # type: ignore[arg-type]
        args,
        name="paced",
        daemon=True,
        on_message=lambda c, data: got.append(data),
        on_exit=lambda c: exited.set_result(c.exitcode),
    )
    if send is not None:
        assert child.send(send)
    async with asyncio.timeout(20):
        assert await exited == 0
    return got


async def test_a_large_message_to_a_child_that_reads_late_does_not_block_the_loop() -> None:
    size = 8 << 20  # far more than a socket buffer holds
    async with ticking() as ticker:
        got = await run_child(targets.read_slowly, (0.6,), b"x" * size)
    assert got == [str(size).encode()]
    assert ticker.max_gap < MAX_GAP, f"the loop stalled {ticker.max_gap:.3f}s"


async def test_a_large_message_that_arrives_slowly_does_not_block_the_loop() -> None:
    size = 4 << 20
    async with ticking() as ticker:
        got = await run_child(targets.write_slowly, (size, 0.6), None)
    assert [len(message) for message in got] == [size]
    assert bytes(got[0]) == b"x" * size
    assert ticker.max_gap < MAX_GAP, f"the loop stalled {ticker.max_gap:.3f}s"


async def test_messages_of_every_size_cross_intact_and_in_order() -> None:
    # Sizes around the wire format's thresholds: header and payload written
    # together or apart, read from the shared buffer or into their own.
    sizes = [0, 1, 3, 4, 5, 16383, 16384, 16385, 65535, 65536, 65537, 300_000, 1 << 20]
    messages = [bytes([n % 251]) * n for n in sizes]
    got: list[Message] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(child: Child, data: Message) -> None:
        got.append(data)
        if len(got) == len(messages):
            done.set_result(None)

    async with fluid.ProcessPool(1) as pool:  # warm the spawn machinery first
        await pool.run(targets.add, 1, 2)
    child = Child.start(
        get_context("spawn"),
        targets.echo_all,
        (len(messages),),
        name="echo",
        daemon=True,
        on_message=on_message,
        on_exit=lambda c: None,
    )
    for message in messages:
        assert child.send(message)
    async with asyncio.timeout(20):
        await done
        assert await child.wait()
    assert [bytes(message) for message in got] == messages
    assert child.exitcode == 0


# ------------------------------------------------------------- end to end


async def test_a_large_argument_to_a_process_pool_does_not_block_the_loop() -> None:
    data = b"x" * (32 << 20)
    async with fluid.ProcessPool(1) as pool:
        await pool.run(targets.add, 1, 2)  # warm: the process runs
        async with ticking() as ticker:
            assert await pool.run(targets.length, data) == len(data)
            assert len(await pool.run(targets.make_bytes, len(data))) == len(data)
    assert ticker.max_gap < MAX_GAP, f"the loop stalled {ticker.max_gap:.3f}s"


async def test_the_first_call_of_a_process_pool_does_not_wait_for_the_boot_on_the_loop() -> None:
    async with fluid.ProcessPool(1) as pool, ticking() as ticker:
        assert await pool.run(targets.add, 1, 2) == 3
    assert ticker.max_gap < MAX_GAP, f"the loop stalled {ticker.max_gap:.3f}s"


async def test_a_large_error_from_a_process_worker_does_not_block_the_loop() -> None:
    worker = targets.RaiseBig(20_000_000)
    async with ticking() as ticker:
        await worker.startup()
        with pytest.raises(targets.BigError, match="20000000 bytes") as info:
            await worker.wait_for_shutdown()
    assert len(info.value.data) == 20_000_000
    assert ticker.max_gap < MAX_GAP, f"the loop stalled {ticker.max_gap:.3f}s"
