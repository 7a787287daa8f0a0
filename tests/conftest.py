"""Suite-wide checks: no test may leave a task, a thread or a process behind.

"A process behind" means any descendant of the test process, not only its
children: a test's child may start a grandchild and exit, and the orphan is
then re-parented. On Linux this process makes itself a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``): orphans of its descendants are
re-parented to it instead of to init, so they stay in sight (and are reaped
here once they exit). The check walks the whole tree below this process.

This file must stay self-contained: ``test_leak_checks.py`` copies it
verbatim into the pytest runs that prove its checks catch leaks.

Also here, the randomized-interleaving mode (``tests/_interleave.py``): every
async test of ``INTERLEAVED`` (and any marked ``interleave``) runs on
asyncio's loop and once more on the shuffling loop under each of
``INTERLEAVE_SEEDS``, in every run; with ``FLUID_INTERLEAVE_SEED`` set (a
number, or ``random`` for a fresh one) every async test runs on the
shuffling loop under that seed instead (``make stress``). The seed is in the
test's id: ``test_x[shuffle-7]``; ``FLUID_INTERLEAVE_SEED=7`` replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ._redis_server import RedisServer

_PR_SET_CHILD_SUBREAPER = 36
SETTLE_SECONDS = 5.0
"""How long a test's threads and processes get to end after it (generous: a busy machine)."""


def _become_subreaper() -> bool:
    """Adopt the orphans of our descendants (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _children(pid: int) -> set[int]:
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True  # gone


def _descendants() -> set[int]:
    """Every live process below this one (zombies excluded: they run nothing)."""
    if not os.path.isdir("/proc/self/task"):
        return {p.pid for p in multiprocessing.active_children() if p.pid}
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid for pid in found if not _is_zombie(pid)}


def _reap_orphans(known: set[int]) -> None:
    """Reap exited orphans we adopted: nobody else will wait for them.

    Only zombies among our direct children that were not there before the
    test, and only once the test is over: a child someone waits for (a
    ``Popen``, asyncio's watcher) is reaped by that waiter as soon as it
    exits and never stays a zombie.
    """
    for pid in _children(os.getpid()) - known:
        if _is_zombie(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


INTERLEAVED = frozenset(
    {
        "test_worker.py",
        "test_queue.py",
        "test_consumer.py",
        "test_tree.py",
        "test_supervision.py",
        "test_backpressure.py",
        "test_accounting.py",
        "test_interleave.py",
    }
)
"""The core modules whose async tests also run on the shuffling loop in every run."""
INTERLEAVE_SEEDS = (1, 2)
_SEED_ENV = "FLUID_INTERLEAVE_SEED"


def _interleave_seed(config: pytest.Config) -> int | None:
    """``FLUID_INTERLEAVE_SEED`` as a number (``random``: a fresh one, once a run)."""
    value = os.environ.get(_SEED_ENV, "")
    if not value:
        return None
    seed: int | None = getattr(config, "_fluid_interleave_seed", None)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32) if value == "random" else int(value)
        config._fluid_interleave_seed = seed  # type: ignore[attr-defined]
    return seed


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = _interleave_seed(config)
    return None if seed is None else f"interleaving: every async test shuffled, seed {seed}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = _interleave_seed(item.config)
    if seed is not None and report.failed:  # the one seed of the run: not in the test ids
        report.sections.append(("interleaving", f"replay: FLUID_INTERLEAVE_SEED={seed}"))
    return report


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    plain: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        from ._interleave import shuffling_loop_factory
    except ImportError:  # a copy of this file outside the suite (test_leak_checks)
        return plain
    seed = _interleave_seed(config)
    if seed is not None:
        return {f"shuffle-{seed}": shuffling_loop_factory(seed)}
    if item.path.name in INTERLEAVED or item.get_closest_marker("interleave"):
        shuffled = {f"shuffle-{s}": shuffling_loop_factory(s) for s in INTERLEAVE_SEEDS}
        return {**plain, **shuffled}
    return plain


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interleave: run on the shuffling loop too, under fixed seeds (conftest.py)"
    )
    _become_subreaper()
    # A shell that starts the run in the background (`make test &`, nohup)
    # leaves SIGINT ignored, and the programs the tests start inherit that:
    # asyncio.run() then installs no Ctrl-C handler and the tests that press
    # Ctrl-C wait in vain. Give the children the default, as a terminal would.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _resource_tracker() -> None:
    # The spawn start method starts multiprocessing's resource tracker, a child
    # process that lives as long as this one: start it before any leak check
    # takes its snapshot, so that it is not taken for a leaked child.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def _server_pids() -> set[int]:
    """The redis-servers the session owns: not a test's leaked children."""
    module = sys.modules.get(f"{__package__}._redis_server") if __package__ else None
    return set(getattr(module, "SERVER_PIDS", ()))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 for the whole session (tests/_redis_server.py)."""
    from ._redis_server import RedisServer  # here: test_leak_checks copies this file alone

    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's server, running and emptied for this test."""
    if redis_server.process is None:  # a test stopped it
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client of the session's server (emptied for the test), closed after it."""
    import redis.asyncio as aioredis  # here, as for the server: redis is an extra

    redis = aioredis.Redis.from_url(redis_url)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_processes() -> Iterator[None]:
    threads = set(threading.enumerate())
    processes = _descendants()
    known = _children(os.getpid())
    yield
    deadline = time.monotonic() + SETTLE_SECONDS
    for thread in set(threading.enumerate()) - threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t for t in set(threading.enumerate()) - threads if t.is_alive()]
    assert not leaked, f"test left threads running: {leaked}"
    while _descendants() - processes - _server_pids() and time.monotonic() < deadline:
        _reap_orphans(known)
        time.sleep(0.01)
    _reap_orphans(known)
    left = _descendants() - processes - _server_pids()
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
