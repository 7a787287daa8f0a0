"""The protocol of a worker type (``_worker.py``): what a new kind of worker builds on.

``default_name()``, ``before_run()`` (the ready handshake), ``on_stop_requested()``,
``stop_requested()`` and ``after_run()``: each promise of their docstrings,
including the orders and the failure paths. ``tests/test_line_server.py``
shows a whole worker type built on them.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import fluid
from fluid import WorkerState

pytestmark = pytest.mark.interleave


class Traced(fluid.Worker):
    """Records each hook in order; a hook fails when named in ``fail``."""

    def __init__(self, fail: str = "", name: str = "") -> None:
        self.calls: list[str] = []
        self.fail = fail
        super().__init__(name, stopping_grace_period=5)

    def default_name(self) -> str:
        return "traced-" + (self.fail or "ok")

    def _hook(self, name: str) -> None:
        self.calls.append(name)
        if self.fail == name:
            raise RuntimeError(f"{name} failed")

    async def on_startup(self) -> None:
        self._hook("on_startup")

    async def before_run(self) -> None:
        await asyncio.sleep(0)  # a real await: startup() must wait for it
        self._hook("before_run")

    async def run(self) -> None:
        self._hook("run")
        await self.stop_requested()
        self.calls.append("stop seen")

    def on_stop_requested(self) -> None:
        self._hook("on_stop_requested")

    def after_run(self) -> None:
        self._hook("after_run")

    async def on_shutdown(self) -> None:
        self._hook("on_shutdown")


def test_default_name_names_a_worker_created_without_one() -> None:
    assert Traced().worker_name == "traced-ok"
    assert Traced(name="given").worker_name == "given"


async def test_default_names_get_suffixes_in_a_tree_where_explicit_names_are_refused() -> None:
    tree = fluid.Workers(Traced(), Traced())
    assert [w.worker_name for w in tree.workers()] == ["traced-ok", "traced-ok-2"]
    with pytest.raises(fluid.DuplicateWorkerName):
        fluid.Workers(Traced(name="x"), Traced(name="x"))


async def test_the_hooks_run_in_order_and_startup_waits_for_before_run() -> None:
    worker = Traced()
    await worker.startup()
    assert worker.calls == ["on_startup", "before_run"]  # ready when startup() returned
    await asyncio.sleep(0)
    assert worker.calls[-1] == "run"
    await worker.shutdown()
    assert worker.calls == [
        "on_startup",
        "before_run",
        "run",
        "on_stop_requested",
        "stop seen",
        "after_run",
        "on_shutdown",
    ]
    assert worker.worker_state is WorkerState.STOPPED


async def test_the_started_transition_comes_after_before_run() -> None:
    seen: list[list[str]] = []
    worker = Traced()
    worker.add_observer(lambda t: seen.append(list(worker.calls)) if t.kind == "started" else None)
    await worker.startup()
    await worker.shutdown()
    assert seen == [["on_startup", "before_run"]]


async def test_a_failing_before_run_fails_startup_and_still_closes() -> None:
    worker = Traced(fail="before_run")
    with pytest.raises(RuntimeError, match="before_run failed"):
        await worker.startup()
    assert worker.calls == ["on_startup", "before_run", "after_run", "on_shutdown"]
    assert worker.worker_state is WorkerState.STOPPED


async def test_after_run_runs_when_on_startup_failed_and_no_run_came() -> None:
    worker = Traced(fail="on_startup")
    with pytest.raises(RuntimeError, match="on_startup failed"):
        await worker.startup()
    assert worker.calls == ["on_startup", "after_run"]  # no on_shutdown: nothing was opened


async def test_a_failing_after_run_is_the_workers_error() -> None:
    worker = Traced(fail="after_run")
    await worker.startup()
    with pytest.raises(RuntimeError, match="after_run failed"):
        await worker.shutdown()
    assert worker.calls[-1] == "on_shutdown"  # still closed


async def test_a_failing_on_stop_requested_is_logged_and_the_stop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Traced(fail="on_stop_requested")
    await worker.startup()
    with caplog.at_level(logging.ERROR, logger="fluid"):
        async with asyncio.timeout(10):
            await worker.shutdown()
    assert "stop seen" in worker.calls
    assert worker.worker_state is WorkerState.STOPPED
    assert "on_stop_requested of worker 'traced-on_stop_requested' failed" in caplog.text


async def test_stop_requested_is_done_at_once_for_a_worker_not_running() -> None:
    worker = Traced()
    assert worker.stop_requested().done()  # never started
    await worker.startup()
    pending = worker.stop_requested()
    assert not pending.done()
    worker.gracefully_stop()
    assert pending.done()  # resolved by the request itself, in the same call
    assert worker.stop_requested().done()  # stopping
    await worker.shutdown()
    assert worker.stop_requested().done()  # stopped


async def test_a_cancelled_stop_requested_future_leaves_the_others_waiting() -> None:
    worker = Traced()
    await worker.startup()
    first, second = worker.stop_requested(), worker.stop_requested()
    first.cancel()
    await asyncio.sleep(0)
    assert not second.done()
    await worker.shutdown()
    assert second.done()
    assert not second.cancelled()


def stop_waiters(worker: fluid.Worker) -> set[asyncio.Future[None]]:
    """White box: the waiters of a stop the worker holds."""
    waiters = worker._run_waiters
    return set() if waiters is None else waiters.on_stop


async def test_stop_requested_futures_are_not_kept_once_done() -> None:
    """A run that races stop_requested() against work in a loop does not grow."""
    worker = Traced()
    await worker.startup()
    await asyncio.sleep(0)  # run() waits on its own
    before = len(stop_waiters(worker))
    for _ in range(100):
        waiter = worker.stop_requested()
        waiter.cancel()
    await asyncio.sleep(0)
    pending = worker.stop_requested()
    assert len(stop_waiters(worker)) == before + 1  # the cancelled ones were let go
    worker.gracefully_stop()
    assert pending.done()
    await worker.shutdown()


@pytest.mark.parametrize("hook", ["before_run", "on_stop_requested", "after_run"])
async def test_a_class_that_overrides_one_hook_alone_has_it_called(hook: str) -> None:
    """A worker whose class overrides no hook of a pair skips the pair: not one that does."""
    called: list[str] = []

    async def before_run(self: fluid.Worker) -> None:
        called.append("before_run")

    def sync_hook(self: fluid.Worker) -> None:
        called.append(hook)

    class Plain(fluid.Worker):
        async def run(self) -> None:
            await self.stop_requested()

    body = {"before_run": before_run} if hook == "before_run" else {hook: sync_hook}
    One = type("One", (Plain,), body)  # a grandchild of Worker: the check is per class
    worker = One()
    async with asyncio.timeout(10):
        await worker.startup()
        await worker.shutdown()
    assert called == [hook]
    plain = Plain()
    await plain.startup()
    await plain.shutdown()  # and the plain one, which skips them, still stops at once
    assert plain.worker_state is WorkerState.STOPPED
