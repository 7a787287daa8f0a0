"""fluid.run, run_async_safely, fluid.utils.set_uvloop_if_available: DESIGN.md item 18, in process.

``fluid.run`` runs in the test's own (main) thread, so the workers below
send signals to this very process: the runner's handlers receive them. A
fixture installs recording handlers first, so that a signal the runner
failed to handle cannot kill the test run, and checks they are restored.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import fluid
import fluid.utils
from fluid import WorkerState
from fluid._errors import NotAWorker
from fluid.utils import set_uvloop_if_available

from ._run_targets import Failing, Quick

ROOT = Path(__file__).resolve().parent.parent

Received = list[int]

GRACE = 10.0
"""The grace period of workers that must be forced: far below the test timeout
(30 s), so that a runner that waits it out fails its test instead of timing out."""


@pytest.fixture
def unhandled() -> Iterator[Received]:
    """Signals that reached the handlers found before ``run`` (none should)."""
    received: Received = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
        for sig in previous:  # run() gave the handlers back
            assert signal.getsignal(sig) is record
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(worker: fluid.Worker | Callable[[], fluid.Worker], **kwargs: Any) -> int:
    """``fluid.run`` on asyncio's loop unless told otherwise (the suite's default loop)."""
    kwargs.setdefault("use_uvloop", False)
    return fluid.run(worker, **kwargs)


def kill_me(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)


class Polite(fluid.Worker):
    """Sends itself a signal once running; stops when asked."""

    def __init__(self, sig: signal.Signals = signal.SIGTERM) -> None:
        super().__init__()
        self.sig = sig
        self.shutdown_ran = False

    async def run(self) -> None:
        kill_me(self.sig)
        while self.is_running():
            await self.sleep(10)

    async def on_shutdown(self) -> None:
        self.shutdown_ran = True


class Deaf(fluid.Worker):
    """Ignores the stop request: sends a second signal once it saw the first."""

    def __init__(self, second: signal.Signals | None = signal.SIGINT) -> None:
        super().__init__(stopping_grace_period=GRACE)
        self.second = second
        self.shutdown_ran = False

    async def run(self) -> None:
        kill_me(signal.SIGINT)
        await self.sleep(GRACE)  # returns once the first signal asked for a stop
        assert self.is_stopping()
        if self.second is not None:
            kill_me(self.second)
        await asyncio.Event().wait()

    async def on_shutdown(self) -> None:
        self.shutdown_ran = True


# ------------------------------------------------------------------ signals


def test_a_worker_that_ends_on_its_own_exits_0(unhandled: Received) -> None:
    worker = Quick()
    assert run(worker) == 0
    assert worker.worker_state is WorkerState.STOPPED
    assert unhandled == []


def test_the_first_signal_stops_gracefully_and_exits_0(unhandled: Received) -> None:
    worker = Polite(signal.SIGTERM)
    assert run(worker) == 0
    assert worker.worker_state is WorkerState.STOPPED
    assert worker.shutdown_ran
    assert unhandled == []


def test_sigint_stops_gracefully_too(unhandled: Received) -> None:
    worker = Polite(signal.SIGINT)
    assert run(worker) == 0
    assert worker.worker_state is WorkerState.STOPPED
    assert unhandled == []


def test_a_second_signal_forces_the_stop(
    unhandled: Received, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Deaf(second=signal.SIGINT)
    start = time.monotonic()
    assert run(worker) == 128 + signal.SIGINT
    assert time.monotonic() - start < GRACE  # forced by the signal, not by the grace period
    assert "received SIGINT again: forcing worker 'deaf' to stop" in caplog.text
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert worker.shutdown_ran  # forced, and on_shutdown still ran
    assert unhandled == []


def test_the_exit_status_names_the_signal_that_forced(unhandled: Received) -> None:
    assert run(Deaf(second=signal.SIGTERM)) == 128 + signal.SIGTERM


def test_signals_after_the_forcing_one_do_not_change_the_exit_status(
    unhandled: Received,
) -> None:
    class Stormed(fluid.Worker):
        async def run(self) -> None:
            kill_me(signal.SIGINT)  # asks for a graceful stop
            await self.sleep(GRACE)
            kill_me(signal.SIGTERM)  # forces it: the exit status is 128 + SIGTERM
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                kill_me(signal.SIGINT)  # a third one while the forced stop runs
                await asyncio.sleep(0.01)
                raise

    assert run(Stormed(stopping_grace_period=GRACE)) == 128 + signal.SIGTERM


LATE_SIGINT = """
import asyncio, os, signal, sys
import fluid

async def ticks():
    try:
        yield 1
        yield 2
    finally:  # run by the loop's shutdown_asyncgens(), after the outcome
        os.kill(os.getpid(), signal.SIGINT)

class LeavesAGenerator(fluid.Worker):
    async def run(self):
        self.ticks = ticks()
        await anext(self.ticks)  # left open: closed as the loop closes

sys.exit(fluid.run(LeavesAGenerator(), use_uvloop=False))
"""


def test_a_late_sigint_while_the_loop_closes_keeps_the_outcome() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LATE_SIGINT], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr  # not 130: the worker had stopped cleanly


def test_the_grace_period_running_out_forces_the_stop(
    unhandled: Received, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Deaf(second=None)
    assert run(worker, stopping_grace_period=0.05) == 128 + signal.SIGINT
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert "did not stop within 0.05s" in caplog.text


def test_grace_still_works_with_a_deprecation_warning_at_the_caller(
    unhandled: Received, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Deaf(second=None)
    with pytest.warns(DeprecationWarning, match="pass stopping_grace_period=") as warned:
        assert run(worker, grace=0.05) == 128 + signal.SIGINT  # the old name, same effect
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert "did not stop within 0.05s" in caplog.text
    assert [Path(w.filename).name for w in warned] == ["test_runner.py"]  # the caller's line


def test_a_bad_grace_is_named_as_the_caller_wrote_it() -> None:
    with (
        pytest.warns(DeprecationWarning, match="pass stopping_grace_period="),
        pytest.raises(ValueError, match=r"^grace must be a finite number >= 0, got -1$"),
    ):
        run(Quick(), grace=-1)


def test_a_third_signal_cancels_again_a_worker_that_swallowed_the_cancel(
    unhandled: Received,
) -> None:
    class Swallower(fluid.Worker):
        async def run(self) -> None:
            kill_me(signal.SIGINT)
            kill_me(signal.SIGINT)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                kill_me(signal.SIGINT)  # swallowed; the third signal cancels it again
            await asyncio.Event().wait()

    worker = Swallower(stopping_grace_period=GRACE)
    assert run(worker) == 130
    assert worker.worker_state is WorkerState.FORCE_STOPPED


def test_a_second_signal_interrupts_a_hung_on_startup(unhandled: Received) -> None:
    class Hung(fluid.Worker):
        shutdown_ran = False

        async def on_startup(self) -> None:
            kill_me(signal.SIGTERM)
            kill_me(signal.SIGTERM)
            await asyncio.Event().wait()

        async def run(self) -> None:
            raise AssertionError("never runs")

    worker = Hung(stopping_grace_period=GRACE)
    assert run(worker) == 143
    assert worker.worker_state is WorkerState.STOPPED


def test_a_forced_tree_stops_every_descendant(unhandled: Received) -> None:
    leaf = Deaf(second=signal.SIGINT)
    tree = fluid.Workers(fluid.Workers(leaf, name="inner"), name="outer")
    assert run(tree) == 130
    assert leaf.worker_state is WorkerState.FORCE_STOPPED
    assert leaf.shutdown_ran


def test_without_signals_handled_outside_the_main_thread() -> None:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run(Quick())))
    thread.start()
    thread.join(10)
    assert codes == [0]


HUNG_RUN = """
import asyncio, os, signal
import fluid

class Hung(fluid.Worker):
    # Swallows every cancellation: what a runner regression looks like from
    # outside, a run that never returns.
    async def run(self):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass

def test_hung():
    fluid.run(Hung(stopping_grace_period=0.1), use_uvloop=False)
"""


def test_a_hung_run_fails_the_suite_instead_of_hanging_it(tmp_path: Path) -> None:
    # The suite's own pytest settings (pyproject.toml), a 2 s test timeout.
    (tmp_path / "test_hung.py").write_text(HUNG_RUN)
    start = time.monotonic()
    config = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "timeout=2"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *config, "test_hung.py"],
        capture_output=True,
        text=True,
        timeout=20,  # the failure this test guards: still running (hung) here
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    assert "Timeout" in done.stdout + done.stderr
    assert time.monotonic() - start < 20


# ----------------------------------------------------------------- failures


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[BaseException | None]:
    """The errors whose tracebacks were logged, in order."""
    return [r.exc_info[1] for r in caplog.records if r.exc_info]


def test_a_failure_exits_1_and_logs_the_traceback_once(
    unhandled: Received, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Failing()
    assert run(worker) == 1
    (error,) = tracebacks(caplog)  # logged where it happened; it was logged twice
    assert "boom from the failing worker" in str(error)
    final = caplog.records[-1]
    assert final.levelno == logging.ERROR
    assert final.getMessage() == (
        "worker 'failing' failed (ValueError: boom from the failing worker): exit status 1"
    )


def test_the_failure_of_a_tree_logs_the_traceback_once_and_names_the_child(
    unhandled: Received, caplog: pytest.LogCaptureFixture
) -> None:
    assert run(fluid.Workers(Failing(), name="app")) == 1
    (error,) = tracebacks(caplog)
    assert isinstance(error, ValueError)
    assert caplog.records[-1].getMessage() == (
        "worker 'app' failed (ValueError: boom from the failing worker; raised by worker "
        "'failing' of tree 'app'): exit status 1"
    )


def test_a_cancellation_the_worker_raised_itself_exits_1_with_its_traceback(
    unhandled: Received, caplog: pytest.LogCaptureFixture
) -> None:
    class Cancels(fluid.Worker):
        async def run(self) -> None:
            raise asyncio.CancelledError  # nobody asked: its error, not a stop

    assert run(Cancels()) == 1  # it escaped run() as a CancelledError
    (error,) = tracebacks(caplog)
    assert isinstance(error, asyncio.CancelledError)
    assert caplog.records[-1].getMessage() == (
        "worker 'cancels' failed (CancelledError): exit status 1"
    )


def test_a_failure_to_start_exits_1(unhandled: Received, caplog: pytest.LogCaptureFixture) -> None:
    class NoStart(fluid.Worker):
        async def on_startup(self) -> None:
            raise ConnectionError("no database")

        async def run(self) -> None:
            raise AssertionError("never runs")

    assert run(NoStart()) == 1
    assert "failed to start" in caplog.text
    assert "ConnectionError: no database" in caplog.text


def test_an_error_in_a_tree_exits_1(unhandled: Received) -> None:
    assert run(fluid.Workers(Failing(), Polite())) == 1


def test_a_failing_factory_exits_1(unhandled: Received, caplog: pytest.LogCaptureFixture) -> None:
    def factory() -> fluid.Worker:
        raise KeyError("no config")

    assert run(factory) == 1
    assert "KeyError: 'no config'" in caplog.text


# ---------------------------------------------------------------- factories


def test_a_factory_is_called_on_the_running_loop(unhandled: Received) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def factory() -> fluid.Worker:
        loops.append(asyncio.get_running_loop())
        return Quick()

    assert run(factory) == 0
    assert len(loops) == 1


def test_a_factory_returning_something_else_raises_type_error(unhandled: Received) -> None:
    with pytest.raises(NotAWorker, match=r"returned 42, not a fluid\.Worker"):
        run(lambda: 42)  # type: ignore[arg-type, return-value]


def test_an_async_factory_is_refused_clearly(unhandled: Received) -> None:
    async def factory() -> fluid.Worker:
        return Quick()

    with pytest.raises(TypeError, match="returned a coroutine"):
        run(factory)  # type: ignore[arg-type]


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"worker": 42}, TypeError, "expected a fluid.Worker or a function"),
        (
            {"worker": Quick(), "stopping_grace_period": -1},
            ValueError,
            "stopping_grace_period must be a finite number >= 0",
        ),
        (
            {"worker": Quick(), "stopping_grace_period": "5"},
            TypeError,
            "stopping_grace_period must be a number",
        ),
        (
            {"worker": Quick(), "stopping_grace_period": 1, "grace": 1},
            TypeError,
            "pass stopping_grace_period only",
        ),
        ({"worker": Quick(), "use_uvloop": "yes"}, TypeError, "use_uvloop must be"),
    ],
)
def test_bad_arguments_raise_at_the_call(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        run(**kwargs)  # type: ignore[arg-type]


async def test_run_refuses_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        run(Quick())


# ------------------------------------------------------------------- uvloop


class LoopKind(fluid.Worker):
    kind = ""

    async def run(self) -> None:
        self.kind = type(asyncio.get_running_loop()).__module__.split(".")[0]


@pytest.mark.parametrize(
    ("use_uvloop", "kind"), [(None, "uvloop"), (True, "uvloop"), (False, "asyncio")]
)
def test_uvloop_is_used_when_installed_unless_turned_off(
    use_uvloop: bool | None, kind: str, unhandled: Received
) -> None:
    worker = LoopKind()
    assert run(worker, use_uvloop=use_uvloop) == 0
    assert worker.kind == kind


def test_without_uvloop_installed(monkeypatch: pytest.MonkeyPatch, unhandled: Received) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    worker = LoopKind()
    assert run(worker, use_uvloop=None) == 0  # falls back to asyncio's loop
    assert worker.kind == "asyncio"
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        run(worker, use_uvloop=True)
    assert set_uvloop_if_available() is False


def test_set_uvloop_if_available_lives_in_fluid_utils() -> None:
    # It sets a process-wide policy that fluid.run does not need: not the front door.
    assert set_uvloop_if_available.__module__ == "fluid.utils"
    assert "set_uvloop_if_available" in fluid.utils.__all__


def test_set_uvloop_if_available_sets_the_policy() -> None:
    import uvloop

    try:
        assert set_uvloop_if_available() is True
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


# -------------------------------------------------------- run_async_safely


async def double(value: int) -> int:
    await asyncio.sleep(0)
    return 2 * value


def test_run_async_safely_without_a_loop_runs_to_completion() -> None:
    assert fluid.run_async_safely(double(21)) == 42


async def test_run_async_safely_with_a_loop_returns_a_task_it_keeps() -> None:
    results: list[int] = []

    async def record(value: int) -> None:
        await asyncio.sleep(0.01)
        results.append(value)

    def sync_callback() -> None:  # drops the task at once
        task = fluid.run_async_safely(record(7))
        assert isinstance(task, asyncio.Task)

    sync_callback()
    gc.collect()  # a task nobody references would be collected here
    await asyncio.sleep(0.05)
    assert results == [7]

    task = fluid.run_async_safely(double(4))
    assert isinstance(task, asyncio.Task)
    assert await task == 8


def test_run_async_safely_needs_a_coroutine() -> None:
    with pytest.raises(TypeError, match="needs a coroutine object"):
        fluid.run_async_safely(double)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the docs


@pytest.mark.parametrize(
    ("page", "example"),
    [
        ("running.md", "pipeline.py"),
        ("fastapi.md", "fastapi_app.py"),
        ("aiohttp.md", "aiohttp_app.py"),
        ("prefork.md", "prefork_server.py"),
    ],
)
def test_each_page_shows_its_runnable_example_verbatim(page: str, example: str) -> None:
    text = (ROOT / "docs" / page).read_text()
    code = (ROOT / "examples" / example).read_text()
    assert f"```python\n{code}```" in text, f"docs/{page} is out of date with examples/{example}"
