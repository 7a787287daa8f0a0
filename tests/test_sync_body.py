"""One body for sync code: ThreadWorker and ProcessWorker run ``setup``/``main``/``teardown`` alike.

Every test runs for both hosts (``fluid._sync_body.run_body`` is the one
place that decides), with the same worker class body from
``tests/_process_targets.py``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import fluid

from . import _process_targets as targets
from .helpers import wait_until

HOSTS = {"thread": targets.ThreadHooks, "process": targets.Hooks}


def steps(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()]


@pytest.fixture(params=sorted(HOSTS))
def host(request: pytest.FixtureRequest) -> type[targets.ThreadHooks | targets.Hooks]:
    return HOSTS[request.param]  # type: ignore[return-value]


async def test_an_error_in_setup_is_raised_by_startup_and_nothing_else_runs(
    host: type[targets.ThreadHooks | targets.Hooks], tmp_path: Path
) -> None:
    worker = host(tmp_path / "steps", "setup", ValueError("no setup"))
    with pytest.raises(ValueError, match="no setup"):
        await worker.startup()
    assert steps(tmp_path / "steps") == ["setup"]
    assert worker.worker_state is fluid.WorkerState.STOPPED


async def test_an_error_in_main_is_raised_after_teardown_ran(
    host: type[targets.ThreadHooks | targets.Hooks], tmp_path: Path
) -> None:
    worker = host(tmp_path / "steps", "main", ValueError("no main"))
    await worker.startup()  # setup() returned: startup() returns, whatever main() does
    with pytest.raises(ValueError, match="no main"):
        await worker.wait_for_shutdown()
    assert steps(tmp_path / "steps") == ["setup", "main", "teardown"]


async def test_an_error_in_teardown_alone_is_the_outcome(
    host: type[targets.ThreadHooks | targets.Hooks], tmp_path: Path
) -> None:
    worker = host(tmp_path / "steps", "teardown", ValueError("no teardown"))
    await worker.startup()
    with pytest.raises(ValueError, match="no teardown"):
        await worker.shutdown()
    assert steps(tmp_path / "steps") == ["setup", "main", "teardown"]


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt()], ids=repr)
def test_system_exit_and_keyboard_interrupt_in_main_propagate_as_from_run(
    host: type[targets.ThreadHooks | targets.Hooks], tmp_path: Path, error: BaseException
) -> None:
    # Issue 12: the hosts disagreed. A thread's SystemExit propagated from
    # run(), a child's became "exited with code 3" (and a KeyboardInterrupt
    # "exited with code 1", its traceback printed by multiprocessing). Both
    # now cross back as is, after teardown(), and do what they do when
    # raised by an async worker's run(): propagate out of the loop.
    async def main() -> None:
        worker = host(tmp_path / "steps", "main", error)
        await worker.startup()
        await worker.wait_for_shutdown()

    with pytest.raises(type(error)) as info:
        asyncio.run(main())
    if isinstance(error, SystemExit):
        assert isinstance(info.value, SystemExit)
        assert info.value.code == 3
    assert steps(tmp_path / "steps") == ["setup", "main", "teardown"]


async def test_startup_returns_once_setup_returned_even_if_the_child_already_failed() -> None:
    # Issue 17: the child sent "setup returned", then its error, then exited,
    # all before the loop looked; startup() raised the error of main() or
    # returned, depending on the order the loop saw them. Made certain here:
    # the loop is blocked until the child is dead.
    worker = fluid.ProcessWorker(targets.raise_in_child, mp_context="fork")
    starting = asyncio.create_task(worker.startup())
    await wait_until(lambda: bool(worker.pid), timeout=10)
    pid = worker.pid
    assert pid is not None
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
    await starting  # setup() returned: the error of main() is not startup's
    with pytest.raises(ValueError, match="boom in the child"):
        await worker.wait_for_shutdown()
