"""ThreadWorker: contract item 16 of DESIGN.md, for threads."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import traceback

import pytest

import fluid
from fluid import WorkerState

from .helpers import Deaf, wait_until


def sleeper(worker: fluid.ThreadWorker) -> None:
    """Sleep until a stop is requested (an hour at most)."""
    while worker.is_running():
        worker.wait_for_stop(3600)


def figures(status: fluid.WorkerStatus) -> object:
    """The ``thread`` figures of a thread worker's status."""
    return dict(status)["thread"]


class Hooked(fluid.ThreadWorker):
    """Records its hooks, and the thread each ran in."""

    def __init__(self, name: str = "hooked", fail_in: str = "") -> None:
        super().__init__(name=name, stopping_grace_period=2)
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self.fail_in = fail_in

    def _record(self, hook: str) -> None:
        self.calls.append(hook)
        self.threads.add(threading.current_thread().name)
        if hook == self.fail_in:
            raise KeyError(f"{hook} failed")

    async def on_startup(self) -> None:
        self.calls.append("on_startup")

    def setup(self) -> None:
        time.sleep(0.05)  # slow work: startup() must wait for it
        self._record("setup")

    def main(self) -> None:
        self._record("main")
        sleeper(self)

    def teardown(self) -> None:
        self._record("teardown")

    async def on_shutdown(self) -> None:
        self.calls.append("on_shutdown")


# ------------------------------------------------------------- start and stop


async def test_the_target_runs_in_its_own_thread_and_a_stop_wakes_it_at_once() -> None:
    seen: list[str] = []

    def target(worker: fluid.ThreadWorker) -> None:
        seen.append(threading.current_thread().name)
        sleeper(worker)

    worker = fluid.ThreadWorker(target, name="sleepy", stopping_grace_period=5)
    await worker.startup()
    await wait_until(lambda: bool(seen))
    thread = worker.thread
    assert seen == ["fluid:sleepy"]
    assert thread is not None
    assert thread.daemon
    assert thread.is_alive()
    start = time.monotonic()
    await worker.shutdown()
    assert time.monotonic() - start < 10  # not the hour of wait_for_stop
    assert worker.worker_state is WorkerState.STOPPED
    assert not thread.is_alive()


async def test_startup_waits_for_setup_and_the_hooks_run_in_order_in_the_thread() -> None:
    worker = Hooked()
    await worker.startup()
    assert worker.calls[:2] == ["on_startup", "setup"]
    await worker.shutdown()
    assert worker.calls == ["on_startup", "setup", "main", "teardown", "on_shutdown"]
    assert worker.threads == {"fluid:hooked"}


async def test_a_worker_stopped_during_on_startup_starts_no_thread() -> None:
    class StopsEarly(Hooked):
        async def on_startup(self) -> None:
            self.gracefully_stop()

    worker = StopsEarly()
    await worker.startup()
    await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.thread is None
    assert worker.calls == ["on_shutdown"]


# ---------------------------------------------------------------- errors


async def test_an_error_in_the_thread_surfaces_as_is_with_its_traceback() -> None:
    raised: list[Exception] = []

    def fail_in_thread(worker: fluid.ThreadWorker) -> None:
        raised.append(ValueError("thread failed"))
        raise raised[0]

    worker = fluid.ThreadWorker(fail_in_thread)
    await worker.startup()
    with pytest.raises(ValueError, match="thread failed") as info:
        await worker.wait_for_shutdown()
    assert info.value is raised[0]
    assert "in fail_in_thread" in "".join(traceback.format_exception(info.value))
    with pytest.raises(
        ValueError, match="thread failed"
    ) as again:  # and again, after the worker ended
        await worker.shutdown()
    assert again.value is raised[0]
    assert worker.worker_state is WorkerState.STOPPED


async def test_an_error_in_setup_is_raised_by_startup() -> None:
    worker = Hooked(fail_in="setup")
    with pytest.raises(KeyError, match="setup failed") as info:
        await worker.startup()
    assert "in setup" in "".join(traceback.format_exception(info.value))
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.calls == ["on_startup", "setup", "on_shutdown"]  # no main, no teardown
    assert worker.thread is not None
    assert not worker.thread.is_alive()


async def test_teardown_runs_after_an_error_in_main_and_the_main_error_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FailsTwice(Hooked):
        def main(self) -> None:
            self._record("main")
            raise ValueError("main failed")

    worker = FailsTwice(fail_in="teardown")
    await worker.startup()
    with pytest.raises(ValueError, match="main failed"):
        await worker.wait_for_shutdown()
    assert worker.calls[-2:] == ["teardown", "on_shutdown"]
    assert "teardown of worker 'hooked' failed" in caplog.text


async def test_an_error_in_teardown_alone_surfaces() -> None:
    worker = Hooked(fail_in="teardown")
    await worker.startup()
    with pytest.raises(KeyError, match="teardown failed"):
        await worker.shutdown()


# -------------------------------------------------------------- deaf threads


async def test_a_deaf_thread_is_abandoned_reported_and_told_to_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    running_when_released: list[bool] = []

    def deaf(worker: fluid.ThreadWorker) -> None:
        release.wait(10)  # ignores the stop request
        running_when_released.append(worker.is_running())
        sleeper(worker)

    worker = fluid.ThreadWorker(deaf, name="deaf", stopping_grace_period=0.05)
    await worker.startup()
    first = worker.thread
    with caplog.at_level(logging.ERROR, logger="fluid"):
        await worker.shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert "thread 'fluid:deaf' of worker 'deaf'" in caplog.text
    assert "abandoned" in caplog.text
    assert figures(await worker.status()) == {
        "name": "fluid:deaf",
        "alive": True,
        "abandoned": True,
    }

    await worker.startup()  # a new thread; the abandoned one still runs
    assert worker.thread is not first
    release.set()
    await wait_until(lambda: len(running_when_released) == 2)
    # The abandoned thread is told to stop; the new one runs on.
    assert sorted(running_when_released) == [False, True]
    assert first is not None
    await wait_until(lambda: not first.is_alive())
    await worker.shutdown()
    assert str(worker.worker_state) == "stopped"  # this time, gracefully


async def test_a_forced_parent_asks_the_thread_to_stop_before_abandoning_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = fluid.ThreadWorker(sleeper, name="polite", stopping_grace_period=5)
    # The deaf worker, stopped first, outlasts the tree's grace period: the
    # tree is forced and cancels the thread worker, which was never asked.
    tree = fluid.Workers(worker, Deaf("deaf", 1.0), stopping_grace_period=0.05)
    await tree.startup()
    await tree.shutdown()
    assert tree.worker_state is WorkerState.FORCE_STOPPED
    assert worker.thread is not None
    assert not worker.thread.is_alive()
    assert figures(await worker.status()) == {
        "name": "fluid:polite",
        "alive": False,
        "abandoned": False,
    }
    assert "abandoned" not in caplog.text


# -------------------------------------------------------------------- trees


async def test_thread_workers_in_a_tree_stop_in_reverse_order() -> None:
    stopped: list[str] = []
    tree = fluid.Workers(*(fluid.ThreadWorker(sleeper, name=n) for n in "abc"), name="t")
    tree.add_observer(lambda e: stopped.append(e.worker.worker_name) if e.kind == "stopped" else 0)
    async with tree:
        assert all(child.is_running() for child in tree.children)
    assert stopped == ["c", "b", "a", "t"]


async def test_a_failing_thread_worker_fails_its_tree() -> None:
    def fail_in_thread(worker: fluid.ThreadWorker) -> None:
        raise ValueError("thread failed")

    other = fluid.ThreadWorker(sleeper, name="other")
    tree = fluid.Workers(other, fluid.ThreadWorker(fail_in_thread), name="tree")
    await tree.startup()
    with pytest.raises(ValueError, match="thread failed") as info:
        await tree.wait_for_shutdown()
    assert "raised by worker 'fail_in_thread' of tree 'tree'" in str(info.value.__notes__)
    assert "in fail_in_thread" in "".join(traceback.format_exception(info.value))
    assert other.worker_state is WorkerState.STOPPED


async def test_a_supervising_tree_restarts_a_crashed_thread_worker_in_a_new_thread() -> None:
    threads: list[threading.Thread] = []

    def crash_once(worker: fluid.ThreadWorker) -> None:
        threads.append(threading.current_thread())
        if len(threads) == 1:
            raise ValueError("first run crashes")
        sleeper(worker)

    worker = fluid.ThreadWorker(crash_once, name="flaky")
    tree = fluid.Workers(worker, strategy="one_for_one", backoff=fluid.Backoff(initial=0, jitter=0))
    async with tree:
        # the restart is counted once its startup() returned, after the thread began
        await wait_until(lambda: len(threads) == 2 and worker.restarts == 1)
        assert worker.is_running()
        assert threads[0] is not threads[1]
        assert not threads[0].is_alive()


# --------------------------------------------------------------- contextvars

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_contextvars_of_the_startup_caller_flow_into_the_thread() -> None:
    seen: list[str] = []

    def target(worker: fluid.ThreadWorker) -> None:
        seen.append(request_id.get("missing"))

    request_id.set("req-42")
    worker = fluid.ThreadWorker(target)
    await worker.startup()
    await worker.wait_for_shutdown()
    assert seen == ["req-42"]


# ------------------------------------------------------------ status and API


async def test_status_reports_the_thread_and_is_json() -> None:
    worker = fluid.ThreadWorker(sleeper)
    assert figures(await worker.status()) == {"name": None, "alive": False, "abandoned": False}
    async with worker:
        status = await worker.status()
        assert figures(status) == {"name": "fluid:sleeper", "alive": True, "abandoned": False}
        json.dumps(status)


async def test_wait_for_stop_refuses_to_block_the_event_loop() -> None:
    worker = fluid.ThreadWorker(sleeper)
    with pytest.raises(RuntimeError, match="for its thread"):
        worker.wait_for_stop(0)
    async with worker:
        with pytest.raises(RuntimeError, match=r"await worker\.sleep"):
            worker.wait_for_stop(0)


def test_names_come_from_the_target_or_the_class() -> None:
    assert fluid.ThreadWorker(sleeper).worker_name == "sleeper"
    assert fluid.ThreadWorker(sleeper, name="x").worker_name == "x"
    assert Hooked(name="").worker_name == "hooked"


async def _async_target(worker: fluid.ThreadWorker) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": 42}, TypeError, "target must be a callable, got 42"),
        ({"target": _async_target}, TypeError, "coroutine function"),
        ({}, TypeError, "needs a target function or a subclass overriding main"),
        ({"target": sleeper, "stopping_grace_period": -1}, ValueError, "-1"),
        ({"target": sleeper, "name": 3}, TypeError, "name must be a string"),
    ],
)
def test_bad_arguments_are_rejected_at_the_call(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        fluid.ThreadWorker(**kwargs)  # type: ignore[arg-type]
