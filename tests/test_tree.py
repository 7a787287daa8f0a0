"""Workers trees: contract items 12-15 of DESIGN.md (without restart policies)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fluid
from fluid import WorkerState

from . import helpers
from .helpers import Deaf, Idle, live_tasks

BOUND = 10.0
"""Seconds a wait may take before the test fails: a bug here is a hang, not a slow run."""
NO_WAIT = fluid.Backoff(initial=0, jitter=0)
"""Restarts due at once."""


async def wait_until(predicate: Callable[[], bool], timeout: float = BOUND) -> None:
    """``helpers.wait_until`` with a bound generous enough for a loaded machine."""
    await helpers.wait_until(predicate, timeout)


class Logged(Idle):
    """An idle worker that writes its hook calls to a shared log."""

    def __init__(self, name: str, log: list[str], stopping_grace_period: float = 1.0) -> None:
        super().__init__(name, stopping_grace_period)
        self.log = log

    async def on_startup(self) -> None:
        await asyncio.sleep(0)
        self.log.append(f"start:{self.worker_name}")

    async def on_shutdown(self) -> None:
        self.log.append(f"stop:{self.worker_name}")


class Crash(fluid.Worker):
    """Runs until told to crash (or to exit cleanly)."""

    def __init__(self, name: str = "crash") -> None:
        super().__init__(name, 1.0)
        self.go = asyncio.Event()
        self.error: Exception | None = None

    async def run(self) -> None:
        await self.go.wait()
        if self.error is not None:
            raise self.error


# ----------------------------------------------------------- 12. start order


async def test_children_start_in_order_and_startup_waits_for_all() -> None:
    log: list[str] = []
    tree = fluid.Workers(*(Logged(n, log) for n in "abc"), name="tree")
    await tree.startup()
    assert log == ["start:a", "start:b", "start:c"]
    assert all(child.is_running() for child in tree.children)
    await tree.shutdown()


async def test_a_child_failing_to_start_undoes_the_others_and_raises() -> None:
    log: list[str] = []

    class Broken(Logged):
        async def on_startup(self) -> None:
            raise ConnectionError("no broker")

    tree = fluid.Workers(Logged("a", log), Logged("b", log), Broken("c", log), Logged("d", log))
    with pytest.raises(ConnectionError, match="no broker") as info:
        await tree.startup()
    assert "while starting worker 'c' of tree 'workers'" in info.value.__notes__
    assert log == ["start:a", "start:b", "stop:b", "stop:a"]
    assert tree.worker_state is WorkerState.STOPPED
    assert all(not child.is_running() for child in tree.children)
    assert not live_tasks()


async def test_children_added_while_running_are_started() -> None:
    log: list[str] = []
    tree = fluid.Workers(Logged("a", log))
    async with tree:
        late = Logged("late", log)
        tree.add_workers(late)
        await wait_until(late.is_running)
        assert [c.worker_name for c in tree.children] == ["a", "late"]
    assert log[-2:] == ["stop:late", "stop:a"]


async def test_children_removed_while_running_are_stopped_and_the_tree_goes_on() -> None:
    log: list[str] = []
    tree = fluid.Workers(*(Logged(n, log) for n in ("consumer-1", "consumer-2", "api")))
    async with tree:
        removed = await tree.remove_workers("consumer-*")
        assert [w.worker_name for w in removed] == ["consumer-1", "consumer-2"]
        assert all(w.is_stopped() for w in removed)
        assert [c.worker_name for c in tree.children] == ["api"]
        assert tree.is_running()
        assert log[-2:] == ["stop:consumer-2", "stop:consumer-1"]
    assert await tree.remove_workers("nothing*") == []


async def test_a_child_removed_and_added_back_while_running_starts_again() -> None:
    log: list[str] = []
    worker = Logged("worker", log)
    tree = fluid.Workers(worker, Logged("other", log))
    async with tree:
        await tree.remove_workers("worker")
        assert worker.is_stopped()
        tree.add_workers(worker)
        await wait_until(worker.is_running)
        assert [c.worker_name for c in tree.children] == ["other", "worker"]
    assert log.count("stop:worker") == 2


async def test_removing_a_child_raises_the_error_it_ends_with() -> None:
    class BadClose(Idle):
        async def on_shutdown(self) -> None:
            raise OSError("close failed")

    tree = fluid.Workers(Idle(name="a"), BadClose(name="b"))
    async with tree:
        with pytest.raises(OSError, match="close failed"):
            await tree.remove_workers("b")
        assert [c.worker_name for c in tree.children] == ["a"]
        assert tree.is_running()


async def test_find_matches_glob_patterns_across_nested_trees() -> None:
    inner = fluid.Workers(Idle(name="consumer-2"), Idle(name="db"), name="inner")
    tree = fluid.Workers(Idle(name="consumer-1"), inner, Idle(name="api"), name="root")
    assert [w.worker_name for w in tree.find("consumer-*")] == ["consumer-1", "consumer-2"]
    assert [w.worker_name for w in tree.find("inner")] == ["inner"]
    assert [w.worker_name for w in tree.find("?pi")] == ["api"]
    assert tree.find("none") == []
    assert tree.num_workers == 4
    assert [w.worker_name for w in tree.workers()] == ["consumer-1", "consumer-2", "db", "api"]


def test_duplicate_explicit_names_are_rejected() -> None:
    tree = fluid.Workers(Idle(name="poll"))
    with pytest.raises(fluid.DuplicateWorkerName, match="already has a worker named 'poll'"):
        tree.add_workers(Idle(name="poll"))
    with pytest.raises(fluid.DuplicateWorkerName):
        fluid.Workers(Idle(name="x"), Idle(name="x"))


def test_derived_names_get_a_suffix_when_taken() -> None:
    tree = fluid.Workers(Idle(), Idle(), Idle())
    assert [c.worker_name for c in tree.children] == ["idle", "idle-2", "idle-3"]
    tree.add_workers(Idle())
    assert tree.children[-1].worker_name == "idle-4"


def test_a_worker_belongs_to_one_tree_and_trees_have_no_cycles() -> None:
    child = Idle()
    tree = fluid.Workers(child, name="one")
    with pytest.raises(ValueError, match="already belongs to tree 'one'"):
        fluid.Workers(child)
    with pytest.raises(ValueError, match="own descendant"):
        tree.add_workers(tree)
    outer = fluid.Workers(tree)
    with pytest.raises(ValueError, match="own descendant"):
        tree.add_workers(outer)
    lone = Idle(name="lone")
    with pytest.raises(ValueError, match="already belongs"):
        fluid.Workers(lone, lone)
    with pytest.raises(TypeError, match="Worker instances"):
        fluid.Workers("not a worker")  # type: ignore[arg-type]


async def test_a_worker_moves_from_a_stopped_tree_to_the_tree_adding_it() -> None:
    # a module-level worker in the tree each start of an app builds
    async def handle(message: int) -> None:
        pass

    consumer = fluid.QueueConsumerWorker(handle, name="orders")
    first = fluid.Workers(consumer, name="first")
    async with first:
        consumer.send(1)
    second = fluid.Workers(consumer, name="second")
    assert first.children == ()
    assert second.children == (consumer,)
    assert consumer.worker_path == "second/orders"
    async with second:
        consumer.send(2)
    assert (await consumer.status())["queue"]["handled"] == 2
    # the tree it left runs without it
    async with first:
        assert first.children == ()
    assert consumer.worker_path == "second/orders"


async def test_only_a_tree_that_ran_and_stopped_with_all_above_it_lets_a_worker_go() -> None:
    child = Idle(name="child")
    never_started = fluid.Workers(child, name="never")
    with pytest.raises(ValueError, match="already belongs to tree 'never'"):
        fluid.Workers(child)
    held = Idle(name="held")
    inner = fluid.Workers(held, name="inner")
    outer = fluid.Workers(inner, name="outer")
    async with outer:
        with pytest.raises(ValueError, match="already belongs to tree 'inner'"):
            fluid.Workers(held)  # its tree is running
        await outer.stop_workers("inner")
        assert inner.is_stopped()
        with pytest.raises(
            ValueError,
            match=r"already belongs to tree 'inner' \(tree 'outer' above it is running\)",
        ):
            fluid.Workers(held)  # its tree stopped, but the tree above runs
    taker = fluid.Workers(held, name="taker")
    assert held.worker_path == "taker/held"
    assert inner.children == ()
    assert never_started.children == (child,)
    assert taker.children == (held,)


async def test_a_batch_that_fails_its_checks_moves_nobody() -> None:
    mover = Idle(name="mover")
    old = fluid.Workers(mover, name="old")
    async with old:
        pass
    clash = Idle(name="clash")
    new = fluid.Workers(Idle(name="clash"), name="new")
    with pytest.raises(fluid.DuplicateWorkerName):
        new.add_workers(mover, clash)
    assert old.children == (mover,)
    assert mover.worker_path == "old/mover"


async def test_a_running_worker_cannot_be_added() -> None:
    async with Idle() as worker:
        with pytest.raises(ValueError, match="add workers to a tree before starting"):
            fluid.Workers(worker)


def test_a_bad_add_adds_nothing() -> None:
    tree = fluid.Workers(Idle(name="a"))
    with pytest.raises(fluid.DuplicateWorkerName):
        tree.add_workers(Idle(name="b"), Idle(name="a"))
    assert [c.worker_name for c in tree.children] == ["a"]


# ---------------------------------------------------------- 13. stop order


async def test_children_stop_in_reverse_start_order() -> None:
    log: list[str] = []
    tree = fluid.Workers(*(Logged(n, log) for n in "abc"))
    async with tree:
        pass
    assert log == ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]
    assert all(c.worker_state is WorkerState.STOPPED for c in tree.children)


async def test_each_child_gets_its_own_grace_period() -> None:
    log: list[str] = []
    deaf = Deaf(name="deaf", stopping_grace_period=0.05)
    tree = fluid.Workers(Logged("a", log), deaf, Logged("b", log), stopping_grace_period=60)
    await tree.startup()
    async with asyncio.timeout(BOUND):
        await tree.shutdown()
    assert deaf.worker_state is WorkerState.FORCE_STOPPED
    assert tree.worker_state is WorkerState.STOPPED
    assert log[-2:] == ["stop:b", "stop:a"]


async def test_a_forced_tree_stops_every_descendant() -> None:
    deep = [Deaf(name=f"deaf-{i}", stopping_grace_period=30) for i in range(3)]
    inner = fluid.Workers(deep[0], deep[1], name="inner", stopping_grace_period=30)
    tree = fluid.Workers(inner, deep[2], Idle(), name="root", stopping_grace_period=0.1)
    await tree.startup()
    async with asyncio.timeout(BOUND):  # far below the children's 30 s
        await tree.shutdown()
    assert tree.worker_state is WorkerState.FORCE_STOPPED
    assert all(w.is_stopped() for w in deep)
    assert all(w.cancelled for w in deep)
    assert not live_tasks()


async def test_cancelling_a_tree_shutdown_leaves_no_orphan() -> None:
    children = [Deaf(name=f"d{i}", stopping_grace_period=30) for i in range(3)]
    tree = fluid.Workers(*children, stopping_grace_period=30)
    await tree.startup()
    task = asyncio.create_task(tree.shutdown())
    await wait_until(children[-1].is_stopping)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(c.is_stopped() for c in children)
    assert not live_tasks()


async def test_a_cancelled_tree_startup_stops_started_children() -> None:
    gate = asyncio.Event()

    class Slow(Idle):
        async def on_startup(self) -> None:
            await gate.wait()

    first = Idle(name="first")
    tree = fluid.Workers(first, Slow(name="slow"))
    task = asyncio.create_task(tree.startup())
    await wait_until(first.is_running)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first.is_stopped()
    assert not live_tasks()


# --------------------------------------------- 14. no policy: a child exit stops


async def test_a_child_that_fails_stops_the_tree_with_its_error() -> None:
    log: list[str] = []
    crash = Crash()
    tree = fluid.Workers(Logged("a", log), crash, Logged("b", log), name="tree")
    await tree.startup()
    crash.error = ValueError("child blew up")
    crash.go.set()
    with pytest.raises(ValueError, match="child blew up") as info:
        async with asyncio.timeout(BOUND):
            await tree.wait_for_shutdown()
    assert info.value.__notes__ == ["raised by worker 'crash' of tree 'tree'"]
    assert log[-2:] == ["stop:b", "stop:a"]
    assert tree.worker_state is WorkerState.STOPPED
    with pytest.raises(ValueError, match="child blew up"):
        await tree.shutdown()  # still raised later
    assert (await tree.status())["error"] == "ValueError: child blew up"


async def test_a_child_that_ends_cleanly_stops_the_tree_without_error() -> None:
    crash = Crash()
    tree = fluid.Workers(Idle(), crash)
    await tree.startup()
    crash.go.set()
    async with asyncio.timeout(BOUND):
        await tree.wait_for_shutdown()
    assert tree.worker_state is WorkerState.STOPPED


async def test_errors_surface_through_nested_trees_with_their_path() -> None:
    crash = Crash()
    inner = fluid.Workers(crash, name="inner")
    root = fluid.Workers(Idle(), inner, name="root")
    await root.startup()
    crash.error = KeyError("deep")
    crash.go.set()
    with pytest.raises(KeyError) as info:
        async with asyncio.timeout(BOUND):
            await root.wait_for_shutdown()
    assert info.value.__notes__ == [
        "raised by worker 'crash' of tree 'inner'",
        "raised by worker 'inner' of tree 'root'",
    ]


async def test_a_child_added_while_running_that_fails_to_start_stops_the_tree() -> None:
    class Broken(Idle):
        async def on_startup(self) -> None:
            raise OSError("port in use")

    tree = fluid.Workers(Idle())
    await tree.startup()
    tree.add_workers(Broken())
    with pytest.raises(OSError, match="port in use"):
        async with asyncio.timeout(BOUND):
            await tree.wait_for_shutdown()


async def test_a_stopped_tree_can_be_started_again() -> None:
    log: list[str] = []
    tree = fluid.Workers(Logged("a", log))
    for _ in range(2):
        async with tree:
            assert tree.children[0].is_running()
    assert log == ["start:a", "stop:a"] * 2


# ------------------------------------------------------------ 15. status tree


async def test_status_is_a_json_tree() -> None:
    consumer = fluid.QueueConsumerWorker(_noop, name="consumer")
    inner = fluid.Workers(consumer, name="inner")
    tree = fluid.Workers(Idle(name="idle"), inner, name="root")
    async with tree:
        consumer.send(1)
        await wait_until(lambda: consumer.queue_size() == 0)
        status = json.loads(json.dumps(await tree.status()))
    assert all(node["uptime"] >= 0 for node in walk(status))
    for node in walk(status):
        del node["uptime"]
    common = {"state": "running", "restarts": 0, "error": None}
    assert status == {
        "name": "root",
        "path": "root",
        **common,
        "workers": [
            {"name": "idle", "path": "root/idle", **common},
            {
                "name": "inner",
                "path": "root/inner",
                **common,
                "workers": [
                    {
                        "name": "consumer",
                        "path": "root/inner/consumer",
                        **common,
                        "queue": {
                            "sent": 1,
                            "size": 0,
                            "capacity": None,
                            "handled": 1,
                            "failed": 0,
                            "in_flight": 0,
                            "taken": 0,
                            "undelivered": 0,
                        },
                    }
                ],
            },
        ],
    }


def walk(status: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield status
    for child in status.get("workers", []):
        yield from walk(child)


def test_heartbeat_is_validated_and_kept() -> None:
    assert fluid.Workers(heartbeat=2).heartbeat == 2.0
    with pytest.raises(ValueError, match="heartbeat"):
        fluid.Workers(heartbeat=-1)


async def _noop(message: object) -> None:
    pass


def test_workers_named_after_the_same_function_get_suffixes() -> None:
    async def poll() -> None:
        pass

    tree = fluid.Workers(fluid.WorkerFunction(poll), fluid.WorkerFunction(poll))
    assert [c.worker_name for c in tree.children] == ["poll", "poll-2"]
    with pytest.raises(fluid.DuplicateWorkerName):
        tree.add_workers(fluid.WorkerFunction(poll, name="poll"))


async def test_an_exit_seen_just_before_a_stop_does_not_stop_the_next_run() -> None:
    class StopsTheTreeAsItEnds(Idle):
        once = True

        def after_shutdown(self, reason: str, code: int = 0) -> None:
            # runs just before the tree hears of the exit: the stop request
            # reaches the tree first, so the exit is never handled in this run
            if self.once:
                self.once = False
                asyncio.get_running_loop().call_soon(tree.gracefully_stop)

    child = StopsTheTreeAsItEnds(name="child")
    tree = fluid.Workers(Idle(name="other"), child)
    await tree.startup()
    await asyncio.sleep(0)  # the tree's task now waits for news of its children
    child.gracefully_stop()
    await tree.wait_for_shutdown()
    await tree.startup()
    await asyncio.sleep(0.01)  # give a stale exit the chance to act
    assert tree.is_running()
    await tree.shutdown()


class CrashAsTheTreeStops(Crash):
    """Crashes in ``run()`` (``before``/``after`` the tree's stop request) or in ``on_shutdown``.

    ``before``: it crashes on its own and asks its tree to stop from its
    ``after_shutdown``, which runs just before the tree hears of its end: the
    stop request reaches the tree first, so the crash is still pending, never
    handled by a supervisor. ``after``: it crashes once the tree stops.
    ``on_shutdown``: it runs until stopped and fails in ``on_shutdown``.
    """

    def __init__(self, when: str) -> None:
        super().__init__("child")
        self.when = when
        self.tree: fluid.Workers | None = None

    async def run(self) -> None:
        if self.when == "on_shutdown":
            while self.is_running():
                await self.sleep(3600)
            return
        await super().run()

    async def on_shutdown(self) -> None:
        if self.when == "on_shutdown" and self.error is not None:
            raise self.error

    def after_shutdown(self, reason: str, code: int = 0) -> None:
        if self.when == "before" and self.tree is not None:
            asyncio.get_running_loop().call_soon(self.tree.gracefully_stop)


async def crash_as_the_tree_stops(
    strategy: fluid.Strategy | None, when: str, forced: bool
) -> tuple[fluid.Workers, CrashAsTheTreeStops, list[fluid.Transition]]:
    """Run a tree whose child fails ``when`` (see CrashAsTheTreeStops); start its stop."""
    child = CrashAsTheTreeStops(when)
    last = Deaf(name="deaf", stopping_grace_period=60) if forced else Idle(name="idle")
    grace = 0.05 if forced else 60  # forced: the deaf child outlasts the tree's grace
    tree = fluid.Workers(
        child, last, stopping_grace_period=grace, strategy=strategy, backoff=NO_WAIT
    )
    child.tree = tree
    transitions: list[fluid.Transition] = []
    tree.add_observer(transitions.append)
    await tree.startup()
    child.error = ValueError("lost?")
    if when == "before":
        for _ in range(3):  # the tree's task takes its first step: it now waits for news
            await asyncio.sleep(0)
        child.go.set()  # it ends, and its after_shutdown asks the tree to stop
        await wait_until(lambda: not tree.is_running())
    else:
        tree.gracefully_stop()
        child.go.set()  # "after": it crashes while the tree is already stopping
    return tree, child, transitions


WHEN = ["before", "after", "on_shutdown"]


@pytest.mark.parametrize("forced", [True, False])
@pytest.mark.parametrize("when", WHEN)
async def test_a_crash_as_an_unsupervised_tree_stops_is_its_error(when: str, forced: bool) -> None:
    # An unsupervised tree's outcome is its children's: their first error,
    # whenever it came, forced or not.
    tree, child, _ = await crash_as_the_tree_stops(None, when, forced)
    with pytest.raises(ValueError, match="lost") as info:
        async with asyncio.timeout(BOUND):
            await tree.shutdown()
    assert "raised by worker 'child' of tree 'workers'" in info.value.__notes__
    expected = WorkerState.FORCE_STOPPED if forced else WorkerState.STOPPED
    assert tree.worker_state is expected
    assert child.is_stopped()


@pytest.mark.parametrize("forced", [True, False])
@pytest.mark.parametrize("when", WHEN)
async def test_a_crash_as_a_supervised_tree_stops_is_logged_not_raised(
    when: str, forced: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A supervised tree's outcome is its own: a child's crash that no
    # supervisor handled because the tree was stopping (or was asked to stop
    # just before) is not restarted, and is logged and kept, not raised. It
    # used to be raised, so whether shutdown() raised depended on a race
    # between a crash and the stop request.
    tree, child, transitions = await crash_as_the_tree_stops("one_for_one", when, forced)
    error = child.error
    async with asyncio.timeout(BOUND):
        await tree.shutdown()  # raises nothing
    expected = WorkerState.FORCE_STOPPED if forced else WorkerState.STOPPED
    assert tree.worker_state is expected
    await tree.wait_for_shutdown()  # nothing kept to raise later either
    assert child.is_stopped()
    assert child.restarts == 0
    crashed = [e for e in transitions if e.kind == "crashed"]
    assert [(e.worker, e.error) for e in crashed] == [(child, error)]  # kept by the child
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] is error]
    assert any("failed as the tree stopped" in r.getMessage() for r in logged)
    assert all(r.levelno == logging.ERROR for r in logged)
    status = await child.status()
    assert status["error"] == "ValueError: lost?"


# ------------------------------------- membership while the tree starts (issue 12)


class Gate:
    """An ``on_startup`` that waits until released: holds a tree in "starting"."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.entered.set()
        await self.release.wait()


class Gated(Idle):
    """An idle worker whose ``on_startup`` waits for its gate."""

    def __init__(self, name: str, gate: Gate) -> None:
        super().__init__(name, 1.0)
        self.gate = gate

    async def on_startup(self) -> None:
        await self.gate()


class GatedTree(fluid.Workers):
    """A tree whose own ``on_startup`` waits for its gate (before any child starts)."""

    def __init__(self, *workers: fluid.Worker, gate: Gate, **kwargs: Any) -> None:
        super().__init__(*workers, **kwargs)
        self.gate = gate

    async def on_startup(self) -> None:
        await self.gate()


async def start_held(tree: fluid.Workers, gate: Gate) -> asyncio.Task[None]:
    task = asyncio.create_task(tree.startup())
    async with asyncio.timeout(BOUND):
        await gate.entered.wait()
    return task


@pytest.mark.parametrize("held_by", ["child", "tree"])
async def test_a_child_removed_while_its_tree_starts_is_never_started(held_by: str) -> None:
    gate = Gate()
    later = Idle(name="later")
    if held_by == "child":
        tree = fluid.Workers(Gated("first", gate), later)
    else:
        tree = GatedTree(Idle(name="first"), later, gate=gate)
    starting = await start_held(tree, gate)
    assert await tree.remove_workers("later") == [later]
    gate.release.set()
    await starting
    try:
        assert later.worker_state is WorkerState.INIT
        assert [c.worker_name for c in tree.children] == ["first"]
    finally:
        await tree.shutdown()
        await later.shutdown()  # an orphan, on the code this guards against
    assert not live_tasks()


@pytest.mark.parametrize("held_by", ["child", "tree"])
async def test_a_child_stopped_while_its_tree_starts_stays_stopped_until_started(
    held_by: str,
) -> None:
    gate = Gate()
    later = Crash("later")
    if held_by == "child":
        tree = fluid.Workers(Gated("first", gate), later, name="tree")
    else:
        tree = GatedTree(Idle(name="first"), later, gate=gate, name="tree")
    starting = await start_held(tree, gate)
    assert await tree.stop_workers("later") == [later]
    gate.release.set()
    await starting
    assert later.worker_state is WorkerState.INIT  # not started behind the caller's back
    assert await tree.start_workers("later") == [later]
    later.error = ValueError("later failed")
    later.go.set()  # supervised again: its crash stops the unsupervised tree
    with pytest.raises(ValueError, match="later failed"):
        async with asyncio.timeout(BOUND):
            await tree.wait_for_shutdown()
    assert not live_tasks()


async def test_a_child_started_by_hand_while_its_tree_starts_is_not_started_twice() -> None:
    gate = Gate()
    later = Idle(name="later")
    tree = fluid.Workers(Gated("first", gate), later)
    starting = await start_held(tree, gate)
    await tree.stop_workers("later")
    await tree.start_workers("later")
    gate.release.set()
    await starting  # would raise WorkerStartError if the tree started it again
    assert later.is_running()
    await tree.shutdown()
    assert later.is_stopped()


async def test_a_child_started_by_hand_while_its_tree_fails_to_start_is_stopped() -> None:
    class FailsToStart(GatedTree):
        async def on_startup(self) -> None:
            await super().on_startup()
            raise ConnectionError("no database")

    gate = Gate()
    child = Idle(name="child")
    tree = FailsToStart(child, gate=gate)
    starting = await start_held(tree, gate)
    assert await tree.start_workers("child") == [child]  # its tree is starting: it starts now
    gate.release.set()
    with pytest.raises(ConnectionError, match="no database"):
        await starting
    try:
        assert child.is_stopped()
    finally:
        await child.shutdown()  # an orphan, on the code this guards against
    assert not live_tasks()


async def test_start_workers_leaves_a_child_of_a_stopped_tree_to_start_with_it() -> None:
    child = Idle(name="child")
    tree = fluid.Workers(child)
    assert await tree.start_workers("child") == []
    assert child.worker_state is WorkerState.INIT  # nothing would stop it: the tree does not run
    async with tree:
        assert child.is_running()


async def busy_tree(tree: fluid.Workers) -> Gate:
    """Keep the running ``tree`` busy starting an added child until the gate opens.

    Meanwhile the ends of its children wait to be handled: what happens to
    them before the tree gets to them is then in the test's hands.
    """
    gate = Gate()
    tree.add_workers(Gated("slow-to-start", gate))
    async with asyncio.timeout(BOUND):
        await gate.entered.wait()
    return gate


def remove_when_it_crashes(tree: fluid.Workers, child: fluid.Worker) -> list[asyncio.Task[Any]]:
    """An observer that removes ``child`` as it crashes, before its tree handles the end."""
    removals: list[asyncio.Task[Any]] = []

    def observer(transition: fluid.Transition) -> None:
        if transition.kind == "crashed" and transition.worker is child:
            removals.append(asyncio.ensure_future(tree.remove_workers(child.worker_name)))

    tree.add_observer(observer)
    return removals


async def test_the_end_of_a_removed_child_does_not_stop_an_unsupervised_tree() -> None:
    crash = Crash()
    tree = fluid.Workers(Idle(name="a"), crash)
    removals = remove_when_it_crashes(tree, crash)
    async with tree:
        gate = await busy_tree(tree)
        crash.error = ValueError("gone")
        crash.go.set()
        await wait_until(lambda: bool(removals) and removals[0].done())
        with pytest.raises(ValueError, match="gone"):
            removals[0].result()  # the remover gets the error
        gate.release.set()  # the tree now handles the end of a child it no longer has
        await wait_until(lambda: tree.children[-1].is_running())
        await asyncio.sleep(0.01)  # the end, if it acted, would stop the tree within turns
        assert tree.is_running()
        assert [c.worker_name for c in tree.children] == ["a", "slow-to-start"]


@pytest.mark.parametrize("supervised", [False, True])
@pytest.mark.parametrize("first", ["stopper", "tree"])
async def test_a_child_stopped_on_request_as_its_tree_stops_fails_its_stopper_only(
    supervised: bool, first: str, caplog: pytest.LogCaptureFixture
) -> None:
    """stop_workers() racing the tree's own stop: the error is the stopper's, not the tree's."""

    class SlowToFail(fluid.Worker):
        async def run(self) -> None:
            while self.is_running():
                await self.sleep(60)

        async def on_shutdown(self) -> None:
            await asyncio.sleep(0.2)
            raise RuntimeError("a failed on its way out")

    options: dict[str, Any] = {"strategy": "one_for_one"} if supervised else {}
    tree = fluid.Workers(SlowToFail(name="a"), Idle(name="b"), name="t", **options)
    await tree.startup()
    loop = asyncio.get_running_loop()
    if first == "stopper":
        stopping = loop.create_task(tree.stop_workers("a"))
        await asyncio.sleep(0.05)
        tree_stop = loop.create_task(tree.shutdown())
    else:
        tree_stop = loop.create_task(tree.shutdown())
        await asyncio.sleep(0)
        stopping = loop.create_task(tree.stop_workers("a"))
    async with asyncio.timeout(10):
        with pytest.raises(RuntimeError, match="a failed on its way out"):
            await stopping
        await tree_stop  # not the tree's error
    assert tree.worker_state is WorkerState.STOPPED
    assert not [r for r in caplog.records if "failed as the tree stopped" in r.getMessage()]


# ------------------------------------------------ adding: the batch checks
# add_workers() checks a batch with a short path when every worker is new and
# its name free, and one by one otherwise. These tests compare both with the
# checks as they were, one worker at a time, on random batches.


class Poll(Idle):
    """An idle worker with a derived name: ``poll``."""


def _expected_names(tree: fluid.Workers, workers: list[Any]) -> list[str] | tuple[str, str]:
    """The names ``add_workers`` gives, or the error it raises: the one-by-one checks."""
    ancestors: set[int] = set()
    node: fluid.Worker | None = tree
    while node is not None:
        ancestors.add(id(node))
        node = node._parent
    counts = dict(tree._name_counts)
    children = {w.worker_name for w in tree.children}
    seen: set[int] = set()
    names: list[str] = []
    for worker in workers:
        if not isinstance(worker, fluid.Worker):
            return "TypeError", f"workers must be Worker instances, got {worker!r}"
        if id(worker) in ancestors:
            return "ValueError", f"worker {worker.worker_name!r} cannot be its own descendant"
        parent = worker._parent
        if parent is tree:
            return "ValueError", (
                f"worker {worker.worker_name!r} is already in tree {tree.worker_name!r}"
            )
        node, holding = parent, None
        while node is not None:  # a tree that ran and stopped, with all above it, lets go
            if holding is None and not node.is_stopped():
                holding = node
            node = node._parent
        if holding is not None or id(worker) in seen:
            owner = parent.worker_name if parent is not None else tree.worker_name
            above = (
                f" (tree {holding.worker_name!r} above it is {holding.worker_state})"
                if holding is not None and holding is not parent
                else ""
            )
            return "ValueError", (
                f"worker {worker.worker_name!r} already belongs to tree {owner!r}{above}"
            )
        if worker.is_running() or worker.is_stopping():
            return "ValueError", (
                f"worker {worker.worker_name!r} is {worker.worker_state}: add workers to "
                "a tree before starting them"
            )
        seen.add(id(worker))
        name = worker.worker_name
        if name in children or name in names:
            if not worker._auto_name:
                return "DuplicateWorkerName", (
                    f"tree {tree.worker_name!r} already has a worker named {name!r}"
                )
            n = counts.get(name, 1)
            while True:
                n += 1
                candidate = f"{name}-{n}"
                if candidate not in children and candidate not in names:
                    counts[name] = n
                    name = candidate
                    break
        names.append(name)
    return names


def _random_batch(
    rng: Any, tree: fluid.Workers, root: fluid.Workers, other: fluid.Workers
) -> list[Any]:
    batch: list[Any] = []
    for _ in range(rng.randrange(9)):
        kind = rng.random()
        if kind < 0.45:
            batch.append(Idle(name=rng.choice(["a", "b", "poll", "poll-2", "a-2", "c"])))
        elif kind < 0.75:
            batch.append(Poll())
        elif kind < 0.8 and tree.children:
            batch.append(rng.choice(tree.children))
        elif kind < 0.83:
            batch.append(other.children[0])
        elif kind < 0.86:
            batch.append(rng.choice([tree, root]))
        elif kind < 0.89:
            batch.append(rng.choice([42, "a", None]))
        elif batch:
            batch.append(rng.choice(batch))
    return batch


def test_a_batch_gets_the_names_and_errors_of_the_one_by_one_checks() -> None:
    import random

    outcomes: set[str] = set()
    for seed in range(400):
        rng = random.Random(seed)
        tree = fluid.Workers(name="t")
        root = fluid.Workers(tree, name="root")
        other = fluid.Workers(Idle(name="x"), name="other")
        for _ in range(3):  # batches one after the other: suffixes carry on
            batch = _random_batch(rng, tree, root, other)
            expected = _expected_names(tree, batch)
            before = [(w.worker_name, w) for w in tree.children]
            parents = [getattr(w, "worker_path", None) for w in batch]
            if isinstance(expected, tuple):
                with pytest.raises((TypeError, ValueError)) as caught:
                    tree.add_workers(*batch)
                assert (type(caught.value).__name__, str(caught.value)) == expected, seed
                outcomes.add(expected[0])
                # all are checked before any is added
                assert [(w.worker_name, w) for w in tree.children] == before, seed
                assert [getattr(w, "worker_path", None) for w in batch] == parents, seed
            else:
                tree.add_workers(*batch)
                added = list(tree.children)[len(before) :]
                assert added == batch, seed
                assert [w.worker_name for w in added] == expected, seed
                assert all(w.worker_path == f"root/t/{w.worker_name}" for w in added), seed
                outcomes.add("added")
    assert outcomes == {"added", "TypeError", "ValueError", "DuplicateWorkerName"}


async def test_a_started_worker_is_refused_in_a_batch_at_its_place() -> None:
    running = Idle(name="running")
    await running.startup()
    try:
        for batch in (
            [Idle(name="a"), running],
            [running, 42],
            [42, running],
            [Poll(), Poll(), running],
        ):
            tree = fluid.Workers(Poll(), name="t")
            expected = _expected_names(tree, batch)
            assert isinstance(expected, tuple)
            with pytest.raises((TypeError, ValueError)) as caught:
                tree.add_workers(*batch)
            assert (type(caught.value).__name__, str(caught.value)) == expected
            assert [w.worker_name for w in tree.children] == ["poll"]
    finally:
        await running.shutdown()


def test_free_names_in_a_batch_are_not_looked_at_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a taken name goes through ``_free_name``: a large tree of free names does not."""
    calls: list[str] = []
    free_name = fluid.Workers._free_name

    def counted(self: fluid.Workers, worker: fluid.Worker, taken: set[str]) -> str:
        calls.append(worker.worker_name)
        return free_name(self, worker, taken)

    monkeypatch.setattr(fluid.Workers, "_free_name", counted)
    tree = fluid.Workers(*[Idle(name=f"w{i}") for i in range(100)], name="t")
    assert calls == []
    tree.add_workers(Poll(), Poll(), Idle(name="w100"))
    assert calls == ["poll"]
    assert [w.worker_name for w in tree.children][-3:] == ["poll", "poll-2", "w100"]
