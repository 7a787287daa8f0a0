"""A stateful test of the worker lifecycle: random sequences of operations on a small world.

The world, built once per example by ``build``:

* standalone leaves: two queue consumers (``on_error="log"`` and ``"stop"``), a
  ``WorkerFunction`` ticking with a heartbeat and crashing on demand, and a
  stubborn worker that ignores stop requests (only a cancel ends it) and
  crashes on demand;
* a ``Workers`` tree holding one of each (consumer, ticker, stubborn), in any
  order, stopping them one by one or together (``concurrent_stop``), with a
  grace period that is either ample (its children always stop within it) or
  short (the tree is forced while stopping its children).

Messages are ``ok`` (handled), ``fail`` (the handler raises: logged, or a crash
of a consumer with ``on_error="stop"``) or ``stuck`` (the handler never
returns: only a forced stop gets the consumer past it).

Hypothesis rules are sync, so every operation runs on a per-example event loop
with ``loop.run_until_complete``, inside a watchdog task: an operation still
pending past its bound (the grace periods involved plus a margin) is a hang.
After every step the world is left to settle (every consumer idle or stuck on
a ``stuck`` message, every requested stop or crash carried out) and the
invariants are checked; see ``world_is_consistent``.

Every state a worker takes is recorded, by a property that shadows the
``_state`` slot of ``fluid.Worker`` in the test subclasses, so even a
transition that lasts less than an event-loop turn is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fluid
from fluid import WorkerState

T = TypeVar("T")

# A passing run takes ~10 s; shrinking a failure replays examples in real time,
# so give hypothesis room to report a minimal one rather than a timeout.
pytestmark = pytest.mark.timeout(180)

INIT = WorkerState.INIT
RUNNING = WorkerState.RUNNING
STOPPING = WorkerState.STOPPING
STOPPED = WorkerState.STOPPED
FORCE_STOPPED = WorkerState.FORCE_STOPPED
LIVE = (RUNNING, STOPPING)

GRACES = (0.02, 0.05)
"""Stopping grace periods of the leaves."""
HEARTBEATS = (0.005, 0.005, 0.1)
"""Heartbeats of the tickers: 0.1 is longer than any grace period, so a ticker
that did not wake at once on a stop request would be forced."""
SHORT_TREE_GRACE = 0.01
MARGIN = 0.5
"""Seconds allowed on top of the grace periods before an operation is a hang."""

# the slot of fluid.Worker that holds the state, shadowed by Probe._state below
_STATE_SLOT: Any = vars(fluid.Worker)["_state"]

Kind = Literal["ok", "fail", "stuck"]
KINDS: tuple[Kind, ...] = ("ok", "ok", "ok", "fail", "stuck")


@dataclass(frozen=True)
class Msg:
    """A message: a serial number, unique per example, and what its handler does."""

    n: int
    kind: Kind


class Boom(Exception):
    """The error test workers raise on demand."""


# ---------------------------------------------------------------- the test workers


class Probe(fluid.Worker):
    """Base of the test workers: records every state and what its hooks saw.

    Subclasses call ``init_probe()`` before ``fluid.Worker.__init__`` (which
    sets the first state).
    """

    shutdown_turns = 3
    """Loop turns ``on_shutdown`` takes after a forced stop (a cleanup cut short must
    redo some work), so a worker still cancelling shows up as not stopped yet."""

    def init_probe(self) -> None:
        self.trace: list[WorkerState] = []
        """Every state the worker took, in order."""
        self.startups = 0
        """Completed ``on_startup`` calls."""
        self.shutdowns = 0
        """``on_shutdown`` calls."""
        self.stop_asked = False
        """A rule asked this run to stop (reset by ``on_startup``)."""
        self.run_errors: list[BaseException] = []
        """Errors raised in this run that must end it (reset by ``on_startup``)."""
        self.violations: list[str] = []
        """What the hooks saw that they should not have."""
        self.ran = False
        """This run's ``run`` began (reset by ``on_startup``)."""
        self.forced = False
        """A cancel ended this run (reset by ``on_startup``)."""

    @property
    def _state(self) -> WorkerState:
        state: WorkerState = _STATE_SLOT.__get__(self, type(self))
        return state

    @_state.setter
    def _state(self, new: WorkerState) -> None:
        self.trace.append(new)
        _STATE_SLOT.__set__(self, new)

    def observe(self, where: str, allowed: tuple[WorkerState, ...]) -> None:
        if self.worker_state not in allowed:
            self.violations.append(f"{where} ran in state {self.worker_state}")

    async def on_startup(self) -> None:
        await super().on_startup()
        self.observe("on_startup", (RUNNING,))
        self.stop_asked = False
        self.ran = self.forced = False
        self.run_errors.clear()
        await asyncio.sleep(0)  # other tasks run meanwhile (siblings in a tree)
        self.startups += 1

    async def on_shutdown(self) -> None:
        self.observe("on_shutdown", LIVE)
        self.shutdowns += 1
        for _ in range(self.shutdown_turns if self.forced else 0):
            await asyncio.sleep(0)
        await super().on_shutdown()

    async def watch(self, run: Coroutine[Any, Any, None]) -> None:
        """Await the worker's ``run``, noting whether a cancel ended it."""
        self.ran = True
        try:
            await run
        except asyncio.CancelledError:
            self.forced = True
            raise

    def crash_error(self) -> Boom:
        error = Boom(f"{self.worker_name} crashed on demand")
        self.run_errors.append(error)
        return error


class Consumer(Probe, fluid.QueueConsumerWorker[Msg]):
    """A queue consumer whose handler records what it completed, in order."""

    def __init__(self, name: str, grace: float, on_error: Literal["log", "stop"], drain: bool):
        self.init_probe()
        self.policy = on_error
        self.drains = drain
        self.done: list[Msg] = []
        """Messages whose handler completed (returned or raised), in order."""
        self.current: Msg | None = None
        """The message being handled."""
        self.cancelled = 0
        """Handlers cancelled in this run (a forced stop)."""
        super().__init__(
            self.handle, name=name, stopping_grace_period=grace, on_error=on_error, drain=drain
        )

    async def on_startup(self) -> None:
        await super().on_startup()
        self.cancelled = 0

    async def run(self) -> None:
        await self.watch(super().run())

    async def handle(self, msg: Msg) -> None:
        self.observe("a handler", LIVE)
        self.current = msg
        try:
            await asyncio.sleep(0)
            if msg.kind == "stuck":
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.current = None
        self.done.append(msg)
        if msg.kind == "fail":
            if self.policy == "stop":
                raise self.crash_error()
            raise Boom(f"{self.worker_name} failed to handle {msg}")

    def stuck(self) -> bool:
        return self.current is not None and self.current.kind == "stuck"


class Ticker(Probe, fluid.WorkerFunction):
    """A ``WorkerFunction`` that raises on its next iteration once armed."""

    def __init__(self, name: str, grace: float, heartbeat: float) -> None:
        self.init_probe()
        self.armed = False
        super().__init__(self.tick, heartbeat=heartbeat, name=name, stopping_grace_period=grace)

    async def run(self) -> None:
        await self.watch(super().run())

    async def tick(self) -> None:
        self.observe("the function", LIVE)
        if self.armed:
            self.armed = False
            raise self.crash_error()

    def arm(self) -> None:
        self.armed = True


class Stubborn(Probe):
    """Ignores stop requests (only a cancel ends it); raises at once when armed."""

    def __init__(self, name: str, grace: float) -> None:
        self.init_probe()
        self.armed = False
        self.poke: asyncio.Event | None = None
        super().__init__(name, grace)

    async def run(self) -> None:
        await self.watch(self.idle())

    async def idle(self) -> None:
        poke = self.poke = asyncio.Event()
        while True:
            if self.armed:
                self.armed = False
                raise self.crash_error()
            await poke.wait()
            poke.clear()

    def arm(self) -> None:
        self.armed = True
        if self.poke is not None:
            self.poke.set()


class Tree(Probe, fluid.Workers):
    """A ``Workers`` tree of probes."""

    shutdown_turns = 0  # a tree has nothing of its own to close: it is done before its children

    def __init__(self, children: list[Probe], name: str, grace: float, together: bool) -> None:
        self.init_probe()
        self.probes = list(children)
        super().__init__(
            *children, name=name, stopping_grace_period=grace, concurrent_stop=together
        )

    async def run(self) -> None:
        await self.watch(super().run())


# ------------------------------------------------------------------------ helpers

Q_LOG, Q_STOP, TICKER, STUBBORN = "q_log", "q_stop", "ticker", "stubborn"
T_QUEUE, T_TICKER, T_STUBBORN, TREE = "t_queue", "t_ticker", "t_stubborn", "tree"
LEAVES = (Q_LOG, Q_STOP, TICKER, STUBBORN)
CHILDREN = (T_QUEUE, T_TICKER, T_STUBBORN)
ALL = (*LEAVES, *CHILDREN, TREE)
CONSUMERS = (Q_LOG, Q_STOP, T_QUEUE)
CRASHABLE = (Q_STOP, TICKER, STUBBORN, T_QUEUE, T_TICKER, T_STUBBORN)

names = st.sampled_from(ALL)
some_names = st.lists(names, min_size=1, max_size=3, unique=True)


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def in_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a new thread while the loop keeps running; re-raise its error."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)
        finally:
            loop.call_soon_threadsafe(_release, finished)

    thread = threading.Thread(target=target, name="stateful-test-thread")
    thread.start()
    try:
        await finished
    finally:
        thread.join()
    if errors:
        raise errors[0]


async def outcome(operation: Callable[[], Coroutine[Any, Any, None]]) -> Exception | None:
    """The error ``operation()`` raised, or None."""
    try:
        await operation()
    except Exception as exc:
        return exc
    return None


def live_fluid_tasks(loop: asyncio.AbstractEventLoop, names: Iterable[str]) -> Counter[str]:
    """How many of the loop's tasks not done each worker of ``names`` has.

    A worker's task is named by its worker's name, its helpers ``fluid:NAME#i``.
    """
    wanted = set(names)
    found = (
        task.get_name().removeprefix("fluid:").split("#")[0]
        for task in asyncio.all_tasks(loop)
        if not task.done()
    )
    return Counter(name for name in found if name in wanted)


def test_can_become_is_the_documented_diagram() -> None:
    """The transition table the machine checks against is the one of the docs."""
    legal = {
        INIT: {RUNNING},
        RUNNING: {STOPPING, STOPPED, FORCE_STOPPED},
        STOPPING: {STOPPED, FORCE_STOPPED},
        STOPPED: {RUNNING},
        FORCE_STOPPED: {RUNNING},
    }
    for old in WorkerState:
        for new in WorkerState:
            assert old.can_become(new) is (new in legal[old]), (old, new)


# ---------------------------------------------------------------------- the machine


@settings(
    # more under `make stress`'s scenarios' setting, as test_tree_stateful
    max_examples=400 if os.environ.get("FLUID_STRESS_SECONDS") else 40,
    stateful_step_count=25,
    deadline=None,
    # the explain phase traces every line (Python < 3.12): far too slow for the timings here
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world: dict[str, Probe] = {}
        self.consumers: dict[str, Consumer] = {}
        self.tree: Tree | None = None
        self.short_tree = False
        self.serial = 0
        # the books of each consumer
        self.pending: dict[str, list[Msg]] = {}
        """Messages sent and neither completed nor taken back, in send order."""
        self.seen: dict[str, int] = {}
        """How much of ``consumer.done`` the books already accounted for."""
        self.sent: Counter[str] = Counter()
        self.retrieved: Counter[str] = Counter()
        self.tree_error: tuple[int, BaseException | None] | None = None
        """(tree run, error) the tree raised first in that run."""
        self.healthy = True
        """False once a step failed: teardown then only cleans up."""

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        self.healthy = False
        yield
        self.healthy = True

    def run(self, coro: Coroutine[Any, Any, T], bound: float, what: str) -> T:
        """Run ``coro`` on the example's loop; fail if it is still pending after ``bound`` s."""
        return self.loop.run_until_complete(self._watchdog(coro, bound, what))

    async def _watchdog(self, coro: Coroutine[Any, Any, T], bound: float, what: str) -> T:
        task = asyncio.get_running_loop().create_task(coro, name="stateful-test-operation")
        done, _ = await asyncio.wait({task}, timeout=bound)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
            raise AssertionError(f"{what} hung: still pending after {bound:.2f}s")
        return task.result()

    def family(self, worker: Probe) -> list[Probe]:
        """The worker and, for the tree, its children."""
        if isinstance(worker, Tree):
            return [worker, *worker.probes]
        return [worker]

    def parent(self, worker: Probe) -> Tree | None:
        tree = self.tree
        return tree if tree is not None and worker in tree.probes else None

    def bound(self, worker: Probe) -> float:
        """How long ``shutdown()`` of the worker may take."""
        return worker.stopping_grace_period + MARGIN

    def settle_bound(self) -> float:
        leaves = [w for w in self.world.values() if not isinstance(w, Tree)]
        return (
            max(HEARTBEATS)
            + sum(w.stopping_grace_period for w in leaves)
            + (self.tree.stopping_grace_period if self.tree else 0)
            + MARGIN
        )

    # ------------------------------------------------------------------ the world

    @initialize(
        graces=st.lists(st.sampled_from(GRACES), min_size=7, max_size=7),
        drains=st.lists(st.booleans(), min_size=3, max_size=3),
        heartbeats=st.lists(st.sampled_from(HEARTBEATS), min_size=2, max_size=2),
        order=st.permutations(CHILDREN),
        short_tree=st.booleans(),
        concurrent_stop=st.booleans(),
        autostart=st.booleans(),
    )
    def build(
        self,
        graces: list[float],
        drains: list[bool],
        heartbeats: list[float],
        order: list[str],
        short_tree: bool,
        concurrent_stop: bool,
        autostart: bool,
    ) -> None:
        q_log = Consumer(Q_LOG, graces[0], "log", drains[0])
        q_stop = Consumer(Q_STOP, graces[1], "stop", drains[1])
        t_queue = Consumer(T_QUEUE, graces[2], "stop", drains[2])
        leaves: list[Probe] = [
            q_log,
            q_stop,
            Ticker(TICKER, graces[3], heartbeats[0]),
            Stubborn(STUBBORN, graces[4]),
        ]
        children: dict[str, Probe] = {
            T_QUEUE: t_queue,
            T_TICKER: Ticker(T_TICKER, graces[5], heartbeats[1]),
            T_STUBBORN: Stubborn(T_STUBBORN, graces[6]),
        }
        self.short_tree = short_tree
        ample = sum(c.stopping_grace_period for c in children.values()) + MARGIN
        self.tree = Tree(
            [children[name] for name in order],
            TREE,
            SHORT_TREE_GRACE if short_tree else ample,
            concurrent_stop,
        )
        for worker in [*leaves, *children.values(), self.tree]:
            self.world[worker.worker_name] = worker
        self.consumers = {c.worker_name: c for c in (q_log, q_stop, t_queue)}
        for name in self.consumers:
            self.pending[name] = []
            self.seen[name] = 0
        if autostart:
            with self.step():
                for worker in [*leaves, self.tree]:
                    self.run(self.start(worker), MARGIN, f"startup() of {worker.worker_name}")

    def send_all(self, consumer: Consumer, kinds: list[Kind]) -> list[Msg]:
        """Book messages of these kinds as sent to ``consumer``; the caller sends them."""
        messages = []
        for kind in kinds:
            self.serial += 1
            messages.append(Msg(self.serial, kind))
        self.pending[consumer.worker_name].extend(messages)
        self.sent[consumer.worker_name] += len(messages)
        return messages

    # --------------------------------------------------------------------- rules

    @rule(name=st.sampled_from((*ALL, TREE, TREE)))
    def startup(self, name: str) -> None:
        """Start a leaf or the tree; starting a running one is refused."""
        with self.step():
            worker = self.world[name]
            if worker.worker_state not in LIVE and self.parent(worker) is not None:
                return  # a stopped child is started by its tree only
            self.run(self.start(worker), MARGIN, f"startup() of {name}")

    async def start(self, worker: Probe) -> None:
        name = worker.worker_name
        before = worker.worker_state
        traces = [len(w.trace) for w in self.family(worker)]
        error = await outcome(worker.startup)
        if before in LIVE:
            assert isinstance(error, fluid.WorkerStartError), (
                f"startup() of {before} {name} raised {error!r}, not WorkerStartError"
            )
            assert name in str(error), f"unreadable WorkerStartError: {error}"
            assert [len(w.trace) for w in self.family(worker)] == traces, (
                f"a refused startup() of {name} changed a state"
            )
            return
        assert error is None, f"startup() of {before} {name} raised {error!r}"
        assert worker.worker_state is RUNNING, f"startup() of {name} left it {worker.worker_state}"
        for member in self.family(worker):
            if member.run_errors and member is not worker:
                continue  # a child armed to crash may have crashed while its siblings started
            # startup() returns once every member runs and its on_startup completed
            assert member.worker_state is RUNNING, (
                f"startup() of {name} returned with {member.worker_name} {member.worker_state}"
            )
            assert member.startups == member.shutdowns + 1, (
                f"startup() of {name} returned before on_startup of {member.worker_name} completed"
            )

    @rule(chosen=some_names, from_thread=st.booleans())
    def gracefully_stop(self, chosen: list[str], from_thread: bool) -> None:
        """Ask workers to stop, from the loop or from another thread (twice: idempotent)."""
        with self.step():
            workers = [self.world[name] for name in chosen]
            for worker in workers:
                if worker.worker_state is RUNNING:
                    worker.stop_asked = True

            def stop_all() -> None:
                for worker in workers:
                    worker.gracefully_stop()
                    worker.gracefully_stop()

            async def go() -> None:
                if from_thread:
                    await in_thread(stop_all)
                    return
                before = {w.worker_name: w.worker_state for w in workers}
                stop_all()
                for worker in workers:
                    old = before[worker.worker_name]
                    expected = STOPPING if old is RUNNING else old
                    assert worker.worker_state is expected, (
                        f"gracefully_stop() of {old} {worker.worker_name} "
                        f"left it {worker.worker_state}"
                    )

            self.run(go(), MARGIN, f"gracefully_stop() of {chosen}")

    @rule(chosen=some_names, together=st.booleans())
    def shutdown(self, chosen: list[str], together: bool) -> None:
        """Shut workers down one after the other in one go, or concurrently."""
        with self.step():
            workers = [self.world[name] for name in chosen]
            for worker in workers:
                if worker.worker_state in LIVE:
                    worker.stop_asked = True
            bound = sum(self.bound(w) for w in workers)
            self.run(self.shutdown_all(workers, together), bound, f"shutdown() of {chosen}")

    async def shutdown_all(self, workers: list[Probe], together: bool) -> None:
        async def one(worker: Probe) -> None:
            live = {w.worker_name for w in self.family(worker) if w.worker_state in LIVE}
            error = await outcome(worker.shutdown)
            self.check_after_shutdown(worker, error, live)

        if together:
            await asyncio.gather(*(one(w) for w in workers))
        else:
            for worker in workers:
                await one(worker)

    @rule(
        name=st.sampled_from(CONSUMERS),
        kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=5),
        from_thread=st.booleans(),
        then=st.sampled_from((None, "gracefully_stop", "shutdown")),
        its_tree=st.booleans(),
    )
    def send(
        self, name: str, kinds: list[Kind], from_thread: bool, then: str | None, its_tree: bool
    ) -> None:
        """Send messages from the loop or a thread, maybe then stopping at once the
        consumer, or its tree."""
        with self.step():
            consumer = self.consumers[name]
            messages = self.send_all(consumer, kinds)
            target: Probe = (its_tree and self.parent(consumer)) or consumer

            def send_all() -> None:
                for message in messages:
                    consumer.send(message)

            async def go() -> None:
                if from_thread:
                    await in_thread(send_all)
                else:
                    send_all()
                if then is not None and target.worker_state in LIVE:
                    target.stop_asked = True
                if then == "gracefully_stop":
                    target.gracefully_stop()
                elif then == "shutdown":
                    await self.shutdown_all([target], together=False)

            what = f"send() to {name} then {then} of {target.worker_name}"
            self.run(go(), self.bound(target), what)

    @rule(
        chosen=st.lists(st.sampled_from(CRASHABLE), min_size=1, max_size=3, unique=True),
        then_shutdown=st.booleans(),
    )
    def crash(self, chosen: list[str], then_shutdown: bool) -> None:
        """Make workers crash in one go (arm them, or send a consumer a poison), maybe
        shutting them down (their tree for children) at once: a crash during a stop."""
        with self.step():
            workers = [self.world[name] for name in chosen]
            roots = list(dict.fromkeys(self.parent(w) or w for w in workers))

            async def go() -> None:
                for worker in workers:
                    if isinstance(worker, Consumer):
                        worker.send(self.send_all(worker, ["fail"])[0])
                    else:
                        assert isinstance(worker, Ticker | Stubborn)
                        worker.arm()
                if then_shutdown:
                    for root in roots:
                        if root.worker_state in LIVE:
                            root.stop_asked = True
                    await self.shutdown_all(roots, together=False)

            bound = sum(self.bound(w) for w in roots) if then_shutdown else MARGIN
            self.run(go(), bound, f"crash of {chosen}")

    @rule(order=st.permutations(ALL), together=st.booleans())
    def shutdown_everything(self, order: list[str], together: bool) -> None:
        """Shut every worker down, children included, in any order: an application exit."""
        with self.step():
            workers = [self.world[name] for name in order]
            for worker in workers:
                if worker.worker_state in LIVE:
                    worker.stop_asked = True
            bound = sum(self.bound(w) for w in workers)
            self.run(self.shutdown_all(workers, together), bound, "shutdown of everything")

    @rule()
    def start_everything(self) -> None:
        """Start the tree and every leaf (those running refuse)."""
        with self.step():
            for worker in self.world.values():
                if self.parent(worker) is None:
                    self.run(self.start(worker), MARGIN, f"startup() of {worker.worker_name}")

    @rule(name=st.sampled_from(CRASHABLE))
    def crash_and_wait(self, name: str) -> None:
        """Crash a live worker and wait for it (and its tree): they raise its error."""
        with self.step():
            worker = self.world[name]
            if worker.worker_state not in LIVE:
                return
            if isinstance(worker, Consumer) and (worker.policy == "log" or worker.stuck()):
                return  # a poison would not end it
            if isinstance(worker, Consumer):
                worker.send(self.send_all(worker, ["fail"])[0])
            else:
                assert isinstance(worker, Ticker | Stubborn)
                worker.arm()
            wait = MARGIN + (worker.heartbeat if isinstance(worker, Ticker) else 0)
            error = self.run(outcome(worker.wait_for_shutdown), wait, f"{name} crashing")
            assert worker.run_errors, f"{name} did not crash"
            assert error is worker.run_errors[0], (
                f"wait_for_shutdown() of crashed {name} raised {error!r}, "
                f"not its error {worker.run_errors[0]!r}"
            )
            assert worker.worker_state is STOPPED, f"crashed {name} is {worker.worker_state}"
            tree = self.parent(worker)
            if tree is not None:
                tree_error = self.run(
                    outcome(tree.wait_for_shutdown), self.bound(tree), f"{TREE} after a crash"
                )
                assert tree.is_stopped(), f"{TREE} is {tree.worker_state} after {name} crashed"
                assert tree_error is worker.run_errors[0], (
                    f"{TREE} raised {tree_error!r}, not the error of its crashed child {name}"
                )

    @rule(name=st.sampled_from(CONSUMERS))
    def take_undelivered(self, name: str) -> None:
        """Take back what is queued: exactly what was sent and not handled, oldest first."""
        with self.step():
            consumer = self.consumers[name]
            pending = self.pending[name]
            in_flight = pending[:1] if consumer.current is not None else []
            taken = consumer.take_undelivered()
            assert taken == pending[len(in_flight) :], (
                f"take_undelivered() of {name} gave {taken}, expected {pending[len(in_flight) :]}"
            )
            self.retrieved[name] += len(taken)
            self.pending[name] = in_flight

    # ---------------------------------------------------------------- invariants

    def busy(self) -> list[str]:
        """Why the world is not quiescent yet: what is still bound to happen."""
        reasons = []
        for name, worker in self.world.items():
            state = worker.worker_state
            if worker.run_errors and not worker.is_stopped():
                reasons.append(f"{name} crashed but is {state}")
            elif isinstance(worker, Consumer):
                if state is RUNNING and not worker.stuck():
                    if worker.queue_size() or worker.current is not None:
                        reasons.append(f"{name} has messages to handle")
                elif state is STOPPING and not worker.stuck():
                    reasons.append(f"{name} is stopping")
            elif isinstance(worker, Ticker):
                if state is STOPPING or (state is RUNNING and worker.armed):
                    reasons.append(f"{name} is {state}, armed: {worker.armed}")
            elif isinstance(worker, Stubborn):
                if state in LIVE and worker.armed:
                    reasons.append(f"{name} is armed")
            elif isinstance(worker, Tree):
                if state is STOPPING:
                    reasons.append(f"{name} is stopping")
                elif state is RUNNING and any(c.is_stopped() for c in worker.probes):
                    reasons.append(f"{name} runs with a stopped child")
        return reasons

    async def settle(self, bound: float) -> None:
        """Let the loop run until nothing is bound to happen any more (twice in a row)."""
        deadline = asyncio.get_running_loop().time() + bound
        quiet = 0
        while quiet < 2:
            for _ in range(3):
                await asyncio.sleep(0)
            reasons = self.busy()
            quiet = 0 if reasons else quiet + 1
            if reasons:
                # nothing hangs: every stop and crash completes within its bound
                assert asyncio.get_running_loop().time() < deadline, (
                    f"the world did not settle within {bound:.2f}s: {reasons}"
                )
                await asyncio.sleep(0.001)

    def check_trace(self, worker: Probe) -> None:
        trace = worker.trace
        assert trace[0] is INIT, f"{worker.worker_name} began {trace[0]}"
        for old, new in itertools.pairwise(trace):
            assert old == new or old.can_become(new), (
                f"illegal transition of {worker.worker_name}: {old} -> {new} in {trace}"
            )

    def check_no_task(self, workers: list[Probe]) -> None:
        live = live_fluid_tasks(self.loop, (w.worker_name for w in workers))
        for worker in workers:
            count = live[worker.worker_name]
            if worker.worker_state in LIVE:
                assert count, f"{worker.worker_state} {worker.worker_name} has no task"
            else:
                assert not count, f"{worker.worker_state} {worker.worker_name} left a task behind"

    def expected_errors(self, worker: Probe) -> list[BaseException]:
        """The errors of this run the worker may raise (a tree: its children's)."""
        if isinstance(worker, Tree):
            return [e for c in worker.probes for e in c.run_errors]
        return worker.run_errors[:1]

    def check_error(self, worker: Probe, error: BaseException | None, call: str) -> None:
        """``error`` is what ``call`` of the stopped (or never started) worker raised."""
        name = worker.worker_name
        if worker.worker_state is INIT:
            assert error is None, f"{call} of never started {name} raised {error!r}"
            return
        expected = self.expected_errors(worker)
        if not isinstance(worker, Tree):
            want = expected[0] if expected else None
            assert error is want, f"{call} of {worker.worker_state} {name}: {error!r}, not {want!r}"
            return
        if not expected:
            assert error is None, f"{call} of {name}: {error!r} though no child failed"
            return
        # FLUID BUG found here (a forced tree dropped a child's error; fixed in
        # 543a02a by Workers._collect_errors): a child that failed while its tree
        # was stopping was reported only by the graceful path, which collects the
        # errors of the children it shuts down; once the tree's grace period ran
        # out, _force() cancelled the rest and never looked at the children that
        # had already failed, so the tree ended FORCE_STOPPED without an error.
        # Found with the short tree grace period: crash(['t_queue'], then_shutdown).
        assert any(error is e for e in expected), (
            f"{call} of {worker.worker_state} {name} raised {error!r}, not the error of a "
            f"failed child (one of {expected!r}): the child's error is lost"
        )
        run = worker.startups
        if self.tree_error is None or self.tree_error[0] != run:
            self.tree_error = (run, error)
        assert error is self.tree_error[1], f"{call} of {name} raised another error"

    def check_after_shutdown(
        self, worker: Probe, error: BaseException | None, live: set[str]
    ) -> None:
        """Right after ``shutdown()`` of ``worker`` returned with ``error``."""
        for member in self.family(worker):
            assert member.worker_state is INIT or member.is_stopped(), (
                f"after shutdown() of {worker.worker_name} returned, "
                f"{member.worker_name} is {member.worker_state}"
            )
            if (
                isinstance(member, Consumer)
                and member.worker_name in live
                and member.drains
                and member.worker_state is STOPPED
                and not member.run_errors
            ):
                assert member.queue_size() == 0, (
                    f"{member.worker_name} stopped gracefully without draining its queue"
                )
        self.check_no_task(self.family(worker))
        self.check_error(worker, error, "shutdown()")

    def check_stop_reason(self, worker: Probe) -> None:
        """A stopped worker was asked to stop, crashed, or was stopped by its tree."""
        name = worker.worker_name
        if not worker.is_stopped() or worker.stop_asked or worker.run_errors:
            return
        tree = self.parent(worker)
        if tree is not None:
            assert tree.worker_state is not RUNNING, f"{name} stopped on its own in a running tree"
            return
        if isinstance(worker, Tree):
            # FLUID BUG found here (fixed in ae29f2c): a child exit recorded just
            # before the tree was asked to stop stayed in Workers._exited and stopped
            # the tree again right after its next startup(). Found by crashing two
            # children at once, or shutting down a child then its tree in one go,
            # then restarting the tree.
            ended = [c.worker_name for c in worker.probes if c.stop_asked or c.run_errors]
            assert ended, (
                f"{name} stopped on its own: nobody asked it to stop and none of its "
                f"children ended in this run (trace {worker.trace})"
            )
            return
        raise AssertionError(f"{name} stopped on its own: {worker.trace}")

    def check_final_state(self, worker: Probe) -> None:
        """STOPPED or FORCE_STOPPED, as the worker's behaviour dictates."""
        state = worker.worker_state
        if not worker.is_stopped():
            return
        name = worker.worker_name
        # FORCE_STOPPED exactly when a cancel ended the run (or came before it began)
        if worker.forced:
            assert state is FORCE_STOPPED, f"a cancel ended the run of {name}, yet it is {state}"
        else:
            assert state is STOPPED or not worker.ran, f"{name} ended by itself, yet it is {state}"
        forced_by_tree = self.short_tree and (isinstance(worker, Tree) or self.parent(worker))
        if isinstance(worker, Stubborn) and not worker.run_errors:
            assert state is FORCE_STOPPED, f"{name} ignores stop requests, yet it is {state}"
        elif forced_by_tree:
            return  # cancelled when the tree ran out of time, or not: both are right
        elif isinstance(worker, Stubborn):
            assert state is STOPPED, f"{name} crashed, yet it is {state}"
        elif isinstance(worker, Consumer):
            # forced exactly when a stop had to cancel a handler stuck on a message
            want = FORCE_STOPPED if worker.cancelled else STOPPED
            assert state is want, f"{name} is {state}, expected {want}"
        else:
            # a ticker wakes from its heartbeat at once; an ample tree stops in time
            assert state is STOPPED, f"{name} is {state}: it did not stop promptly"

    def check_books(self, consumer: Consumer) -> None:
        """No message silently lost: sent = handled + failed + queued + in flight + taken."""
        name = consumer.worker_name
        pending = self.pending[name]
        completed = consumer.done[self.seen[name] :]
        self.seen[name] = len(consumer.done)
        assert completed == pending[: len(completed)], (
            f"{name} completed {completed}, expected the oldest pending {pending[: len(completed)]}"
        )
        del pending[: len(completed)]
        in_flight = 0 if consumer.current is None else 1
        if in_flight:
            assert consumer.current == pending[0], f"{name} handles {consumer.current} out of order"
        assert len(pending) == consumer.queue_size() + in_flight, (
            f"{name} lost messages: {len(pending)} outstanding, "
            f"{consumer.queue_size()} queued + {in_flight} in flight"
        )

    async def check_world(self) -> None:
        loop_tasks = live_fluid_tasks(self.loop, self.world)
        for name, worker in self.world.items():
            assert not worker.violations, f"{name}: {worker.violations}"
            self.check_trace(worker)
            state = worker.worker_state
            # on_shutdown runs whenever on_startup completed
            assert worker.startups == worker.shutdowns + (1 if state in LIVE else 0), (
                f"{state} {name}: {worker.startups} on_startup, {worker.shutdowns} on_shutdown"
            )
            self.check_stop_reason(worker)
            self.check_final_state(worker)
            status = await worker.status()
            json.dumps(status)
            assert status["name"] == name
            assert status["state"] == state
            if isinstance(worker, Tree):
                assert [s["name"] for s in status["workers"]] == [
                    c.worker_name for c in worker.probes
                ]
                if worker.is_stopped():
                    # no orphans: a stopped tree stopped its children
                    for child in worker.probes:
                        assert child.is_stopped(), f"{name} is {state}, its child {child!r} is not"
            if isinstance(worker, Consumer):
                self.check_books(worker)
                done = Counter(m.kind for m in worker.done)
                in_flight = 0 if worker.current is None else 1
                queue = status["queue"]
                figures = (
                    queue["sent"],
                    queue["size"],
                    queue["handled"],
                    queue["failed"],
                    queue["in_flight"],
                    queue["taken"],
                )
                want = (
                    self.sent[name],
                    worker.queue_size(),
                    done["ok"],
                    done["fail"],
                    in_flight,
                    self.retrieved[name],
                )
                assert figures == want, f"{name}: status {queue}, expected {want}"
                assert self.sent[name] == (
                    done["ok"]
                    + done["fail"]
                    + worker.queue_size()
                    + in_flight
                    + self.retrieved[name]
                ), f"{name}: the books do not balance"
            if state is INIT or worker.is_stopped():
                # errors are never lost, however often one asks
                for call in (worker.wait_for_shutdown, worker.shutdown, worker.wait_for_shutdown):
                    error = await outcome(call)
                    self.check_error(worker, error, call.__name__ + "()")
        self.check_no_task(list(self.world.values()))
        live = {name for name, w in self.world.items() if w.worker_state in LIVE}
        assert set(loop_tasks) <= live, f"tasks of stopped workers: {loop_tasks}"

    @invariant()
    def world_is_consistent(self) -> None:
        """After every step, once the world settled (nothing hangs past its bound):

        * every state a worker took follows the previous one (``can_become``);
        * ``on_shutdown`` ran for every completed ``on_startup``, hooks and
          handlers ran in a live state;
        * a stopped worker was asked to stop, crashed, or belongs to a stopped
          tree: nothing stops on its own; a stopped tree has no running child;
        * STOPPED or FORCE_STOPPED as dictated: forced exactly when a cancel
          ended the run, a stubborn worker always, a ticker never (it wakes at
          once), a consumer only past a stuck message, an ample tree never;
        * the books of each consumer: what completed is the oldest of what was
          sent, in order, and sent = handled + failed + queued + in flight +
          taken back; ``status()`` agrees and serialises to JSON;
        * a stopped worker raises the error its run ended with (a tree: one of
          its failed children's) from ``wait_for_shutdown()`` and
          ``shutdown()``, every time; a never started one raises nothing;
        * a live worker has a ``fluid:`` task, a stopped one none.

        The rules check more right where they act: ``startup()`` of a live worker
        raises ``WorkerStartError`` and changes nothing, of a stopped one returns
        with it (and a tree's children) RUNNING; ``gracefully_stop()`` is at once
        and idempotent; right after ``shutdown()`` returns the worker (and its
        children) is stopped with no task left, its error raised, and a draining
        consumer that stopped gracefully has an empty queue.
        """
        if not self.world:
            return
        with self.step():
            bound = self.settle_bound()
            self.run(self.settle(bound), bound + MARGIN, "settling")
            self.run(self.check_world(), MARGIN, "checking the world")

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        try:
            if self.world:
                roots = [w for w in self.world.values() if self.parent(w) is None]
                bound = max(self.bound(w) for w in roots) + MARGIN
                self.run(self.shut_everything(), bound, "teardown")
        except Exception:
            if self.healthy:
                raise
        finally:
            self.close_loop()

    async def shut_everything(self) -> None:
        workers = [w for w in self.world.values() if self.parent(w) is None]
        errors = await asyncio.gather(*(outcome(w.shutdown) for w in workers))
        if not self.healthy:
            return
        for worker, error in zip(workers, errors, strict=True):
            self.check_after_shutdown(worker, error, set())
        for worker in self.world.values():
            self.check_trace(worker)
            assert worker.startups == worker.shutdowns, f"{worker!r}: on_shutdown did not run"
            self.check_final_state(worker)
        for name, consumer in self.consumers.items():
            self.check_books(consumer)
            assert consumer.take_undelivered() == self.pending[name], f"{name} lost messages"
        left = live_fluid_tasks(self.loop, self.world)
        assert not left, f"tasks left: {left}"

    def close_loop(self) -> None:
        loop = self.loop
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


TestLifecycle = Lifecycle.TestCase
