"""Issue 16 (lighter workers), attacked as a hostile user would: no behaviour may change.

The lighter workers (3fb7b99, 1744d08, 2e27049) kept their observers in a
registry of ``_lifecycle``, started their task and its done callback in one
context copy, ran their sleep timers in the thread's empty context, packed a
slot's membership bits and restart type into one int, read a worker's parent
through its slot, and built a ``WorkerFunction`` by calling
``Worker.__init__`` by name.

The review found, as strict xfails, defects fixed since (24fece2, 10a8183):
a task factory of asyncio's legacy two-argument form no longer started a
worker; an observer referring to its worker kept it alive for ever (every
``Prefork`` was immortal); a worker class with ``__eq__`` could take no
observer, failed ``startup()`` once anything was observed, and shared its
observers with its equals; a copy or an unpickled worker lost its
observers; a ``WorkerFunction`` subclass skipped the ``__init__`` of a
Worker mixin; and the first version of the fix named a new Worker slot
``_waiters``, which a subclass's own attribute (asyncio's primitives use the
name) clobbered. These tests now hold the fixes. The others pin what was
attacked and held: contexts kept apart between workers and from timers, a
worker run in two threads' loops and in a forked child, observers added late
or from another thread, restart types and membership through remove,
re-add, hold, restart and moves between trees, the waiters of a run, a task
factory that fails, and the inline checks of ``WorkerFunction``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import gc
import math
import multiprocessing
import pickle
import threading
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import fluid
from fluid import WorkerState
from fluid import _worker as fluid_worker
from fluid._per_thread import timer_context
from fluid._validate import check_seconds

from .helpers import Idle, live_tasks, wait_until
from .test_supervision import NO_WAIT, Crashy

BOUND = 10.0
"""Seconds a wait may take before the test fails: a bug here is a hang, not a slow run."""

marker: contextvars.ContextVar[str] = contextvars.ContextVar("issue16_marker", default="unset")


async def noop() -> None:
    pass


def kinds_of(worker: fluid.Worker) -> list[tuple[str, str]]:
    heard: list[tuple[str, str]] = []
    worker.add_observer(lambda t: heard.append((t.kind, t.path)))
    return heard


@pytest.fixture
def never_observed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process where no observer was ever added: transitions are not computed."""
    monkeypatch.setattr(fluid_worker, "_observed", False, raising=False)


# ---------------------------------------- defects found here, fixed in 10a8183


def legacy_factory(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any]:
    """A task factory of the form asyncio calls when no context is asked for (aiomonitor-style)."""
    return asyncio.Task(coro, loop=loop)


@contextlib.contextmanager
def task_factory(factory: Callable[..., asyncio.Task[Any]]) -> Iterator[None]:
    """The running loop makes its tasks with ``factory`` inside the block."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(factory)
    try:
        yield
    finally:
        loop.set_task_factory(None)


async def test_a_legacy_task_factory_still_starts_a_worker() -> None:
    """3fb7b99 passed context= to create_task: a (loop, coro) factory raised TypeError."""
    worker = Idle(name="idle")
    refused = None
    with task_factory(legacy_factory):
        try:
            await worker.startup()
        except TypeError as exc:
            refused = str(exc)
            traceback = exc.__traceback__
            while traceback is not None:  # close the _main() the factory never got
                coro = traceback.tb_frame.f_locals.get("coro")
                if isinstance(coro, Coroutine):
                    coro.close()
                traceback = traceback.tb_next
    if refused is not None:
        pytest.fail(f"startup() refused a legacy task factory: {refused}")
    assert worker.is_running()
    await worker.shutdown()
    assert worker.worker_state is WorkerState.STOPPED


class Monitor:
    """What users write: an object that holds a worker and observes it with a method."""

    def __init__(self) -> None:
        self.worker = Idle(name="watched")
        self.heard: list[str] = []
        self.worker.add_observer(self.on_transition)

    def on_transition(self, transition: fluid.Transition) -> None:
        self.heard.append(transition.kind)


def test_an_observer_that_holds_its_worker_does_not_keep_it_alive() -> None:
    """1744d08 kept observers in a module-level registry: one referring to its worker kept it."""
    monitor = Monitor()
    gone = weakref.ref(monitor.worker)
    del monitor
    gc.collect()
    assert gone() is None, "the worker outlived everything that referred to it"


def test_a_dropped_prefork_is_freed() -> None:
    """A Prefork observes itself with a bound method: 1744d08 made every Prefork immortal."""
    prefork = fluid.Prefork("tests._process_targets:nothing", processes=1)
    gone = weakref.ref(prefork)
    del prefork
    gc.collect()
    assert gone() is None, "a Prefork built and dropped is never freed"


PICKLED_HEARD: list[str] = []


def heard_after_pickling(transition: fluid.Transition) -> None:
    """An observer that pickles by reference, as a module-level function does."""
    PICKLED_HEARD.append(transition.kind)


@pytest.mark.parametrize("duplicate", [copy.copy, lambda w: pickle.loads(pickle.dumps(w))])
async def test_a_copied_or_pickled_worker_keeps_its_observers(
    duplicate: Callable[[Idle], Idle],
) -> None:
    """1744d08 took the observers out of the worker: a copy or an unpickled worker lost them."""
    PICKLED_HEARD.clear()
    worker = Idle(name="idle")
    worker.add_observer(heard_after_pickling)
    twin = duplicate(worker)
    await twin.startup()
    await twin.shutdown()
    assert PICKLED_HEARD, "the copy's observers were lost"


async def test_an_observer_that_holds_its_worker_lets_it_go_once_removed() -> None:
    monitor = Monitor()
    async with monitor.worker:
        pass
    assert monitor.heard == ["started", "stopping", "stopped"]
    monitor.worker.remove_observer(monitor.on_transition)
    gone = weakref.ref(monitor.worker)
    del monitor
    gc.collect()
    assert gone() is None


class Traced(fluid.Worker):
    """A Worker mixin with a cooperative ``__init__``."""

    def __init__(self, name: str = "", stopping_grace_period: float = 5.0) -> None:
        super().__init__(name, stopping_grace_period)
        self.trace = ["init"]


class TracedFunction(fluid.WorkerFunction, Traced):
    """MRO: TracedFunction, WorkerFunction, Traced, Worker: WorkerFunction's base is Traced."""


def test_a_worker_function_with_a_worker_mixin_runs_the_mixins_init() -> None:
    """2e27049 called Worker.__init__ by name, skipping a Worker mixin after WorkerFunction."""
    worker = TracedFunction(noop, heartbeat=1.0)
    assert getattr(worker, "trace", None) == ["init"], "Traced.__init__ was skipped"


# ---------------------------------------------------- contexts: what held


async def test_workers_started_by_one_task_do_not_share_a_context() -> None:
    seen: dict[str, str] = {}
    set_by_a = asyncio.Event()

    async def a() -> bool:
        marker.set("a")
        set_by_a.set()
        seen["a"] = marker.get()
        return False

    async def b() -> bool:
        await set_by_a.wait()
        seen["b"] = marker.get()
        return False

    marker.set("starter")
    first, second = fluid.WorkerFunction(a, name="a"), fluid.WorkerFunction(b, name="b")
    await first.startup()
    await second.startup()
    async with asyncio.timeout(BOUND):
        await first.wait_for_shutdown()
        await second.wait_for_shutdown()
    assert seen == {"a": "a", "b": "starter"}
    assert marker.get() == "starter"


async def test_a_sleep_wakes_the_worker_in_its_own_context_not_the_timers() -> None:
    seen: list[str] = []

    class Sleeper(fluid.Worker):
        async def run(self) -> None:
            marker.set(self.worker_name)
            for _ in range(3):
                await self.sleep(0.001)
                seen.append(marker.get())

    workers = [Sleeper(name=f"s{i}") for i in range(3)]
    tree = fluid.Workers(*workers)
    async with tree:
        await wait_until(lambda: all(w.is_stopped() for w in workers), BOUND)
    assert sorted(seen) == sorted(f"s{i}" for i in range(3) for _ in range(3))
    assert len(timer_context()) == 0, "a timer callback wrote into the thread's context"


async def test_a_worker_started_in_a_context_sees_it_in_on_shutdown_after_a_crash() -> None:
    """The done callback shares the task's context copy; the hooks keep the starter's values."""
    seen: list[str] = []

    class Crash(fluid.Worker):
        async def run(self) -> None:
            raise RuntimeError("boom")

        async def on_shutdown(self) -> None:
            seen.append(marker.get())

    token = marker.set("starter")
    worker = Crash(name="crash")
    await worker.startup()
    marker.reset(token)
    with pytest.raises(RuntimeError, match="boom"):
        async with asyncio.timeout(BOUND):
            await worker.wait_for_shutdown()
    assert seen == ["starter"]


def test_a_worker_sleeps_and_stops_in_a_loop_of_another_thread_then_of_this_one() -> None:
    """The same worker runs in two threads' loops in turn: ident and timer context follow."""
    worker = Idle(name="idle")
    errors: list[BaseException] = []

    async def one_run() -> int:
        await worker.startup()
        ident = worker._thread_id
        stopper = threading.Thread(target=worker.gracefully_stop)  # from a third thread
        stopper.start()
        async with asyncio.timeout(BOUND):
            await worker.wait_for_shutdown()
        stopper.join(BOUND)
        return ident

    def in_thread() -> None:
        try:
            idents.append(asyncio.run(one_run()))
        except BaseException as exc:
            errors.append(exc)

    idents: list[int] = []
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive()
    assert not errors, errors
    idents.append(asyncio.run(one_run()))
    assert idents == [idents[0], threading.get_ident()]
    assert idents[0] != threading.get_ident()
    assert worker.worker_state is WorkerState.STOPPED


def sleep_in_forked_child() -> None:
    async def main() -> None:
        worker = fluid.WorkerFunction(noop, heartbeat=0.001, name="beat")
        async with asyncio.timeout(5):
            await worker.startup()
            await asyncio.sleep(0.02)
            await worker.shutdown()
        if worker.worker_state is not WorkerState.STOPPED:
            raise SystemExit(3)

    asyncio.run(main())


def test_a_forked_child_sleeps_with_the_thread_state_it_inherited() -> None:
    async def warm() -> None:  # this thread's ident and timer context exist before the fork
        worker = fluid.WorkerFunction(noop, heartbeat=0.001, name="warm")
        await worker.startup()
        await worker.sleep(0.001)
        await worker.shutdown()

    asyncio.run(warm())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        process = multiprocessing.get_context("fork").Process(target=sleep_in_forked_child)
        process.start()
    process.join(BOUND)
    assert process.exitcode == 0


# ----------------------------------------------------- observers: what held


# Found here against 2e27049 (a WeakKeyDictionary keyed by worker), fixed in 24fece2:
# a worker class with __eq__ could take no observer, failed startup() once any worker
# was observed, and equal workers shared their observers.


class ByName(Idle):
    """A worker class that compares by name (``__eq__`` alone makes it unhashable)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByName) and other.worker_name == self.worker_name


class HashedByName(ByName):
    def __hash__(self) -> int:
        return hash(self.worker_name)


def test_a_worker_class_with_eq_takes_observers() -> None:
    worker = ByName(name="w")
    try:
        worker.add_observer(lambda t: None)
    except TypeError as exc:
        pytest.fail(f"add_observer failed: {exc}")


async def test_a_worker_class_with_eq_starts_while_another_worker_is_observed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kinds_of(Idle(name="elsewhere"))  # a tree root, a Prefork: someone in the process observes
    worker = ByName(name="w")
    refused = None
    try:
        async with asyncio.timeout(BOUND):
            await worker.startup()
    except TypeError as exc:
        refused = str(exc)
        monkeypatch.setattr(fluid_worker, "_observed", False)  # to stop the orphan cleanly
    async with asyncio.timeout(BOUND):
        await worker.shutdown()
    assert refused is None, f"startup() failed: {refused}"
    assert worker.worker_state is WorkerState.STOPPED


async def test_equal_workers_do_not_share_observers() -> None:
    first, second = HashedByName(name="same"), HashedByName(name="same")
    heard = kinds_of(first)
    await second.startup()
    await second.shutdown()
    assert heard == [], "an observer of one worker heard another"


@pytest.mark.usefixtures("never_observed")
async def test_an_observer_added_from_another_thread_to_a_running_tree_is_told() -> None:
    child = Idle(name="child")
    tree = fluid.Workers(child, name="tree")
    await tree.startup()
    heard: list[tuple[str, str]] = []
    adder = threading.Thread(
        target=lambda: child.add_observer(lambda t: heard.append((t.kind, t.path)))
    )
    adder.start()
    adder.join(BOUND)
    await tree.shutdown()
    assert heard == [("stopping", "tree/child"), ("stopped", "tree/child")]


@pytest.mark.usefixtures("never_observed")
async def test_an_observer_of_a_grandparent_added_late_hears_a_restart_and_a_crash() -> None:
    leaf = Crashy("leaf")
    inner = fluid.Workers(leaf, name="inner", strategy="one_for_one", backoff=NO_WAIT)
    root = fluid.Workers(inner, name="root")
    async with root:
        heard = kinds_of(root)
        leaf.crash()
        await wait_until(lambda: ("restarted", "root/inner/leaf") in heard, BOUND)
    assert heard[:2] == [("crashed", "root/inner/leaf"), ("started", "root/inner/leaf")]
    assert heard[-1] == ("stopped", "root")


async def test_an_observer_removing_itself_while_told_and_others_in_order() -> None:
    worker = Idle(name="idle")
    order: list[str] = []

    def once(t: fluid.Transition) -> None:
        order.append(f"once:{t.kind}")
        worker.remove_observer(once)

    worker.add_observer(lambda t: order.append(f"first:{t.kind}"))
    worker.add_observer(once)
    worker.add_observer(lambda t: order.append(f"last:{t.kind}"))
    worker.remove_observer(print)  # never added: nothing happens
    async with worker:
        pass
    assert order[:3] == ["first:started", "once:started", "last:started"]
    assert "once:stopped" not in order
    assert order[-1] == "last:stopped"


# ------------------------------------- restart types and membership: what held


async def test_a_child_re_added_with_another_restart_type_follows_the_new_one() -> None:
    child = Crashy("child")
    tree = fluid.Workers(Idle(name="other"), name="tree", strategy="one_for_one", backoff=NO_WAIT)
    tree.add_workers(child, restart="permanent")
    async with tree:
        await tree.remove_workers("child")
        assert child.is_stopped()
        tree.add_workers(child, restart="temporary")
        await wait_until(child.is_running, BOUND)
        child.crash(RuntimeError("expected"))
        await wait_until(child.is_stopped, BOUND)
        assert child.worker_path == "tree/child"
        assert child.restarts == 0
        tree.add_workers(Idle(name="after"))  # the tree goes on
        await wait_until(lambda: tree.children[-1].is_running(), BOUND)


async def test_a_held_sibling_of_a_one_for_all_restart_stays_stopped_and_keeps_its_type() -> None:
    first, held = Crashy("first"), Crashy("held")
    tree = fluid.Workers(first, name="tree", strategy="one_for_all", backoff=NO_WAIT)
    tree.add_workers(held, restart="transient")
    async with tree:
        heard = kinds_of(tree)
        await tree.stop_workers("held")
        first.crash()
        await wait_until(lambda: ("restarted", "tree/first") in heard, BOUND)
        assert held.is_stopped()
        assert held.restarts == 0
        assert await tree.start_workers("held") == [held]
        held.finish()  # transient: a clean end is not restarted
        await wait_until(held.is_stopped, BOUND)
        assert all(path != "tree/held" for kind, path in heard if kind == "restarted")
        await tree.start_workers("held")
        held.crash()  # transient: a crash is
        await wait_until(lambda: ("restarted", "tree/held") in heard, BOUND)
        assert first.is_running()
        assert held.is_running()


async def test_a_removed_held_child_added_back_starts_with_its_running_tree() -> None:
    child = Crashy("child")
    tree = fluid.Workers(Idle(name="other"), name="tree", strategy="one_for_one", backoff=NO_WAIT)
    tree.add_workers(child)
    async with tree:
        await tree.stop_workers("child")
        await tree.remove_workers("child")
        assert child._parent is None
        tree.add_workers(child)  # a new slot: neither held nor restarting
        await wait_until(child.is_running, BOUND)
        child.crash()
        await wait_until(lambda: child.restarts == 1 and child.is_running(), BOUND)


async def test_a_worker_moved_from_a_stopped_tree_is_restarted_by_its_new_supervisor() -> None:
    worker, stays = Crashy("w"), Idle(name="stays")
    old = fluid.Workers(worker, stays, name="old", strategy="one_for_one", backoff=NO_WAIT)
    heard_old = kinds_of(old)
    async with old:
        pass
    heard_old.clear()
    new = fluid.Workers(name="new", strategy="one_for_one", restart="permanent", backoff=NO_WAIT)
    new.add_workers(worker)
    assert worker.worker_path == "new/w"
    assert old.children == (stays,)
    heard_new = kinds_of(new)
    async with new:
        worker.crash()
        await wait_until(lambda: ("restarted", "new/w") in heard_new, BOUND)
        assert worker.restarts == 1
        async with old:  # the old tree runs again, without it
            assert stays.is_running()
        assert worker.is_running()
    assert all(path in ("old", "old/stays") for _, path in heard_old)


async def test_a_batch_with_a_mover_forgets_only_the_movers_old_slot() -> None:
    mover, stays = Idle(name="mover"), Idle(name="stays")
    old = fluid.Workers(mover, stays, name="old")
    async with old:
        pass
    new = fluid.Workers(name="new")
    fresh = [Idle(name=f"fresh{i}") for i in range(3)]
    new.add_workers(fresh[0], mover, *fresh[1:], restart="temporary")
    assert [c.worker_name for c in new.children] == ["fresh0", "mover", "fresh1", "fresh2"]
    assert old.children == (stays,)
    assert stays.worker_path == "old/stays"
    async with new:
        assert all(c.is_running() for c in new.children)
    assert stays.worker_state is WorkerState.STOPPED


async def test_a_refused_batch_with_a_mover_leaves_the_mover_in_its_old_tree() -> None:
    mover = Idle(name="mover")
    old = fluid.Workers(mover, name="old")
    async with old:
        pass
    new = fluid.Workers(Idle(name="taken"), name="new")
    with pytest.raises(fluid.DuplicateWorkerName):
        new.add_workers(mover, Idle(name="taken"))
    assert mover.worker_path == "old/mover"
    assert old.children == (mover,)
    async with old:
        assert mover.is_running()


async def test_stop_start_and_remove_interleaved_leave_no_task_and_the_right_children() -> None:
    children = [Crashy(f"c{i}") for i in range(4)]
    tree = fluid.Workers(*children, name="tree", strategy="one_for_one", backoff=NO_WAIT)
    async with tree:
        stop = asyncio.create_task(tree.stop_workers("c1", "c2"))
        remove = asyncio.create_task(tree.remove_workers("c2"))
        await asyncio.gather(stop, remove)
        started = await tree.start_workers("c*")
        assert started == [children[1]]
        assert [c.worker_name for c in tree.children] == ["c0", "c1", "c3"]
        children[3].crash()
        await wait_until(lambda: children[3].restarts == 1 and children[3].is_running(), BOUND)
        assert children[2].is_stopped()
        assert children[2]._parent is None
    assert not live_tasks()


# ----------------------------------------- WorkerFunction's inline checks: held


@pytest.mark.parametrize(
    "heartbeat",
    [0.5, 0.0, -0.0, 2, 0, True, -1.0, math.nan, math.inf, 1e308, "1", None],
)
def test_a_worker_functions_heartbeat_is_checked_as_check_seconds_does(heartbeat: Any) -> None:
    try:
        expected: object = check_seconds("heartbeat", heartbeat)
    except (TypeError, ValueError) as exc:
        expected = exc
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match="heartbeat"):
            fluid.WorkerFunction(noop, heartbeat=heartbeat)
    else:
        worker = fluid.WorkerFunction(noop, heartbeat=heartbeat)
        assert worker._heartbeat == expected
        assert math.copysign(1, worker._heartbeat) == math.copysign(1, float(expected))


async def test_a_function_without_heartbeat_ending_with_false_stops_its_worker() -> None:
    calls = 0

    async def count() -> bool:
        nonlocal calls
        calls += 1
        return calls < 100

    worker = fluid.WorkerFunction(count, heartbeat=0)
    await worker.startup()
    async with asyncio.timeout(BOUND):
        await worker.wait_for_shutdown()
    assert calls == 100
    assert worker.worker_state is WorkerState.STOPPED


def test_a_generator_or_sync_function_is_still_refused() -> None:
    def sync() -> None:
        pass

    async def agen() -> Any:
        yield 1

    for function in (sync, agen):
        with pytest.raises(TypeError, match="run_function"):
            fluid.WorkerFunction(function)  # type: ignore[arg-type]


# ------------------------------------ who waits on a run: stop and end, held


async def test_stop_and_end_waiters_of_a_run_are_released_each_at_its_moment() -> None:
    gate = asyncio.Event()
    woke: list[str] = []

    class Closing(fluid.Worker):
        async def run(self) -> None:
            helper = asyncio.create_task(self.helper())
            await self.stop_requested()
            woke.append("stop")
            await gate.wait()  # a slow close: the end comes later than the stop
            await helper

        async def helper(self) -> None:
            await self.sleep(60)  # a second sleeper of the worker: woken by the stop
            woke.append("helper")

    worker = Closing(name="closing")
    for _ in range(2):  # a second run starts with none of the first's waiters
        gate.clear()
        woke.clear()
        await worker.startup()
        end = asyncio.create_task(worker.wait_for_shutdown())
        stopped = worker.stop_requested()
        await asyncio.sleep(0)
        assert not stopped.done()
        worker.gracefully_stop()
        async with asyncio.timeout(BOUND):
            await stopped
            await wait_until(lambda: sorted(woke) == ["helper", "stop"], BOUND)
        assert not end.done()
        gate.set()
        async with asyncio.timeout(BOUND):
            await end
        assert worker.worker_state is WorkerState.STOPPED


async def test_a_wait_for_the_end_given_up_leaves_the_others_to_be_released() -> None:
    worker = Idle(name="idle")
    await worker.startup()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await worker.wait_for_shutdown()
    kept = asyncio.create_task(worker.wait_for_shutdown())
    stop = worker.stop_requested()
    await asyncio.sleep(0)
    await worker.shutdown()
    async with asyncio.timeout(BOUND):
        await kept
    assert stop.done()
    assert worker.worker_state is WorkerState.STOPPED


WAITERS = "_waiters"
"""The attribute name a user's worker keeps its futures under (asyncio's Lock, Event,
Condition and Semaphore use it too); spelled through getattr so that the type checker
does not see the clash this test is about."""


class Batcher(fluid.Worker):
    """A user's worker that keeps its own ``self._waiters`` list of futures."""

    def __init__(self) -> None:
        super().__init__(name="batcher")
        setattr(self, WAITERS, [])

    def waiters(self) -> list[asyncio.Future[int]]:
        waiters: list[asyncio.Future[int]] = getattr(self, WAITERS)
        return waiters

    async def submit(self) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters().append(future)
        return await future

    async def run(self) -> None:
        while self.is_running():
            await self.sleep(0.001)
            waiters = self.waiters()
            setattr(self, WAITERS, [])
            for i, future in enumerate(waiters):
                future.set_result(i)


async def test_a_subclass_keeping_its_own_waiters_attribute_runs_and_stops() -> None:
    worker = Batcher()
    await worker.startup()
    end = asyncio.create_task(worker.wait_for_shutdown())
    async with asyncio.timeout(BOUND):
        assert sorted(await asyncio.gather(worker.submit(), worker.submit())) == [0, 1]
    await worker.shutdown()
    async with asyncio.timeout(BOUND):
        await end
    assert worker.worker_state is WorkerState.STOPPED


# ------------------------------------------- a task factory that fails: held


class Refusing:
    """A task factory that refuses the coroutines of one worker class, as a buggy one might."""

    def __init__(self, refused: str) -> None:
        self.refused = refused

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        frame = getattr(coro, "cr_frame", None)
        worker = None if frame is None else frame.f_locals.get("self")
        if isinstance(worker, fluid.Worker) and worker.worker_name == self.refused:
            raise RuntimeError(f"no task for {self.refused}")
        return asyncio.Task(coro, loop=loop, **kwargs)  # context=, if given


class Logged(Idle):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name=name)
        self.log = log

    async def on_startup(self) -> None:
        self.log.append(f"open:{self.worker_name}")

    async def on_shutdown(self) -> None:
        self.log.append(f"close:{self.worker_name}")

    def after_shutdown(self, reason: str, code: int = 0) -> None:
        self.log.append(f"after:{self.worker_name}:{reason}")


async def test_a_task_factory_that_fails_ends_the_start_and_the_worker_can_start_again() -> None:
    log: list[str] = []
    worker = Logged("w", log)
    heard = kinds_of(worker)
    with task_factory(Refusing("w")), pytest.raises(RuntimeError, match="no task for w"):
        async with asyncio.timeout(BOUND):
            await worker.startup()
    gc.collect()  # a _main() never awaited would warn here (warnings are errors)
    assert worker.worker_state is WorkerState.STOPPED
    assert log == ["open:w", "close:w", "after:w:failed: RuntimeError: no task for w"]
    assert [kind for kind, _ in heard] == ["crashed"]
    async with asyncio.timeout(BOUND):
        await worker.shutdown()  # nothing to raise: startup() reported the error
        async with worker:
            assert worker.is_running()
    assert worker.worker_state is WorkerState.STOPPED


async def test_a_tree_whose_child_gets_no_task_undoes_its_start() -> None:
    log: list[str] = []
    first, second = Logged("a", log), Logged("b", log)
    tree = fluid.Workers(first, second, name="tree")
    with task_factory(Refusing("b")), pytest.raises(RuntimeError, match="no task for b"):
        async with asyncio.timeout(BOUND):
            await tree.startup()
    gc.collect()
    assert tree.worker_state is WorkerState.STOPPED
    assert first.is_stopped()
    assert second.is_stopped()
    assert log[:4] == ["open:a", "open:b", "close:b", "after:b:failed: RuntimeError: no task for b"]
    assert "close:a" in log
    assert not live_tasks()
