"""Suite-wide checks: no test may leave a task, a thread or a child process behind."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio


def _child_pids() -> set[int]:
    pids: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(pid) for pid in f.read().split())
    except OSError:
        pids.update(p.pid for p in multiprocessing.active_children() if p.pid)
    return pids


@pytest.fixture(autouse=True, scope="session")
def _resource_tracker() -> None:
    # The spawn start method starts multiprocessing's resource tracker, a child
    # process that lives as long as this one: start it before any leak check
    # takes its snapshot, so that it is not taken for a leaked child.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_processes() -> Iterator[None]:
    threads = set(threading.enumerate())
    children = _child_pids()
    yield
    deadline = time.monotonic() + 2.0
    for thread in set(threading.enumerate()) - threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t for t in set(threading.enumerate()) - threads if t.is_alive()]
    assert not leaked, f"test left threads running: {leaked}"
    while _child_pids() - children and time.monotonic() < deadline:
        time.sleep(0.01)
    left = _child_pids() - children
    assert not left, f"test left child processes: {sorted(left)}"


@pytest_asyncio.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test left tasks running: {leaked}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asyncio") and isinstance(item, pytest.Function):
            item.fixturenames.append("_no_leaked_tasks")
