"""fluid inside anyio code: a tree in a task group, stopped by a cancel scope (issue 14).

Why: FastAPI and Starlette run their lifespans under anyio, and an app's
code around them is often anyio code. fluid imports nothing of anyio; it
must still behave when anyio is the one cancelling. anyio's cancellation is
level-triggered: while a task is inside a cancelled scope, anyio cancels it
again at every turn of the loop until it leaves the scope, where asyncio's
own ``timeout`` cancels once. Whatever waits inside such a scope is
therefore cancelled again and again, ``shutdown()`` in an ``__aexit__``
included.

Each scenario runs a tree of three kinds of workers (a ``WorkerFunction``,
a ``QueueConsumerWorker``, a ``ThreadWorker``), with grace periods of
30 s, in one of several ways (``async with``, ``startup()`` then
``wait_for_shutdown()``, a task started with ``TaskGroup.start``, the
Starlette lifespan, the aiohttp cleanup context), stopped by one of the
ways anyio cancels (``move_on_after``, ``fail_after``, a scope cancelled
from another task, a task group whose other task raises), on asyncio's loop
and on uvloop (anyio's ``use_uvloop`` backend option). Each checks:

* **no orphan**: the tree and every worker in it ended, and no task is left
  on the loop (checked before ``anyio.run`` returns, as it would cancel a
  leftover silently) and no thread (the suite's autouse check);
* **no swallowed cancellation**: the code after the awaited call inside the
  scope never runs, the scope's ``cancel_called`` and ``cancelled_caught``
  are True (anyio's documented meaning: the scope was cancelled, and the
  cancellation it caught was its own), the code after the scope runs,
  ``fail_after`` raises ``TimeoutError``, and a task group raises its
  other task's error and nothing else;
* **a prompt stop**: within seconds, not after a grace period.

The scenarios run in ``anyio.run`` (not in pytest-asyncio's loop) so that the
uvloop backend is anyio's own; the task check is then made inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from anyio.abc import TaskStatus
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

import fluid
from fluid import WorkerState
from fluid.integrations import aiohttp as fluid_aiohttp
from fluid.integrations import starlette as fluid_starlette

from ._process_targets import wait_until_stopped

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; the TestClient works with either.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

GRACE = 30.0
"""The grace period of every worker here: a stop that waited for it would fail the bound."""
BOUND = 10.0
"""Seconds a cancelled scenario may take at most (it takes a fraction of one)."""
DEADLINE = 0.2
"""The deadline of ``move_on_after`` and ``fail_after``."""

BACKENDS = [
    pytest.param({}, id="asyncio"),
    pytest.param({"use_uvloop": True}, id="uvloop"),
]


def run(backend_options: dict[str, Any], scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` with ``anyio.run``; fail if it left a task on the loop."""

    async def checked() -> None:
        await scenario()
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        assert not left, f"the scenario left tasks running: {left}"

    anyio.run(checked, backend="asyncio", backend_options=backend_options)


# ------------------------------------------------------------------- the tree


def poll(worker: fluid.ThreadWorker) -> None:
    while not worker.wait_for_stop(1.0):
        pass


class Kit:
    """A tree of three kinds of workers, and what they did."""

    def __init__(self) -> None:
        self.ticks = 0
        self.handled: list[int] = []
        self.ticker = fluid.WorkerFunction(
            self.tick, heartbeat=0.005, name="ticker", stopping_grace_period=GRACE
        )
        self.jobs = fluid.QueueConsumerWorker[int](
            self.handle, name="jobs", stopping_grace_period=GRACE
        )
        self.thread = fluid.ThreadWorker(poll, name="thread", stopping_grace_period=GRACE)
        self.tree = fluid.Workers(
            self.ticker, self.jobs, self.thread, name="tree", stopping_grace_period=GRACE
        )

    async def tick(self) -> None:
        self.ticks += 1

    async def handle(self, job: int) -> None:
        self.handled.append(job)

    def running(self) -> None:
        """Called once the tree runs: give the consumer some work."""
        assert self.tree.is_running()
        for job in range(3):
            self.jobs.send(job)

    def assert_ended(self) -> None:
        assert self.tree.is_stopped(), self.tree
        for worker in self.tree.workers():
            # a cancel during startup() leaves the later children never started
            assert worker.is_stopped() or not worker.has_started(), worker
        assert (
            self.thread.thread is None
            or not self.thread.thread.is_alive()
            or (
                self.thread.is_stopped()  # told to stop; the suite's thread check joins it
            )
        )


# ------------------------------------------------ ways of running the tree
#
# Each runs the tree, calls ``ready()`` once it runs, then awaits a call
# that only a cancellation ends, and records in ``after`` anything run after
# that call: with the cancellation propagating as it should, nothing is.

Way = Callable[[Kit, Callable[[], None], list[str]], Awaitable[None]]


async def async_with(kit: Kit, ready: Callable[[], None], after: list[str]) -> None:
    async with kit.tree:
        ready()
        await kit.tree.wait_for_shutdown()
        after.append("after wait_for_shutdown")
    after.append("after async with")


async def startup_then_wait(kit: Kit, ready: Callable[[], None], after: list[str]) -> None:
    await kit.tree.startup()
    try:
        ready()
        await kit.tree.wait_for_shutdown()
        after.append("after wait_for_shutdown")
    finally:
        await kit.tree.shutdown()
    after.append("after shutdown")


async def task_group_start(kit: Kit, ready: Callable[[], None], after: list[str]) -> None:
    async def serve(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with kit.tree:
            task_status.started()
            await kit.tree.wait_for_shutdown()
            after.append("after wait_for_shutdown")

    async with anyio.create_task_group() as group:
        await group.start(serve)
        ready()
    after.append("after the task group")


async def starlette_lifespan(kit: Kit, ready: Callable[[], None], after: list[str]) -> None:
    app = Starlette()
    async with fluid_starlette.lifespan(lambda: kit.tree)(app):
        assert fluid_starlette.workers_of(app) is kit.tree
        ready()
        await anyio.sleep_forever()
    after.append("after the lifespan")


async def aiohttp_cleanup_ctx(kit: Kit, ready: Callable[[], None], after: list[str]) -> None:
    # what aiohttp does with a cleanup context: the generator's two halves
    context = contextlib.asynccontextmanager(fluid_aiohttp.cleanup_ctx(lambda: kit.tree))
    app = web.Application()
    async with context(app):
        assert fluid_aiohttp.workers_of(app) is kit.tree
        ready()
        await anyio.sleep_forever()
    after.append("after the cleanup context")


WAYS = [
    pytest.param(async_with, id="async-with"),
    pytest.param(startup_then_wait, id="startup-wait_for_shutdown"),
    pytest.param(task_group_start, id="task-group-start"),
    pytest.param(starlette_lifespan, id="starlette-lifespan"),
    pytest.param(aiohttp_cleanup_ctx, id="aiohttp-cleanup_ctx"),
]


# --------------------------------------------------------- ways of stopping
#
# Each runs ``body`` in a scope it cancels, and checks the scope's outcome.

Body = Callable[[], Awaitable[None]]


class Crash(Exception):
    pass


async def move_on_after(body: Body, ready: anyio.Event) -> None:
    with anyio.move_on_after(DEADLINE) as scope:
        await body()
    assert scope.cancel_called
    assert scope.cancelled_caught


async def fail_after(body: Body, ready: anyio.Event) -> None:
    with pytest.raises(TimeoutError):
        with anyio.fail_after(DEADLINE) as scope:
            await body()
    assert scope.cancel_called
    assert scope.cancelled_caught


async def cancelled_from_another_task(body: Body, ready: anyio.Event) -> None:
    scope = anyio.CancelScope()

    async def cancel() -> None:
        await ready.wait()
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(cancel)
        with scope:
            await body()
        assert not group.cancel_scope.cancel_called  # it stayed in its own scope
    assert scope.cancel_called
    assert scope.cancelled_caught


async def a_sibling_raises(body: Body, ready: anyio.Event) -> None:
    async def crash() -> None:
        await ready.wait()
        raise Crash("the other task failed")

    with pytest.RaisesGroup(Crash):  # its error, and nothing else: no CancelledError
        async with anyio.create_task_group() as group:
            group.start_soon(crash)
            await body()
    assert group.cancel_scope.cancel_called


STOPS = [
    pytest.param(move_on_after, id="move_on_after"),
    pytest.param(fail_after, id="fail_after"),
    pytest.param(cancelled_from_another_task, id="cancel-from-another-task"),
    pytest.param(a_sibling_raises, id="sibling-raises"),
]


@pytest.mark.parametrize("backend_options", BACKENDS)
@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("way", WAYS)
def test_a_tree_stopped_by_an_anyio_cancel_scope_ends_and_the_cancellation_goes_on(
    way: Way,
    stop: Callable[[Body, anyio.Event], Awaitable[None]],
    backend_options: dict[str, Any],
) -> None:
    kit = Kit()
    after: list[str] = []
    elapsed: list[float] = []

    async def scenario() -> None:
        ready = anyio.Event()

        def running() -> None:
            kit.running()
            ready.set()

        started = time.monotonic()
        await stop(lambda: way(kit, running, after), ready)
        elapsed.append(time.monotonic() - started)
        kit.assert_ended()

    run(backend_options, scenario)
    assert after == []  # the cancellation was not swallowed on its way out
    assert elapsed[0] < BOUND  # forced at once: no grace period (30 s) was waited for
    if stop in (move_on_after, fail_after):
        assert elapsed[0] >= DEADLINE * 0.9  # not before the deadline


@settings(max_examples=100, deadline=None)
@given(
    way=st.sampled_from([async_with, startup_then_wait, task_group_start, starlette_lifespan]),
    turns=st.integers(0, 200),
    uvloop=st.booleans(),
)
def test_a_scope_cancelled_at_any_turn_of_the_loop_ends_the_tree_and_goes_on(
    way: Way, turns: int, uvloop: bool
) -> None:
    """Cancelled anywhere: in a start step, while it runs, while it stops."""
    kit = Kit()
    after: list[str] = []

    async def scenario() -> None:
        scope = anyio.CancelScope()

        async def cancel() -> None:
            for _ in range(turns):
                await anyio.lowlevel.checkpoint()  # one turn of the loop each
            scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(cancel)
            with scope:
                await way(kit, kit.running, after)
        assert scope.cancel_called
        assert scope.cancelled_caught
        kit.assert_ended()

    run({"use_uvloop": True} if uvloop else {}, scenario)
    assert after == []


# ------------------------------------------------------------ the edges


@pytest.mark.parametrize("backend_options", BACKENDS)
def test_a_shielded_shutdown_stops_the_tree_gracefully_in_a_cancelled_scope(
    backend_options: dict[str, Any],
) -> None:
    """The anyio way to a graceful stop in a cancelled scope: shield the shutdown."""
    kit = Kit()
    release = asyncio.Event()
    handled: list[int] = []

    async def slow(job: int) -> None:
        await release.wait()
        handled.append(job)

    jobs = fluid.QueueConsumerWorker[int](slow, name="slow", stopping_grace_period=GRACE)
    kit.tree.add_workers(jobs)

    async def scenario() -> None:
        with anyio.move_on_after(DEADLINE) as scope:
            await kit.tree.startup()
            try:
                for job in range(5):
                    jobs.send(job)
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    release.set()  # the handler goes on: the queue drains
                    await kit.tree.shutdown()
        assert scope.cancelled_caught

    run(backend_options, scenario)
    assert handled == [0, 1, 2, 3, 4]  # drained, not dropped
    assert kit.tree.worker_state is WorkerState.STOPPED  # graceful, not forced
    assert all(worker.worker_state is WorkerState.STOPPED for worker in kit.tree.workers())


@pytest.mark.parametrize("backend_options", BACKENDS)
def test_a_scope_cancelled_while_the_tree_starts_leaves_nothing_running(
    backend_options: dict[str, Any],
) -> None:
    kit = Kit()
    entered = anyio.Event()

    class Connects(fluid.Worker):
        async def on_startup(self) -> None:
            entered.set()
            await asyncio.Event().wait()  # a connect that hangs

        async def run(self) -> None:
            raise AssertionError("never runs")

    connects = Connects(name="connects", stopping_grace_period=GRACE)
    kit.tree.add_workers(connects)
    after: list[str] = []

    async def scenario() -> None:
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as group:

            async def cancel() -> None:
                await entered.wait()
                scope.cancel()

            group.start_soon(cancel)
            with scope:
                async with kit.tree:
                    after.append("the tree ran")
        assert scope.cancelled_caught
        kit.assert_ended()

    run(backend_options, scenario)
    assert after == []
    assert connects.worker_state is WorkerState.STOPPED
    # the children started before it were stopped, not left running
    assert [w.worker_state for w in (kit.ticker, kit.jobs, kit.thread)] == [
        WorkerState.FORCE_STOPPED
    ] * 3


@pytest.mark.parametrize("backend_options", BACKENDS)
def test_a_tree_that_fails_in_a_task_group_raises_its_error_there(
    backend_options: dict[str, Any],
) -> None:
    kit = Kit()

    async def fail() -> None:
        raise Crash("a worker failed")

    kit.tree.add_workers(fluid.WorkerFunction(fail, name="fails"))
    other_task: list[str] = []

    async def scenario() -> None:
        async def run_tree() -> None:
            async with kit.tree:
                await kit.tree.wait_for_shutdown()

        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match="a worker failed")):
            async with anyio.create_task_group() as group:
                group.start_soon(run_tree)
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    other_task.append("cancelled by the task group")
                    raise
        kit.assert_ended()

    run(backend_options, scenario)
    assert other_task == ["cancelled by the task group"]
    assert kit.tree.worker_state is WorkerState.STOPPED


@pytest.mark.parametrize("backend_options", BACKENDS)
def test_a_process_worker_in_a_tree_stopped_by_a_scope_leaves_no_process(
    backend_options: dict[str, Any],
) -> None:
    """The child process is joined before the cancellation goes on (the suite checks it)."""
    process = fluid.ProcessWorker(wait_until_stopped, name="process", stopping_grace_period=GRACE)
    tree = fluid.Workers(process, name="tree", stopping_grace_period=GRACE)
    pid: list[int | None] = []

    async def scenario() -> None:
        with anyio.fail_after(BOUND) as outer:  # the bound of the whole scenario
            with anyio.CancelScope() as scope:
                async with tree:
                    pid.append((await process.status())["process"]["pid"])
                    scope.cancel()
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
        assert not outer.cancel_called

    run(backend_options, scenario)
    assert pid[0] is not None
    assert process.worker_state is WorkerState.FORCE_STOPPED


@pytest.mark.parametrize("backend_options", BACKENDS)
def test_a_tree_forced_by_a_cancel_scope_is_cancelled_once_and_its_hooks_complete(
    backend_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A scope's cancellation forces the tree once; the forced workers close as after any force.

    Their ``on_shutdown`` runs in their own task, outside the scope: it
    completes (as it does after ``force_stop()``) unless it outlasts its
    grace period. Today it is cancelled at each turn of the loop, as long
    as the caller, in the cancelled scope, waits for the tree.
    """

    class Closes(fluid.Worker):
        """Ends only when cancelled; closes with an await."""

        closed = False

        async def run(self) -> None:
            await asyncio.Event().wait()

        async def on_shutdown(self) -> None:
            await asyncio.sleep(0.01)  # a flush, a connection's close
            self.closed = True

    kit = Kit()
    outer = Closes(name="outer", stopping_grace_period=GRACE)
    inner = Closes(name="inner", stopping_grace_period=GRACE)
    process = fluid.ProcessWorker(wait_until_stopped, name="process", stopping_grace_period=GRACE)
    kit.tree.add_workers(
        outer, fluid.Workers(inner, name="nested", stopping_grace_period=GRACE), process
    )
    abandoned: list[bool] = []

    async def scenario() -> None:
        with anyio.CancelScope() as scope:
            async with kit.tree:
                # the deadline from when the tree runs: a cancel during its
                # start (a child process may take longer than DEADLINE on a
                # busy machine) ends it STOPPED, not forced
                scope.deadline = anyio.current_time() + DEADLINE
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        kit.assert_ended()
        abandoned.append((await kit.thread.status())["thread"]["abandoned"])

    run(backend_options, scenario)
    assert kit.tree.worker_state is WorkerState.FORCE_STOPPED
    assert (outer.closed, inner.closed) == (True, True)
    assert abandoned == [False]  # its thread was told to stop and given its grace period
    assert "SIGKILL" not in caplog.text  # the child process had its SIGTERM and time to end


# ---------------------------------------------- a lifespan run by anyio itself


@pytest.mark.parametrize("backend_options", BACKENDS)
def test_the_testclient_runs_the_lifespan_under_anyio_again_and_again(
    backend_options: dict[str, Any],
) -> None:
    """Starlette's TestClient runs the lifespan in an anyio portal, here on each backend."""
    kits: list[Kit] = []

    def factory() -> fluid.Workers:
        kits.append(kit := Kit())
        return kit.tree

    app = Starlette(
        lifespan=fluid_starlette.lifespan(factory),
        routes=[fluid_starlette.status_route("/status")],
    )
    for _ in range(2):
        with TestClient(app, backend_options=backend_options) as client:
            response = client.get("/status")
            assert response.status_code == 200
            assert [w["name"] for w in response.json()["workers"]] == ["ticker", "jobs", "thread"]
        kits[-1].assert_ended()
        assert kits[-1].tree.worker_state is WorkerState.STOPPED  # a graceful stop
    assert len(kits) == 2
