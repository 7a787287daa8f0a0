"""The Worker lifecycle: contract items 1-7 of DESIGN.md."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import traceback

import pytest

import fluid
from fluid import WorkerState

from .helpers import Deaf, Idle, live_tasks


class Recording(fluid.Worker):
    """Records every hook call; ``run`` does what the test asks."""

    def __init__(self, name: str = "rec", stopping_grace_period: float = 1.0) -> None:
        super().__init__(name, stopping_grace_period)
        self.calls: list[str] = []
        self.fail_startup: Exception | None = None
        self.fail_run: Exception | None = None
        self.fail_shutdown: Exception | None = None
        self.startup_gate: asyncio.Event | None = None

    async def on_startup(self) -> None:
        self.calls.append("on_startup:begin")
        if self.startup_gate is not None:
            await self.startup_gate.wait()
        await asyncio.sleep(0)
        if self.fail_startup is not None:
            raise self.fail_startup
        self.calls.append("on_startup:end")

    async def run(self) -> None:
        self.calls.append("run")
        if self.fail_run is not None:
            raise self.fail_run
        while self.is_running():
            await self.sleep(60)

    async def on_shutdown(self) -> None:
        self.calls.append("on_shutdown")
        if self.fail_shutdown is not None:
            raise self.fail_shutdown

    def after_shutdown(self, reason: str, code: int = 0) -> None:
        self.calls.append(f"after_shutdown:{reason}:{code}")


# --------------------------------------------------------------- 1. startup


async def test_startup_returns_running_after_on_startup() -> None:
    worker = Recording()
    await worker.startup()
    assert worker.worker_state is WorkerState.RUNNING
    assert worker.calls == ["on_startup:begin", "on_startup:end"]
    assert worker.has_started()
    assert worker.is_running()
    await worker.shutdown()
    assert worker.calls[-2:] == ["on_shutdown", "after_shutdown:stopped:0"]


async def test_on_startup_error_is_raised_by_startup_and_worker_ends_stopped() -> None:
    worker = Recording()
    worker.fail_startup = KeyError("no db")
    with pytest.raises(KeyError, match="no db"):
        await worker.startup()
    assert worker.worker_state is WorkerState.STOPPED
    assert "run" not in worker.calls
    assert "on_shutdown" not in worker.calls
    assert not live_tasks()
    await worker.shutdown()  # nothing to raise: startup() reported the error


async def test_starting_a_running_worker_raises_a_readable_error() -> None:
    async with Recording(name="poller") as worker:
        with pytest.raises(fluid.WorkerStartError, match="'poller' cannot start: it is running"):
            await worker.startup()
        worker.gracefully_stop()
        with pytest.raises(fluid.WorkerStartError, match="it is stopping"):
            await worker.startup()


@pytest.mark.parametrize("force", [False, True])
async def test_a_stopped_worker_can_be_started_again(force: bool) -> None:
    worker: fluid.Worker = Deaf() if force else Recording()
    for _ in range(2):
        await worker.startup()
        assert worker.is_running()
        await worker.shutdown()
        expected = WorkerState.FORCE_STOPPED if force else WorkerState.STOPPED
        assert worker.worker_state is expected


async def test_restart_clears_the_previous_error() -> None:
    worker = Recording()
    worker.fail_run = ValueError("once")
    await worker.startup()
    with pytest.raises(ValueError, match="once"):
        await worker.wait_for_shutdown()
    worker.fail_run = None
    await worker.startup()
    await worker.shutdown()  # no error from the previous run


async def test_cancelled_startup_leaves_the_worker_stopped() -> None:
    worker = Recording()
    worker.startup_gate = asyncio.Event()
    task = asyncio.create_task(worker.startup())
    await asyncio.sleep(0)
    assert worker.calls == ["on_startup:begin"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert worker.worker_state is WorkerState.STOPPED
    assert not live_tasks()


# ---------------------------------------------------- 2. stop and grace period


async def test_gracefully_stop_is_sync_idempotent_and_harmless_before_start() -> None:
    worker = Recording()
    worker.gracefully_stop()
    assert worker.worker_state is WorkerState.INIT
    await worker.startup()
    assert worker.gracefully_stop() is None  # type: ignore[func-returns-value]
    worker.gracefully_stop()
    assert worker.is_stopping()
    await worker.wait_for_shutdown()
    worker.gracefully_stop()
    assert worker.is_stopped()


async def test_shutdown_cancels_a_worker_that_ignores_the_stop() -> None:
    worker = Deaf(stopping_grace_period=0.05)
    await worker.startup()
    async with asyncio.timeout(2):
        await worker.shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert worker.cancelled
    assert not live_tasks()


async def test_shutdown_on_a_worker_never_started_returns() -> None:
    worker = Recording()
    await worker.shutdown()
    await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.INIT


def test_waiting_out_a_grace_period_does_not_spin_the_loop() -> None:
    """A polling wait would turn the loop hundreds of times in 0.3 s; an event wait a few."""

    class CountingLoop(asyncio.SelectorEventLoop):
        turns = 0

        def _run_once(self) -> None:
            CountingLoop.turns += 1
            super()._run_once()  # type: ignore[misc]

    async def main() -> int:
        worker = Deaf(stopping_grace_period=0.3)
        await worker.startup()
        before = CountingLoop.turns
        await worker.shutdown()
        return CountingLoop.turns - before

    loop = CountingLoop()
    try:
        turns = loop.run_until_complete(main())
    finally:
        loop.close()
    assert turns < 15


# ----------------------------------------------------------- 3. prompt stop


async def test_a_worker_asleep_wakes_at_once_on_stop() -> None:
    worker = Idle()
    await worker.startup()
    async with asyncio.timeout(1):  # the sleep is 60 s
        await worker.shutdown()
    assert worker.worker_state is WorkerState.STOPPED


async def test_gracefully_stop_from_another_thread_wakes_the_worker() -> None:
    worker = Idle()
    await worker.startup()
    thread = threading.Thread(target=worker.gracefully_stop)
    thread.start()
    async with asyncio.timeout(1):
        await worker.wait_for_shutdown()
    thread.join()
    assert worker.worker_state is WorkerState.STOPPED


async def test_sleep_returns_at_once_when_not_running() -> None:
    worker = Idle()
    async with asyncio.timeout(1):
        await worker.sleep(60)


# ------------------------------------------------------------ 4. on_shutdown


async def test_on_shutdown_runs_after_run_returns_on_its_own() -> None:
    class Once(Recording):
        async def run(self) -> None:
            self.calls.append("run")

    worker = Once()
    await worker.startup()
    await worker.wait_for_shutdown()
    assert worker.calls[-3:] == ["run", "on_shutdown", "after_shutdown:stopped:0"]


async def test_on_shutdown_runs_after_an_error() -> None:
    worker = Recording()
    worker.fail_run = RuntimeError("bad")
    await worker.startup()
    with pytest.raises(RuntimeError):
        await worker.wait_for_shutdown()
    assert worker.calls[-2:] == ["on_shutdown", "after_shutdown:failed: RuntimeError: bad:1"]


async def test_on_shutdown_runs_after_a_forced_stop() -> None:
    closed: list[str] = []

    class DeafWithCleanup(Deaf):
        async def on_shutdown(self) -> None:
            closed.append("closed")

    worker = DeafWithCleanup()
    await worker.startup()
    await worker.shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert closed == ["closed"]


async def test_a_hanging_on_shutdown_is_cancelled_too() -> None:
    class HangsInShutdown(Deaf):
        async def on_shutdown(self) -> None:
            await asyncio.Event().wait()

    worker = HangsInShutdown(stopping_grace_period=0.05)
    await worker.startup()
    async with asyncio.timeout(3):
        await worker.shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert not live_tasks()


# ------------------------------------------------------------ 5. errors kept


async def test_run_error_is_raised_by_shutdown_and_wait_even_later() -> None:
    worker = Recording()
    worker.fail_run = ValueError("boom")
    await worker.startup()
    with pytest.raises(ValueError, match="boom"):
        await worker.wait_for_shutdown()
    assert worker.is_stopped()
    for _ in range(2):
        with pytest.raises(ValueError, match="boom") as info:
            await worker.shutdown()
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "run" in frames  # the original traceback is kept
        assert frames.count("run") == 1  # and not grown by each raise


async def test_on_shutdown_error_is_raised_when_run_was_fine() -> None:
    worker = Recording()
    worker.fail_shutdown = OSError("close failed")
    await worker.startup()
    with pytest.raises(OSError, match="close failed"):
        await worker.shutdown()


async def test_run_error_wins_over_on_shutdown_error_which_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Recording()
    worker.fail_run = ValueError("run")
    worker.fail_shutdown = OSError("close")
    await worker.startup()
    with pytest.raises(ValueError, match="run"):
        await worker.shutdown()
    assert "on_shutdown of worker 'rec' failed" in caplog.text


async def test_run_error_is_logged_when_it_happens(caplog: pytest.LogCaptureFixture) -> None:
    worker = Recording()
    worker.fail_run = ValueError("boom")
    with caplog.at_level(logging.ERROR, logger="fluid"):
        await worker.startup()
        with pytest.raises(ValueError, match="boom"):
            await worker.wait_for_shutdown()
    assert "worker 'rec' failed" in caplog.text


async def test_after_shutdown_errors_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Bad(Idle):
        def after_shutdown(self, reason: str, code: int = 0) -> None:
            raise RuntimeError("oops")

    worker = Bad()
    await worker.startup()
    await worker.shutdown()
    assert "after_shutdown of worker 'bad' failed" in caplog.text


# ----------------------------------------------------------- 6. nothing left


async def test_no_task_is_left_after_shutdown_even_forced() -> None:
    workers = [Idle(name="idle"), Deaf(name="deaf")]
    for worker in workers:
        await worker.startup()
    assert len(live_tasks()) == 2
    for worker in workers:
        await worker.shutdown()
    assert not live_tasks()


async def test_cancelling_shutdown_still_stops_the_worker() -> None:
    worker = Deaf(stopping_grace_period=10)
    await worker.startup()
    task = asyncio.create_task(worker.shutdown())
    await asyncio.sleep(0)
    assert worker.is_stopping()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert not live_tasks()


async def test_a_worker_cancelled_from_outside_ends_force_stopped() -> None:
    worker = Idle()
    await worker.startup()
    (task,) = live_tasks()
    task.cancel()
    async with asyncio.timeout(1):
        await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED


# ------------------------------------------------- 7. context manager, status


async def test_async_with_starts_and_stops() -> None:
    async with Recording() as worker:
        assert worker.is_running()
    assert worker.worker_state is WorkerState.STOPPED


async def test_status_is_json_serialisable_with_name_state_and_error() -> None:
    worker = Recording(name="job")
    assert await worker.status() == {
        "name": "job",
        "path": "job",
        "state": "init",
        "restarts": 0,
        "uptime": None,
        "error": None,
    }
    worker.fail_run = ValueError("bad input")
    await worker.startup()
    running = await worker.status()
    assert running["uptime"] is not None
    assert running["uptime"] >= 0
    with pytest.raises(ValueError, match="bad input"):
        await worker.wait_for_shutdown()
    status = await worker.status()
    assert json.loads(json.dumps(status)) == {
        "name": "job",
        "path": "job",
        "state": "stopped",
        "restarts": 0,
        "uptime": None,
        "error": "ValueError: bad input",
    }


async def test_repr_names_the_worker_and_its_state() -> None:
    assert repr(Recording(name="job")) == "<Recording 'job' init>"


# --------------------------------------------------------------- bad input


def test_default_name_comes_from_the_class_name() -> None:
    class HTTPPoller(Idle):
        pass

    assert HTTPPoller().worker_name == "http_poller"
    assert Idle().worker_name == "idle"


@pytest.mark.parametrize(
    ("grace", "error"),
    [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("1", TypeError)],
)
def test_bad_grace_period_is_rejected(grace: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="stopping_grace_period"):
        Idle(stopping_grace_period=grace)  # type: ignore[arg-type]


def test_bool_is_not_a_number_of_seconds() -> None:
    with pytest.raises(TypeError, match="stopping_grace_period"):
        Idle(stopping_grace_period=True)


def test_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="name must be a string"):
        Idle(name=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a/b", "/", "trailing/"])
def test_a_name_with_a_slash_is_refused_at_construction(name: str) -> None:
    # "/" separates a worker path's names: "outer/a/b" would be two paths
    with pytest.raises(ValueError, match="contains '/'"):
        Idle(name=name)


def test_a_derived_name_with_a_slash_is_refused_too() -> None:
    class ByUrl(Idle):
        def default_name(self) -> str:
            return "poll http://host/path"

    with pytest.raises(ValueError, match="'poll http://host/path' contains '/'"):
        ByUrl()
    assert ByUrl(name="poll host").worker_name == "poll host"


async def test_every_worker_of_a_tree_has_a_path_of_its_own() -> None:
    # before the check, Idle(name="a/b") in the root and Idle(name="b") in the
    # tree "a" shared the path "root/a/b"; find() and paths now stay one-to-one
    inner = fluid.Workers(Idle(name="b"), name="a")
    with pytest.raises(ValueError, match="contains '/'"):
        fluid.Workers(inner, Idle(name="a/b"), name="root")
    root = fluid.Workers(inner, Idle(name="a-b"), name="root")
    paths = [w.worker_path for w in root.workers()]
    assert sorted(paths) == ["root/a-b", "root/a/b"]
    assert [w.worker_path for w in root.find("b")] == ["root/a/b"]


def test_workers_of_a_leaf_is_itself() -> None:
    worker = Idle()
    assert list(worker.workers()) == [worker]
    assert worker.num_workers == 1
    assert worker.stopping_grace_period == fluid.STOPPING_GRACE_PERIOD


def test_gracefully_stop_from_a_thread_after_the_loop_closed_does_not_raise() -> None:
    worker = Idle()
    loop = asyncio.new_event_loop()
    loop.close()
    # the state a worker is left in when its loop was closed under it
    worker._loop, worker._state = loop, WorkerState.RUNNING
    worker._thread_id = threading.get_ident()
    thread = threading.Thread(target=worker.gracefully_stop)
    thread.start()
    thread.join()
    assert worker.is_running()  # nothing could run it; the call just returned


async def test_an_error_after_the_run_ends_the_worker_instead_of_hanging() -> None:
    class Buggy(Idle):
        def after_run(self) -> None:  # a subclass bug in a hook
            raise RuntimeError("hook bug")

    worker = Buggy()
    await worker.startup()
    with pytest.raises(RuntimeError, match="hook bug"):
        async with asyncio.timeout(2):
            await worker.shutdown()
    assert worker.is_stopped()


async def test_an_observer_added_to_a_running_tree_hears_its_workers_stop() -> None:
    """Transitions are told only once an observer exists (a flag), from then on all of them."""
    worker = Idle(name="idle")
    tree = fluid.Workers(worker, name="tree")
    await tree.startup()
    heard: list[tuple[str, str]] = []
    tree.add_observer(lambda t: heard.append((t.kind, t.path)))
    await tree.shutdown()
    assert ("stopping", "tree/idle") in heard
    assert ("stopped", "tree/idle") in heard
    assert heard[-1] == ("stopped", "tree")


class _Equal(Idle):
    """A worker equal to any other of its class, and so unhashable (as a dataclass is)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    __hash__ = None  # type: ignore[assignment]


async def test_observers_belong_to_one_worker_even_if_it_is_unhashable_or_equal_to_another() -> (
    None
):
    first, second = _Equal(name="first"), _Equal(name="second")
    heard: list[str] = []
    first.add_observer(lambda t: heard.append(f"first heard {t.path} {t.kind}"))
    async with second:
        pass
    async with first:
        pass
    assert heard == [
        "first heard first started",
        "first heard first stopping",
        "first heard first stopped",
    ]
