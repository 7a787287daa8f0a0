"""ProcessWorker: contract item 16 of DESIGN.md, for processes.

The children run targets from ``tests/_process_targets.py``: the spawn start
method imports them by name.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import time
import traceback
from pathlib import Path

import pytest

import fluid
from fluid import WorkerState

from . import _process_targets as targets
from .helpers import wait_until


def sleeper(worker: fluid.ThreadWorker) -> None:
    """A thread worker's target: sleep until a stop is requested."""
    while worker.is_running():
        worker.wait_for_stop(3600)


def figures(status: fluid.WorkerStatus) -> object:
    """The ``process`` figures of a process worker's status."""
    return dict(status)["process"]


def assert_reaped(pid: int) -> None:
    """The child was joined: it is no zombie waiting for us."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# ------------------------------------------------------------- start and stop


async def test_the_target_runs_in_a_child_and_a_stop_ends_it_promptly() -> None:
    worker = fluid.ProcessWorker(targets.wait_until_stopped, stopping_grace_period=5)
    await worker.startup()
    pid = worker.pid
    assert pid is not None
    assert pid != os.getpid()
    assert figures(await worker.status()) == {"pid": pid, "alive": True, "exitcode": None}
    start = time.monotonic()
    await worker.shutdown()
    assert time.monotonic() - start < 10  # not the hour of wait_for_stop
    assert worker.worker_state is WorkerState.STOPPED
    assert figures(await worker.status()) == {"pid": pid, "alive": False, "exitcode": 0}
    assert_reaped(pid)


async def test_startup_waits_for_setup_and_the_hooks_run_in_the_child(tmp_path: Path) -> None:
    log = tmp_path / "hooks"
    worker = targets.Hooks(log, stopping_grace_period=5)
    await worker.startup()
    assert log.read_text().split()[0] == "setup"
    await worker.shutdown()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [hook for hook, _ in lines] == ["setup", "main", "teardown"]
    assert {pid for _, pid in lines} == {str(worker.pid)}


async def test_a_restarted_worker_runs_in_a_new_process() -> None:
    worker = fluid.ProcessWorker(targets.wait_until_stopped, stopping_grace_period=5)
    pids = []
    for _ in range(2):
        async with worker:
            pids.append(worker.pid)
    assert pids[0] != pids[1]
    assert worker.worker_state is WorkerState.STOPPED


async def test_the_fork_start_method_needs_no_pickling(tmp_path: Path) -> None:
    out = tmp_path / "pid"
    worker = fluid.ProcessWorker(lambda w: out.write_text(str(os.getpid())), mp_context="fork")
    await worker.startup()
    await worker.wait_for_shutdown()
    assert worker.worker_state is WorkerState.STOPPED
    assert out.read_text() == str(worker.pid)


# ---------------------------------------------------------------- errors


async def test_the_child_error_comes_back_with_its_traceback() -> None:
    worker = fluid.ProcessWorker(targets.raise_in_child)
    await worker.startup()
    with pytest.raises(ValueError, match="boom in the child") as info:
        await worker.wait_for_shutdown()
    text = "".join(traceback.format_exception(info.value))
    assert "in raise_in_child" in text
    assert f"(pid {worker.pid})" in text
    with pytest.raises(ValueError, match="boom") as again:  # and again, after the worker ended
        await worker.shutdown()
    assert again.value is info.value


async def test_an_error_that_does_not_pickle_becomes_a_process_worker_error() -> None:
    worker = fluid.ProcessWorker(targets.raise_unpicklable)
    await worker.startup()
    with pytest.raises(fluid.ProcessWorkerError, match="Unpicklable: cannot travel") as info:
        await worker.wait_for_shutdown()
    assert "in raise_unpicklable" in info.value.child_traceback
    assert "in raise_unpicklable" in "".join(traceback.format_exception(info.value))


async def test_an_error_in_setup_is_raised_by_startup(tmp_path: Path) -> None:
    worker = targets.Hooks(tmp_path / "hooks", fail_in="setup")
    with pytest.raises(KeyError, match="setup failed") as info:
        await worker.startup()
    assert "in setup" in "".join(traceback.format_exception(info.value))
    assert worker.worker_state is WorkerState.STOPPED
    assert figures(await worker.status()) == {"pid": worker.pid, "alive": False, "exitcode": 0}
    assert (tmp_path / "hooks").read_text().split()[0] == "setup"


async def test_an_error_in_teardown_surfaces_from_shutdown(tmp_path: Path) -> None:
    worker = targets.Hooks(tmp_path / "hooks", fail_in="teardown")
    await worker.startup()
    with pytest.raises(KeyError, match="teardown failed"):
        await worker.shutdown()


async def test_a_non_zero_exit_is_an_error_naming_the_code() -> None:
    worker = fluid.ProcessWorker(targets.exit_with_3)
    await worker.startup()
    with pytest.raises(fluid.ProcessWorkerError, match="exited with code 3") as info:
        await worker.wait_for_shutdown()
    assert info.value.exitcode == 3


async def test_a_sigkilled_child_is_detected_at_once() -> None:
    worker = fluid.ProcessWorker(targets.wait_until_stopped)
    await worker.startup()
    pid = worker.pid
    assert pid is not None
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(fluid.ProcessWorkerError, match="was killed by SIGKILL") as info:
        async with asyncio.timeout(10):  # a child never noticed: a hang
            await worker.wait_for_shutdown()
    latency = time.monotonic() - start
    # seen from its sentinel, at once: a poll of a second or more fails this
    # (bench/executors.py measures the real figure)
    assert latency < 2, f"took {latency:.3f}s"
    assert info.value.exitcode == -signal.SIGKILL
    assert worker.worker_state is WorkerState.STOPPED
    assert_reaped(pid)


# ----------------------------------------------------------- forced stops


async def test_a_child_ignoring_the_stop_is_terminated_after_the_grace_period() -> None:
    worker = fluid.ProcessWorker(targets.ignore_the_stop, stopping_grace_period=0.1, kill_after=30)
    await worker.startup()
    start = time.monotonic()
    await worker.shutdown()
    assert time.monotonic() - start < 10  # SIGTERM sufficed: not the 30 s of kill_after
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert figures(await worker.status()) == {
        "pid": worker.pid,
        "alive": False,
        "exitcode": -signal.SIGTERM,
    }


async def test_a_child_ignoring_sigterm_is_killed(caplog: pytest.LogCaptureFixture) -> None:
    worker = targets.DeafToSigterm(stopping_grace_period=0.1, kill_after=0.2)
    await worker.startup()
    with caplog.at_level(logging.WARNING, logger="fluid"):
        await worker.shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert figures(await worker.status()) == {
        "pid": worker.pid,
        "alive": False,
        "exitcode": -signal.SIGKILL,
    }
    assert "ignored SIGTERM for 0.2s: killing it" in caplog.text
    assert worker.pid is not None
    assert_reaped(worker.pid)


async def test_a_cancelled_wait_for_the_child_kills_it_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = targets.DeafToSigterm(stopping_grace_period=0.05, kill_after=30)
    await worker.startup()
    with caplog.at_level(logging.WARNING, logger="fluid"):
        stopping = asyncio.ensure_future(worker.shutdown())
        await wait_until(lambda: "terminating its process" in caplog.text, timeout=5)
        stopping.cancel()  # do not wait the 30 s before SIGKILL
        with pytest.raises(asyncio.CancelledError):
            await stopping
    assert "the wait for its exit was cancelled: killing it (SIGKILL)" in caplog.text
    assert "ignored SIGTERM" not in caplog.text
    assert worker.pid is not None
    assert_reaped(worker.pid)


async def test_an_unpicklable_target_fails_at_startup() -> None:
    def local_target(worker: fluid.ProcessWorker) -> None:
        pass

    worker = fluid.ProcessWorker(local_target)
    with pytest.raises(
        fluid.ProcessWorkerError, match="cannot start worker 'local_target'"
    ) as info:
        await worker.startup()
    assert "module level" in str(info.value)
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.pid is None


# ------------------------------------------------------ async workers in a child


async def test_a_worker_factory_runs_an_async_tree_in_the_child(tmp_path: Path) -> None:
    log = tmp_path / "tree"
    worker = fluid.ProcessWorker(
        worker_factory=functools.partial(targets.make_tree, log), stopping_grace_period=5
    )
    await worker.startup()  # returns once the child's tree runs
    assert log.read_text().split() == ["start", str(worker.pid), "asyncio"]
    await worker.shutdown()
    assert log.read_text().splitlines()[-1] == "stop"
    assert worker.worker_state is WorkerState.STOPPED


async def test_the_child_loop_comes_from_loop_factory(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")
    log = tmp_path / "tree"
    worker = fluid.ProcessWorker(
        worker_factory=functools.partial(targets.make_tree, log),
        loop_factory=uvloop.new_event_loop,
    )
    async with worker:
        assert log.read_text().split()[-1] == "uvloop"


async def test_the_error_of_the_async_tree_comes_back_with_its_traceback(tmp_path: Path) -> None:
    worker = fluid.ProcessWorker(
        worker_factory=functools.partial(targets.make_tree, tmp_path / "tree", "fail")
    )
    await worker.startup()
    with pytest.raises(RuntimeError, match="async child failed") as info:
        await worker.wait_for_shutdown()
    text = "".join(traceback.format_exception(info.value))
    assert "in fail_in_async_child" in text
    assert "raised by worker 'file_logged' of tree 'child_tree'" in text


async def test_the_async_trees_failure_is_logged_with_its_traceback_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # the child logs the failure with its traceback (on its stderr); the
    # parent's worker, failing with the same error, logs one line
    worker = fluid.ProcessWorker(
        worker_factory=functools.partial(targets.make_tree, tmp_path / "tree", "fail"),
        name="pw",
    )
    with caplog.at_level(logging.ERROR, logger="fluid"):
        await worker.startup()
        with pytest.raises(RuntimeError, match="async child failed") as info:
            await worker.wait_for_shutdown()
    child_stderr = capfd.readouterr().err
    assert child_stderr.count("in fail_in_async_child") == 1
    (record,) = [r for r in caplog.records if r.getMessage().startswith("worker 'pw' failed")]
    assert record.exc_info is None
    assert record.getMessage() == (
        "worker 'pw' failed: RuntimeError: async child failed "
        "(its traceback is logged where it was raised)"
    )
    # the error raised to the caller still carries the child's traceback
    assert "in fail_in_async_child" in "".join(traceback.format_exception(info.value))


async def test_sigterm_forces_the_async_tree_and_its_hooks_still_run(tmp_path: Path) -> None:
    log = tmp_path / "tree"
    worker = fluid.ProcessWorker(
        worker_factory=functools.partial(targets.make_tree, log, "deaf"),
        stopping_grace_period=0.1,  # shorter than the child worker's 0.2 s
        kill_after=30,
    )
    await worker.startup()
    start = time.monotonic()
    await worker.shutdown()
    assert time.monotonic() - start < 10  # SIGTERM sufficed: not the 30 s of kill_after
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert log.read_text().splitlines()[-1] == "stop"  # on_shutdown ran in the child
    assert figures(await worker.status()) == {"pid": worker.pid, "alive": False, "exitcode": 0}


async def test_a_factory_that_returns_no_worker_fails_startup() -> None:
    worker = fluid.ProcessWorker(worker_factory=targets.not_a_worker)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="returned 42, not a Worker"):
        await worker.startup()
    assert worker.worker_state is WorkerState.STOPPED


# -------------------------------------------------------------------- trees


async def test_thread_and_process_workers_in_a_tree_stop_in_reverse_order() -> None:
    stopped: list[str] = []
    tree = fluid.Workers(
        fluid.ThreadWorker(sleeper, name="thread"),
        fluid.ProcessWorker(targets.wait_until_stopped, name="process"),
        name="tree",
    )
    tree.add_observer(lambda e: stopped.append(e.worker.worker_name) if e.kind == "stopped" else 0)
    async with tree:
        assert all(child.is_running() for child in tree.children)
    assert stopped == ["process", "thread", "tree"]


async def test_a_supervising_tree_restarts_a_killed_child_in_a_new_process() -> None:
    worker = fluid.ProcessWorker(targets.wait_until_stopped, name="proc")
    tree = fluid.Workers(worker, strategy="one_for_one", backoff=fluid.Backoff(initial=0, jitter=0))
    async with tree:
        first = worker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: worker.restarts == 1 and worker.pid != first, timeout=5)
        assert worker.is_running()
        assert figures(await worker.status()) == {
            "pid": worker.pid,
            "alive": True,
            "exitcode": None,
        }
    assert worker.worker_state is WorkerState.STOPPED


async def test_messages_sent_just_before_the_exit_are_not_lost() -> None:
    # White-box, on the plumbing: the child sends two messages and exits; by
    # the time the loop looks, both messages and the exit are pending, and
    # the reader callback takes only one message per turn.
    from fluid._child import Child, get_context

    got: list[bytes] = []
    exited = asyncio.get_running_loop().create_future()
    child = Child.start(
        get_context("fork"),
        targets.send_two_and_exit,
        (),
        name="two",
        daemon=True,
        on_message=lambda c, data: got.append(bytes(data)),
        on_exit=lambda c: exited.set_result(c.exitcode),
    )
    await child.started()
    # Block on purpose: the loop must not run before the child is dead (not reaped).
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
    async with asyncio.timeout(2):
        assert await exited == 0
    assert got == [b"one", b"two"]
    assert_reaped(child.pid)


# ------------------------------------------------------------ status and API


async def test_status_is_json() -> None:
    worker = fluid.ProcessWorker(targets.wait_until_stopped)
    assert figures(await worker.status()) == {"pid": None, "alive": False, "exitcode": None}
    async with worker:
        json.dumps(await worker.status())


def test_wait_for_stop_is_for_the_child() -> None:
    worker = fluid.ProcessWorker(targets.wait_until_stopped)
    with pytest.raises(RuntimeError, match="child process"):
        worker.wait_for_stop(0)


class _OverridesMain(fluid.ProcessWorker):
    def main(self) -> None:
        pass


async def _async_target(worker: fluid.ProcessWorker) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "needs a target"),
        ({"target": 42}, TypeError, "target must be a callable"),
        ({"target": _async_target}, TypeError, "coroutine function"),
        (
            {"target": targets.wait_until_stopped, "worker_factory": targets.make_tree},
            ValueError,
            "either target or worker_factory",
        ),
        ({"worker_factory": 42}, TypeError, "worker_factory must be callable"),
        ({"mp_context": "threads"}, ValueError, "unknown start method 'threads'"),
        ({"mp_context": 3}, TypeError, "mp_context must be"),
        ({"kill_after": -1}, ValueError, "kill_after"),
        ({"stopping_grace_period": "1"}, TypeError, "stopping_grace_period"),
        ({"loop_factory": 1}, TypeError, "loop_factory must be callable"),
    ],
)
def test_bad_arguments_are_rejected_at_the_call(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    if not {"target", "worker_factory"} & set(kwargs) and kwargs:
        kwargs = {"target": targets.wait_until_stopped, **kwargs}
    with pytest.raises(error, match=match):
        fluid.ProcessWorker(**kwargs)  # type: ignore[arg-type]


def test_a_worker_factory_runs_in_the_default_main() -> None:
    with pytest.raises(ValueError, match="do not override"):
        _OverridesMain(worker_factory=targets.make_tree)  # type: ignore[arg-type]
