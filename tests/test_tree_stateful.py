"""A stateful test of trees: membership changes racing a tree's start, run and stop.

The world, built once per example: one tree (unsupervised, or supervising
with one of the three strategies and a restart intensity that gives up at
once or never), five candidate children, some of them members at the start,
on asyncio's loop or on the shuffling loop (``tests/_interleave.py``) under
a seed Hypothesis draws (so a failure replays and shrinks with it).
The children honour stop requests; each can crash on demand, and hold its
``on_startup`` or ``on_shutdown`` at a gate the test opens. The tree can
hold its own ``on_startup`` the same way.

Rules add, remove, stop (``stop_workers``), start (``start_workers``) and
crash children, restart the tree, and apply one of those (or a tree
``shutdown()``, or a ``startup()`` that must be refused) while the tree is
held *starting* (at its own gate or a child's) or held *stopping* (at a
child's ``on_shutdown``), opening the gate before or after the operation. Every operation runs on
the example's own loop under a watchdog: a hang fails at once. After every
rule the world settles (no worker between states, no operation pending) and
these must hold:

* membership: ``tree.children`` is the model's list, in order; members have
  the tree as parent (their path), non-members have none;
* nothing runs unsupervised: a running child is a member of a running tree
  and not held; a running tree runs every member not held;
* errors are kept: an unsupervised tree whose watched child crashed ends
  with that error (``shutdown()`` raises it, also for a crash while it
  stops); a supervised tree restarts it or gives up with
  ``TooManyRestarts``, and never raises a child's crash (one while it stops
  is logged); every crash is logged with its exception;
* after teardown no worker runs and no task is left on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fluid

from ._interleave import ShufflingLoop

T = TypeVar("T")

NAMES = ("c0", "c1", "c2", "c3", "c4")
GRACE = 0.05
"""Children's grace period: a child held in ``on_startup`` is forced after it."""
TREE_GRACE = 0.2
"""Ample for the children (they honour stops): the tree is forced only when held."""
BOUND = 10.0
"""Seconds any one operation may take; a bug here is a hang, not a slow run."""
NO_WAIT = fluid.Backoff(initial=0, jitter=0)
"""Restarts due at once: settling is a matter of loop turns, never of timers."""

Op = Literal["add", "remove", "stop", "start", "crash", "shutdown_tree", "startup_tree"]
MEMBER_OPS: tuple[Op, ...] = ("add", "remove", "stop", "start", "crash")

pytestmark = pytest.mark.timeout(120)


class Boom(Exception):
    """A crash the test injected."""


class Gate:
    """Holds an ``on_startup`` / ``on_shutdown`` until the test opens it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> None:
        self.entered.set()
        await self.opened.wait()


class Child(fluid.Worker):
    """Runs until asked to stop or told to crash; its hooks can be held at a gate."""

    def __init__(self, name: str) -> None:
        super().__init__(name, GRACE)
        self.start_gate: Gate | None = None
        self.stop_gate: Gate | None = None
        self.end: asyncio.Future[Boom] | None = None

    async def on_startup(self) -> None:
        self.end = asyncio.get_running_loop().create_future()
        gate, self.start_gate = self.start_gate, None
        if gate is not None:
            await gate()

    async def run(self) -> None:
        assert self.end is not None
        stop = asyncio.ensure_future(self.sleep(3600))  # ends at once on a stop request
        try:
            futures: list[asyncio.Future[Any]] = [self.end, stop]
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
        if self.end.done():
            raise self.end.result()

    async def on_shutdown(self) -> None:
        gate, self.stop_gate = self.stop_gate, None
        if gate is not None:
            await gate()

    def crashable(self) -> bool:
        return self.is_running() and self.end is not None and not self.end.done()

    def crash(self, error: Boom) -> None:
        assert self.end is not None
        self.end.set_result(error)


class Tree(fluid.Workers):
    """A tree whose own ``on_startup`` can be held at a gate."""

    start_gate: Gate | None = None

    async def on_startup(self) -> None:
        gate, self.start_gate = self.start_gate, None
        if gate is not None:
            await gate()


class KeptErrors(logging.Handler):
    """Every error fluid logged with its exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


def running(worker: fluid.Worker) -> bool:
    return worker.has_started() and not worker.is_stopped()


STRESS = bool(os.environ.get("FLUID_STRESS_SECONDS"))
"""Under ``make stress`` (FLUID_STRESS_SECONDS set): fresh random examples, ten times as many."""


@settings(
    max_examples=400 if STRESS else 40,
    stateful_step_count=12,
    deadline=None,
    derandomize=not STRESS,  # the same examples on every CI run: never a flake
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
class Trees(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pool = {name: Child(name) for name in NAMES}
        self.tree = Tree(name="tree", stopping_grace_period=TREE_GRACE)
        self.members: list[str] = []
        self.held: set[str] = set()
        self.crashes: list[Boom] = []
        self.owed: Boom | None = None
        """A crash the unsupervised tree must end with (its first in this run)."""
        self.serial = 0
        self.kept = KeptErrors()
        logging.getLogger("fluid").addHandler(self.kept)

    # ------------------------------------------------------------ plumbing

    def run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``coro`` on the example's loop; fail if it is still pending after BOUND s."""
        return self.loop.run_until_complete(self._watchdog(coro, what))

    async def _watchdog(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        task = asyncio.get_running_loop().create_task(coro)
        done, _ = await asyncio.wait({task}, timeout=BOUND)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
            raise AssertionError(f"{what} hung: still pending after {BOUND}s")
        return task.result()

    def fingerprint(self) -> tuple[object, ...]:
        workers = [self.tree, *self.pool.values()]
        return (*((w.worker_state, w.restarts) for w in workers), len(self.crashes))

    async def settle(self) -> None:
        """Wait until no worker is between states and nothing changed for many loop turns."""
        deadline = asyncio.get_running_loop().time() + BOUND
        quiet, last = 0, self.fingerprint()
        while quiet < 30:
            assert asyncio.get_running_loop().time() < deadline, "the tree never settled"
            await asyncio.sleep(0 if quiet else 0.001)
            now = self.fingerprint()
            stopping = any(w.is_stopping() for w in [self.tree, *self.pool.values()])
            quiet = 0 if now != last or stopping else quiet + 1
            last = now

    def child(self, name: str) -> Child:
        return self.pool[name]

    # ---------------------------------------------------------- operations

    async def apply(self, op: Op, name: str) -> None:
        """One operation on the tree or its child ``name``; updates the model."""
        tree, child = self.tree, self.child(name)
        if op == "add":
            if name not in self.members and not running(child):
                tree.add_workers(child)
                self.members.append(name)
        elif op == "remove":
            if name in self.members:
                self.members.remove(name)
                self.held.discard(name)
                with contextlib.suppress(Boom):  # the error it ended with, if it crashed
                    assert await tree.remove_workers(name) == [child]
        elif op == "stop":
            if name in self.members:
                self.held.add(name)
                with contextlib.suppress(Boom):
                    assert await tree.stop_workers(name) == [child]
        elif op == "start":
            if name in self.members:
                self.held.discard(name)
                await tree.start_workers(name)
        elif op == "crash":
            if child.crashable():
                self.serial += 1
                error = Boom(f"{name} crash {self.serial}")
                self.crashes.append(error)
                watched = name in self.members and name not in self.held
                # Unsupervised, the tree ends with its first child's error, also
                # while it stops. Supervised, a child's crash is never the tree's
                # error (it is restarted, or logged once the tree stops).
                live = tree.is_running() or tree.is_stopping()
                if watched and live and tree.strategy is None:
                    self.owed = self.owed or error
                child.crash(error)
        elif op == "shutdown_tree":
            await self.shutdown_tree()
        elif op == "startup_tree":  # held starting or stopping: refused, and nothing changes
            with pytest.raises(fluid.WorkerStartError):
                await tree.startup()

    async def shutdown_tree(self) -> None:
        """Shut the tree down; check the error it raises (again, once stopped) is the one owed."""
        error: BaseException | None = None
        try:
            await self.tree.shutdown()
        except (Boom, fluid.TooManyRestarts) as exc:
            error = exc
        if isinstance(error, fluid.TooManyRestarts):
            assert self.tree.strategy is not None, "an unsupervised tree gave up restarting"
        else:
            assert error is self.owed, f"the tree raised {error!r}, owed {self.owed!r}"

    async def startup_tree(self) -> None:
        self.held.clear()  # a new run starts every child afresh
        self.owed = None
        with contextlib.suppress(fluid.WorkerStateError):  # shut down, and forced, while starting
            await self.tree.startup()

    # --------------------------------------------------------------- rules

    @initialize(
        strategy=st.sampled_from([None, "one_for_one", "one_for_all", "rest_for_one"]),
        max_restarts=st.sampled_from([0, 1000]),
        initial=st.integers(0, len(NAMES)),
        start=st.booleans(),
        shuffle=st.none() | st.integers(0, 2**32 - 1),
    )
    def build(
        self,
        strategy: fluid.Strategy | None,
        max_restarts: int,
        initial: int,
        start: bool,
        shuffle: int | None,
    ) -> None:
        if shuffle is not None:  # ready callbacks interleaved at random, under this seed
            self.loop.close()
            self.loop = ShufflingLoop(shuffle)
        self.tree = Tree(
            name="tree",
            stopping_grace_period=TREE_GRACE,
            strategy=strategy,
            max_restarts=max_restarts,
            backoff=NO_WAIT,
        )
        self.tree.add_workers(*(self.pool[n] for n in NAMES[:initial]))
        self.members = list(NAMES[:initial])
        if start:
            self.run(self.startup_tree(), "startup()")

    @rule(op=st.sampled_from(MEMBER_OPS), name=st.sampled_from(NAMES))
    def member_op(self, op: Op, name: str) -> None:
        self.run(self.apply(op, name), f"{op} {name}")
        self.run(self.settle(), "settle")

    @rule()
    def restart_tree(self) -> None:
        self.run(self.shutdown_tree(), "shutdown()")
        self.run(self.startup_tree(), "startup()")
        self.run(self.settle(), "settle")

    @rule(
        at=st.sampled_from(("tree", *NAMES)),
        op=st.sampled_from((*MEMBER_OPS, "shutdown_tree", "startup_tree")),
        name=st.sampled_from(NAMES),
        open_first=st.booleans(),
    )
    def while_starting(self, at: str, op: Op, name: str, open_first: bool) -> None:
        """Hold the tree starting (at its own gate or a member's), apply ``op``, go on."""
        self.run(self.shutdown_tree(), "shutdown()")
        if at != "tree" and (at not in self.members or at in self.held):
            at = "tree"  # the tree would not start that child: hold the tree itself
        gate = Gate()
        holder: Tree | Child = self.tree if at == "tree" else self.child(at)
        holder.start_gate = gate
        self.run(self.while_held(self.startup_tree(), gate, op, name, open_first), "starting")

    @rule(
        at=st.sampled_from(NAMES),
        op=st.sampled_from((*MEMBER_OPS, "startup_tree")),
        name=st.sampled_from(NAMES),
        open_first=st.booleans(),
    )
    def while_stopping(self, at: str, op: Op, name: str, open_first: bool) -> None:
        """Hold the tree stopping at a running member's ``on_shutdown``, apply ``op``, go on."""
        holder = self.child(at)
        if not self.tree.is_running() or at not in self.members or not holder.is_running():
            return
        gate = Gate()
        holder.stop_gate = gate
        self.run(self.while_held(self.shutdown_tree(), gate, op, name, open_first), "stopping")

    async def while_held(
        self, transition: Coroutine[Any, Any, None], gate: Gate, op: Op, name: str, open_first: bool
    ) -> None:
        moving = asyncio.ensure_future(transition)
        entered = asyncio.ensure_future(gate.entered.wait())
        await asyncio.wait([moving, entered], return_when=asyncio.FIRST_COMPLETED)
        entered.cancel()
        operation = asyncio.ensure_future(self.apply(op, name))
        if open_first:
            gate.opened.set()
            await asyncio.gather(moving, operation)
        else:  # the operation first: one that waits for the held worker forces it
            await operation
            gate.opened.set()
            await moving
        await self.settle()

    # ----------------------------------------------------------- invariants

    @invariant()
    def membership_is_consistent(self) -> None:
        tree = self.tree
        assert [c.worker_name for c in tree.children] == self.members
        for name, child in self.pool.items():
            if name in self.members:
                assert child.worker_path == f"tree/{name}"
                assert tree.find(name) == [child]
            else:
                assert child.worker_path == name
                assert tree.find(name) == []

    @invariant()
    def nothing_runs_unsupervised(self) -> None:
        tree = self.tree
        for name, child in self.pool.items():
            if running(child):
                assert name in self.members, f"{name} runs outside the tree"
                assert tree.is_running(), f"{name} runs in a tree that is {tree.worker_state}"
                assert name not in self.held, f"{name} runs though stopped on request"
            else:
                idle = not tree.is_running() or name not in self.members or name in self.held
                assert idle, f"{name} is {child.worker_state} in a running tree"

    @invariant()
    def errors_are_kept(self) -> None:
        if self.owed is not None:
            assert not self.tree.is_running(), f"the tree runs on after {self.owed!r}"
        for error in self.crashes:
            assert any(e is error for e in self.kept.errors), f"{error!r} was never logged"

    def teardown(self) -> None:
        try:
            self.run(self.shutdown_tree(), "shutdown() at teardown")
            for child in self.pool.values():
                assert child.is_stopped() or not child.has_started(), f"{child!r} left running"
            left = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            assert not left, f"tasks left running: {left}"
        finally:
            logging.getLogger("fluid").removeHandler(self.kept)
            for child in self.pool.values():  # on a failure: leave nothing for the next test
                child.force_stop()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.sleep(0.01))
            self.loop.close()


TestTrees = Trees.TestCase
