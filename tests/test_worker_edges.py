"""The lifecycle at its edges: self-shutdown, stop during startup, BaseException.

Issue 12, items 6 to 8. Each test here failed (hung, spun a core, or logged
"Task exception was never retrieved") before the waiting toolkit and the
startup task were part of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import pytest

import fluid
from fluid import WorkerState

from .helpers import wait_until

# Generous: the bugs these guard are waits of hours; a loaded machine is slow.
BOUND = 10.0


# ------------------------------------------------ 6. shutdown() from inside


class SelfStopper(fluid.Worker):
    def __init__(self, method: str = "shutdown") -> None:
        super().__init__(stopping_grace_period=0.05)
        self.method = method
        self.raised: BaseException | None = None

    async def run(self) -> None:
        try:
            await getattr(self, self.method)()
        except fluid.WorkerStateError as exc:
            self.raised = exc
            raise


@pytest.mark.parametrize("method", ["shutdown", "wait_for_shutdown", "wait_stopped"])
async def test_awaiting_own_shutdown_from_run_raises_at_the_call(method: str) -> None:
    worker = SelfStopper(method)
    await worker.startup()
    started = time.monotonic()
    with pytest.raises(fluid.WorkerStateError, match="it would wait for itself"):
        async with asyncio.timeout(BOUND):
            await worker.wait_for_shutdown()
    assert time.monotonic() - started < BOUND
    assert worker.raised is not None
    assert f"{method}()" in str(worker.raised)
    assert worker.worker_state is WorkerState.STOPPED


async def test_child_awaiting_its_tree_shutdown_raises_and_the_tree_stops() -> None:
    class Child(fluid.Worker):
        async def run(self) -> None:
            assert tree is not None
            await tree.shutdown()

    tree = fluid.Workers(Child(name="child"), stopping_grace_period=0.05)
    await tree.startup()
    with pytest.raises(fluid.WorkerStateError, match="would wait for itself"):
        async with asyncio.timeout(BOUND):
            await tree.wait_for_shutdown()
    assert tree.is_stopped()


async def test_on_startup_awaiting_own_shutdown_raises() -> None:
    class Opener(fluid.Worker):
        async def on_startup(self) -> None:
            await self.shutdown()

        async def run(self) -> None:  # pragma: no cover - never reached
            pass

    worker = Opener(stopping_grace_period=0.05)
    with pytest.raises(fluid.WorkerStateError, match="would wait for itself"):
        async with asyncio.timeout(BOUND):
            await worker.startup()
    assert worker.worker_state is WorkerState.STOPPED


async def test_task_started_by_the_worker_can_shut_it_down() -> None:
    """Fire and forget from inside: the stop is requested and awaited, no error."""
    done = asyncio.Event()

    class Spawner(fluid.Worker):
        task: asyncio.Task[None] | None = None

        async def run(self) -> None:
            async def stop_me() -> None:
                await self.shutdown()
                done.set()

            self.task = asyncio.get_running_loop().create_task(stop_me())
            while self.is_running():
                await self.sleep(60)

    worker = Spawner()
    await worker.startup()
    async with asyncio.timeout(BOUND):
        await done.wait()
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.task is not None
    await worker.task


async def test_awaited_subtask_calling_shutdown_ends_within_grace_without_spinning() -> None:
    """run() awaits a task that awaits shutdown(): a cycle broken by the grace period."""

    class Gatherer(fluid.Worker):
        async def run(self) -> None:
            await asyncio.get_running_loop().create_task(self.shutdown())

    worker = Gatherer(stopping_grace_period=0.1)
    await worker.startup()
    started = time.process_time()
    async with asyncio.timeout(BOUND):
        await worker.wait_stopped()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert time.process_time() - started < BOUND / 2  # no core spun meanwhile


# --------------------------------------- 7. shutdown() during on_startup()


class SlowOpener(fluid.Worker):
    """An on_startup that hangs, like a connect to a database that is down."""

    def __init__(self, swallow: int = 0, grace: float = 0.1) -> None:
        super().__init__(stopping_grace_period=grace)
        self.entered = asyncio.Event()
        self.swallow = swallow
        self.closed = False

    async def on_startup(self) -> None:
        self.entered.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallow <= 0:
                    raise
                self.swallow -= 1

    async def run(self) -> None:  # pragma: no cover - never reached
        raise AssertionError("run() of a worker stopped during startup")

    async def on_shutdown(self) -> None:  # pragma: no cover - on_startup never completed
        self.closed = True


@pytest.mark.parametrize("swallow", [0, 1])
async def test_shutdown_during_on_startup_is_forced_after_the_grace_period(swallow: int) -> None:
    worker = SlowOpener(swallow)
    starting = asyncio.create_task(worker.startup())
    await worker.entered.wait()
    began = time.monotonic()
    async with asyncio.timeout(BOUND):
        await worker.shutdown()
    elapsed = time.monotonic() - began
    assert elapsed >= 0.1 - 0.01  # the grace period was given
    assert elapsed < BOUND
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    with pytest.raises(fluid.WorkerStateError, match="force-stopped during startup"):
        await starting
    assert not worker.closed


async def test_callers_timeout_wins_over_a_hung_on_startup() -> None:
    worker = SlowOpener()
    worker._grace = 3600.0
    starting = asyncio.create_task(worker.startup())
    await worker.entered.wait()
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await worker.shutdown()
    assert time.monotonic() - began < BOUND
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    with pytest.raises(fluid.WorkerStateError):
        await starting


async def test_force_stop_during_startup_lets_the_callers_own_cancel_through() -> None:
    worker = SlowOpener()
    starting = asyncio.create_task(worker.startup())
    await worker.entered.wait()
    starting.cancel()  # the caller's owner cancels it, and a force comes too
    worker.force_stop("both at once")
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert worker.is_stopped()


async def test_tree_stopped_while_a_child_hangs_in_on_startup() -> None:
    # the tree's grace runs out before the child's: the tree is forced, its startup raises
    child = SlowOpener(grace=30)
    tree = fluid.Workers(child, stopping_grace_period=0.1)
    starting = asyncio.create_task(tree.startup())
    await child.entered.wait()
    async with asyncio.timeout(BOUND):
        await tree.shutdown()
    assert tree.worker_state is WorkerState.FORCE_STOPPED
    assert child.is_stopped()
    with pytest.raises(fluid.WorkerStateError):
        await starting


async def test_a_tree_stopped_while_a_child_starts_gives_that_child_its_own_grace() -> None:
    # as a running child would be: its grace, then forced; the tree itself
    # stops gracefully, long before its own grace period (30 s)
    child = SlowOpener(grace=0.1)
    tree = fluid.Workers(child, stopping_grace_period=30)
    starting = asyncio.create_task(tree.startup())
    await child.entered.wait()
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(BOUND):
        await tree.shutdown()
        await starting  # not forced: the tree's start just ends early
    took = loop.time() - began
    assert 0.09 <= took < 10, took
    assert child.worker_state is WorkerState.FORCE_STOPPED
    assert tree.worker_state is WorkerState.STOPPED


# ------------------------------------------------------ force_stop, wait_stopped


async def test_force_stop_skips_the_grace_period() -> None:
    class Stubborn(fluid.Worker):
        async def run(self) -> None:
            await asyncio.sleep(3600)

    worker = Stubborn(stopping_grace_period=3600)
    await worker.startup()
    worker.force_stop("now")
    async with asyncio.timeout(BOUND):
        await worker.wait_stopped()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    worker.force_stop()  # a stopped worker: nothing to do
    await worker.shutdown()


async def test_wait_stopped_cancels_again_a_worker_that_swallows() -> None:
    inside = asyncio.Event()

    class Swallower(fluid.Worker):
        cancels = 0

        async def run(self) -> None:
            inside.set()
            while self.cancels < 2:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    self.cancels += 1

    worker = Swallower(stopping_grace_period=0.01)
    await worker.startup()
    await inside.wait()
    worker.force_stop()
    async with asyncio.timeout(BOUND):
        await worker.wait_stopped()
    assert worker.cancels == 2
    assert worker.worker_state is WorkerState.STOPPED  # it swallowed both and returned


async def test_wait_stopped_cancelled_forces_the_worker_first() -> None:
    class Stubborn(fluid.Worker):
        async def run(self) -> None:
            await asyncio.sleep(3600)

    worker = Stubborn(stopping_grace_period=3600)
    await worker.startup()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await worker.wait_stopped()
    assert worker.worker_state is WorkerState.FORCE_STOPPED


async def test_force_stop_from_another_thread() -> None:
    class Stubborn(fluid.Worker):
        async def run(self) -> None:
            await asyncio.sleep(3600)

    worker = Stubborn(stopping_grace_period=3600)
    await worker.startup()
    await asyncio.to_thread(worker.force_stop, "from a thread")
    async with asyncio.timeout(BOUND):
        await worker.wait_stopped()
    assert worker.worker_state is WorkerState.FORCE_STOPPED


# ------------------------------------------- 8. KeyboardInterrupt, SystemExit

_BASE_EXCEPTION_PROGRAM = """
import asyncio, gc, fluid

class W(fluid.Worker):
    async def run(self):
        raise {error}

async def main():
    w = W()
    await w.startup()
    await w.wait_for_shutdown()

try:
    asyncio.run(main())
except {name}:
    print("propagated")
gc.collect()
"""


@pytest.mark.parametrize(
    ("error", "name"),
    [("SystemExit(3)", "SystemExit"), ("KeyboardInterrupt()", "KeyboardInterrupt")],
)
def test_base_exception_propagates_and_is_not_logged_as_unretrieved(error: str, name: str) -> None:
    program = _BASE_EXCEPTION_PROGRAM.format(error=error, name=name)
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "propagated", out.stderr
    assert "never retrieved" not in out.stderr, out.stderr


async def test_a_forced_startup_whose_on_startup_swallowed_leaves_the_caller_uncancelled() -> None:
    """The cancellations force_stop() made are its own: the caller's task is left clean."""

    class Swallowing(fluid.Worker):
        async def on_startup(self) -> None:
            with contextlib.suppress(asyncio.CancelledError):  # a driver that swallows it
                await asyncio.sleep(3600)

        async def run(self) -> None:  # pragma: no cover - never reached
            raise AssertionError("run() of a worker forced during startup")

    worker = Swallowing()
    asyncio.get_running_loop().call_later(0.01, worker.force_stop)
    with pytest.raises(fluid.WorkerStateError, match="force-stopped during startup"):
        await worker.startup()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    assert worker.worker_state is WorkerState.FORCE_STOPPED


async def test_a_callers_cancel_swallowed_with_the_force_still_cancels_the_caller() -> None:
    class Swallowing(fluid.Worker):
        async def on_startup(self) -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

        async def run(self) -> None:  # pragma: no cover - never reached
            raise AssertionError("run() of a worker forced during startup")

    worker = Swallowing()
    starting = asyncio.create_task(worker.startup())
    await asyncio.sleep(0.01)
    starting.cancel()
    worker.force_stop()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert worker.is_stopped()


async def test_a_self_shutdown_raises_without_requesting_a_stop() -> None:
    """The call is refused before it changes anything: the worker is still running."""
    seen: list[bool] = []

    class Caller(fluid.Worker):
        async def run(self) -> None:
            with contextlib.suppress(fluid.WorkerStateError):
                await self.shutdown()
            seen.append(self.is_running())
            while self.is_running():
                await self.sleep(60)

    worker = Caller()
    await worker.startup()
    async with asyncio.timeout(BOUND):
        await wait_until(lambda: bool(seen))
    assert seen == [True]
    await worker.shutdown()
    assert worker.worker_state is WorkerState.STOPPED


# ------------------------------------- a cancellation nobody asked for (aio-fluid)


class _QuitsByCancel(fluid.Worker):
    """run() raises CancelledError itself: nobody asked the worker to stop."""

    async def run(self) -> None:
        raise asyncio.CancelledError


class _AwaitsACancelledTask(fluid.Worker):
    """run() lets through the cancellation of a task it awaits, cancelled by someone else."""

    async def run(self) -> None:
        inner = asyncio.create_task(asyncio.Event().wait())
        asyncio.get_running_loop().call_soon(inner.cancel)
        await inner


@pytest.mark.parametrize("kind", [_QuitsByCancel, _AwaitsACancelledTask])
async def test_a_cancellation_nobody_asked_for_is_the_workers_error(
    kind: type[fluid.Worker],
) -> None:
    worker = kind()
    async with asyncio.timeout(10):
        await worker.startup()
        with pytest.raises(asyncio.CancelledError):
            await worker.wait_for_shutdown()
        with pytest.raises(asyncio.CancelledError):
            await worker.shutdown()
    assert worker.worker_state is fluid.WorkerState.STOPPED
    status = await worker.status()
    assert status["error"] is not None
    assert status["error"].startswith("CancelledError")
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0  # the caller itself was never cancelled


async def test_a_forced_stop_is_still_a_forced_stop_not_an_error() -> None:
    class Deaf(fluid.Worker):
        async def run(self) -> None:
            await asyncio.Event().wait()

    worker = Deaf(stopping_grace_period=0.05)
    async with asyncio.timeout(10):
        await worker.startup()
        await worker.shutdown()
    assert worker.worker_state is fluid.WorkerState.FORCE_STOPPED
    assert (await worker.status())["error"] is None


async def test_a_supervised_worker_ended_by_a_stray_cancel_is_restarted() -> None:
    runs: list[int] = []

    class Once(fluid.Worker):
        async def run(self) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise asyncio.CancelledError
            await self.sleep(60)

    child = Once(name="once")
    tree = fluid.Workers(
        child, name="tree", strategy="one_for_one", backoff=fluid.Backoff(initial=0)
    )
    async with asyncio.timeout(10), tree:
        await wait_until(lambda: len(runs) == 2 and child.is_running())
    assert tree.worker_state is fluid.WorkerState.STOPPED


@pytest.mark.parametrize("method", ["wait_stopped", "shutdown"])
async def test_a_waiter_cancelled_at_every_turn_does_not_cut_a_forced_workers_on_shutdown(
    method: str,
) -> None:
    # anyio re-delivers a cancelled scope's cancel at every loop turn; each
    # must not force the worker again while its on_shutdown() closes
    class Closes(fluid.Worker):
        closed = False

        async def run(self) -> None:
            await asyncio.get_running_loop().create_future()  # ends by a cancel only

        async def on_shutdown(self) -> None:
            for _ in range(5):
                await asyncio.sleep(0.002)  # a flush, a connection's close
            self.closed = True

    worker = Closes(name="closes", stopping_grace_period=30)
    await worker.startup()
    await asyncio.sleep(0)
    worker.force_stop("the deploy is out of time")
    waiter = asyncio.ensure_future(getattr(worker, method)())
    await asyncio.sleep(0)  # the waiter waits
    cancels = 0
    async with asyncio.timeout(10):
        while not waiter.done():
            waiter.cancel()
            cancels += 1
            await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert worker.closed  # its on_shutdown() completed (it took several turns)
    assert cancels > 5
