"""Workers: a tree of workers that start in order and stop in reverse.

How a tree runs:

* ``startup()`` runs the tree's ``on_startup``, then starts each child in
  order and returns when all run. If one fails to start, the ones already
  started are stopped (in reverse) and ``startup()`` raises its error.
* The tree's task sleeps on one future. It is woken by a stop request, by a
  child that ended (each child tells its parent from its own task's last
  step: no polling, no task per child) and by children added while running.
* Without a restart strategy, a child that ends while the tree runs stops
  the whole tree; if it failed, its error becomes the tree's error, raised
  by ``shutdown()`` and ``wait_for_shutdown()`` with a note naming the child.
  With a strategy, the tree's Supervisor (``_supervision.py``) restarts it.
* Once the tree is asked to stop, nothing is restarted. A child that ends
  with an error after the stop request, or just before it (its end not yet
  handled), or while being stopped: unsupervised, that error is the tree's
  (the first one; later ones are logged); supervised, it is logged and kept
  by the child, never the tree's error. So what ``shutdown()`` of a
  supervised tree raises never depends on a crash racing the stop request.
* Each child has a slot (``_slot.py``) owned by the tree: its restart type,
  restart count, backoff step, and whether it is still a member, held
  (stopped on request) or being restarted. Exits and pending restarts carry
  the slot, so whether the tree still acts on a child is checked in one
  place: a child removed (even while its end is in flight) or stopped on
  request (``stop_workers``) is not started, not restarted, and its end
  does not stop the tree. This holds while the tree is still starting too.
* A new run of the tree (``startup()`` after a stop) starts its children
  afresh: holds, restarts in progress, backoff steps and the restart
  intensity window are forgotten.
* Stopping goes in reverse start order, one child at a time, each within its
  own grace period, so a producer added after the consumer it feeds stops
  first and the consumer can drain what it sent. If the
  tree itself is cancelled (its own grace period ran out), every child still
  running is cancelled and waited for before the cancellation goes on: a
  forced tree never leaves a descendant running.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatchcase

from ._errors import DuplicateWorkerName
from ._group import force, shutdown_in_reverse, shutdown_together
from ._slot import Slot
from ._state import FINAL_STATES, WorkerState
from ._status import WorkerStatus
from ._supervision import (
    Backoff,
    RestartType,
    Strategy,
    Supervisor,
    check_restart,
    check_strategy,
)
from ._validate import check_seconds
from ._waiting import release
from ._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = ["Workers"]

logger = logging.getLogger("fluid")

_RUNNING = WorkerState.RUNNING
_STOPPING = WorkerState.STOPPING
_STARTED = frozenset((_RUNNING, _STOPPING))  # a worker in these states cannot be added
_ENDED = FINAL_STATES


class Workers(Worker):
    """A worker that owns child workers: ordered start, reverse stop, one outcome.

    Children start in the order they were added; ``startup()`` returns once
    all run. Without a ``strategy``, when any child ends while the tree runs
    the tree stops, and a child's error becomes the tree's error. With a
    ``strategy`` the tree supervises: children that end are restarted as
    their restart type says, within a restart intensity, after a backoff.
    Children can be added, found, stopped and removed by glob pattern while
    the tree runs. Trees nest.

    What a tree's ``shutdown()`` and ``wait_for_shutdown()`` raise:

    * unsupervised: the first error a child ended with while the tree ran
      or stopped (a child crashing after the stop request, or failing in its
      ``on_shutdown``, included), with a note naming the child; any later
      one is logged;
    * supervised: only the tree's own failures, never a child's crash:
      [`TooManyRestarts`][fluid.TooManyRestarts] when it gave up, or an
      error of its own ``on_shutdown``. A child that crashes once
      the tree is asked to stop (or just before, its crash not yet handled)
      is not restarted; its error is logged at ERROR and kept by the child
      (its ``status()``, its ``crashed`` transition), as an Erlang supervisor
      reports a child's failure during its shutdown and still exits with
      ``shutdown``. A crash racing the stop request thus decides whether
      the child is restarted, never what ``shutdown()`` raises.

    Either way the errors of children removed or stopped on request belong
    to the ``remove_workers``/``stop_workers`` call that stopped them.

    Args:
        *workers: the children, in start order.
        name: the tree's name; by default derived from the class name.
        heartbeat: accepted for compatibility with earlier fluid versions and
            validated; children are watched through completion callbacks, so
            nothing is polled.
        stopping_grace_period: seconds the whole tree gets to stop before it
            is cancelled, children included.
        strategy: ``None`` (no restarts: a child's end stops the tree),
            ``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``.
        restart: the restart type of children added without one:
            ``"permanent"``, ``"transient"`` or ``"temporary"``.
        max_restarts: the most restarts allowed within ``period`` seconds;
            one more and the tree fails with [`TooManyRestarts`][fluid.TooManyRestarts].
        period: the window of the restart intensity, in seconds.
        backoff: the wait between restarts of one child (a
            [`Backoff`][fluid.Backoff]; by default ``Backoff()``).
        concurrent_stop: stop all children at once instead of one by one in
            reverse start order.

    Raises:
        TypeError: a child is not a Worker.
        DuplicateWorkerName: two children have the same explicit name.
        ValueError: a child already belongs to a tree or is running, or a
            policy argument is not one of its accepted values.

    Example:
        ```python
        tree = fluid.Workers(
            fluid.QueueConsumerWorker(handle, name="consumer"),
            fluid.WorkerFunction(produce, heartbeat=0.1, name="producer"),
            name="pipeline",
        )
        async with tree:  # producer stops first, then the consumer drains
            await asyncio.sleep(10)
        ```
    """

    __slots__ = (
        "_child_start_timer",
        "_child_starting",
        "_children",
        "_concurrent_stop",
        "_default_restart",
        "_exited",
        "_heartbeat",
        "_name_counts",
        "_supervisor",
        "_to_start",
        "_wakeup",
    )

    def __init__(
        self,
        *workers: Worker,
        name: str = "",
        heartbeat: float = 0.1,
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
        strategy: Strategy | None = None,
        restart: RestartType = "permanent",
        max_restarts: int = 3,
        period: float = 5.0,
        backoff: Backoff | None = None,
        concurrent_stop: bool = False,
    ) -> None:
        super().__init__(name, stopping_grace_period)
        self._heartbeat = check_seconds("heartbeat", heartbeat)
        self._default_restart = check_restart(restart)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a fluid.Backoff, got {backoff!r}")
        strategy = check_strategy(strategy)
        self._supervisor = (
            None
            if strategy is None
            else Supervisor(
                self,
                strategy,
                max_restarts,
                period,
                backoff or Backoff(),
                members=self._members,
                wake=self._wake,
            )
        )
        self._concurrent_stop = bool(concurrent_stop)
        self._children: dict[str, Slot] = {}  # by name, in start order
        self._to_start: list[Slot] = []  # added while running, not started yet
        self._exited: deque[Slot] = deque()  # ended while the tree ran, not handled yet
        self._wakeup: asyncio.Future[None] | None = None
        self._name_counts: dict[str, int] = {}
        # the child whose startup() the tree awaits, and the timer that forces
        # it once a stop of the tree has given it its grace period
        self._child_starting: Worker | None = None
        self._child_start_timer: asyncio.TimerHandle | None = None
        self.add_workers(*workers)

    @property
    def heartbeat(self) -> float:
        """The heartbeat given at construction (nothing polls with it)."""
        return self._heartbeat

    @property
    def children(self) -> tuple[Worker, ...]:
        """The direct children, in start order."""
        return tuple(slot.worker for slot in self._children.values())

    @property
    def num_workers(self) -> int:
        """The number of leaf workers in the tree."""
        return sum(slot.worker.num_workers for slot in self._children.values())

    def workers(self) -> Iterator[Worker]:
        """Iterate over the leaf workers of the tree, depth first, in start order."""
        for slot in tuple(self._children.values()):
            yield from slot.worker.workers()

    @property
    def strategy(self) -> Strategy | None:
        """The restart strategy, or None when the tree does not restart children."""
        return None if self._supervisor is None else self._supervisor.strategy

    def add_workers(self, *workers: Worker, restart: RestartType | None = None) -> None:
        """Add children; if the tree is running they are started right away.

        All are checked before any is added. A child whose name was derived
        from its class gets a numeric suffix (``poll-2``) if the name is taken.

        A worker belongs to one tree at a time. It may move: a worker of a
        tree that ran and stopped (and whose trees above stopped too) leaves
        that tree when another adds it, so a module-level worker can serve
        the tree each start of an app builds (a second ``TestClient``, a new
        app per test). The tree it left no longer has it, also if restarted.
        A worker of a tree that is running, or was never started, is refused.

        Args:
            *workers: the children to add, in start order.
            restart: their restart type; by default the tree's ``restart``.

        Raises:
            TypeError: one is not a Worker.
            DuplicateWorkerName: an explicit name is already taken in this tree.
            ValueError: one belongs to a tree that has not stopped, is
                running, or is this tree or one of its ancestors.

        Example:
            ```python
            consumer = fluid.QueueConsumerWorker(handle, name="orders")

            async def serve_once() -> None:
                async with fluid.Workers(consumer, name="app"):  # each start, a new tree
                    consumer.send({"id": 1})

            await serve_once()
            await serve_once()  # the consumer moves from the first, stopped tree
            ```
        """
        restart = self._default_restart if restart is None else check_restart(restart)
        names, leaving = self._check_new(workers)
        for slot in leaving:  # checked: their trees stopped
            slot.tree._forget(slot)
        slots = [
            Slot(self, worker, name, restart) for worker, name in zip(workers, names, strict=True)
        ]
        self._children.update(zip(names, slots, strict=True))
        if self._state is _RUNNING:
            self._to_start.extend(slots)
            self._wake()

    def find(self, pattern: str) -> list[Worker]:
        """Workers whose name matches a glob ``pattern``, at any depth.

        ``*`` matches any run of characters, ``?`` one, ``[seq]`` one of seq.
        To find a name holding those characters as they are (``poll[1]``),
        escape it: ``tree.find(glob.escape(name))``.

        Raises:
            TypeError: ``pattern`` is not a string.

        Example:
            ```python
            consumers = tree.find("consumer-*")
            ```
        """
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a string, got {pattern!r}")
        found = []
        for slot in tuple(self._children.values()):
            child = slot.worker
            if fnmatchcase(child.worker_name, pattern):
                found.append(child)
            if isinstance(child, Workers):
                found.extend(child.find(pattern))
        return found

    async def stop_workers(self, *patterns: str) -> list[Worker]:
        """Stop the workers matching any glob pattern, at any depth; keep them in their trees.

        A worker stopped this way is not restarted and its end does not stop
        its tree; [`start_workers`][fluid.Workers.start_workers] starts it again.
        They are stopped in reverse start order, each within its grace period.

        Returns:
            The stopped workers, in start order.

        Raises:
            TypeError: a pattern is not a string.
            Exception: the error a stopped worker ended with (the first one if
                several failed); all matching workers are stopped first.
        """
        matched = self._find_all(patterns)
        for slot in _slots(matched):
            slot.held = True
        await _shutdown_raising_the_first_error(matched)
        return matched

    async def start_workers(self, *patterns: str) -> list[Worker]:
        """Start again the stopped workers matching any glob pattern, at any depth.

        They are under their tree's care again: a worker whose tree runs (or
        is starting) is started now; one whose tree is not running starts
        with it.

        Returns:
            The workers started, in start order.

        Raises:
            TypeError: a pattern is not a string.
            Exception: whatever a worker's ``startup()`` raised.
        """
        started = []
        for worker in self._find_all(patterns):
            slot = worker._slot
            if slot is None or not slot.member:
                continue  # removed meanwhile, by a startup() before it
            slot.held = False
            if slot.tree.is_running() and (not worker.has_started() or worker.is_stopped()):
                await worker.startup()
                started.append(worker)
        return started

    async def remove_workers(self, *patterns: str) -> list[Worker]:
        """Stop and remove the workers matching any glob pattern, at any depth.

        They are stopped in reverse start order, each within its grace
        period, and their trees go on running without them.

        Returns:
            The removed workers, in start order.

        Raises:
            TypeError: a pattern is not a string.
            Exception: the error a removed worker ended with (the first one if
                several failed); all matching workers are removed first.
        """
        removed = self._find_all(patterns)
        for slot in _slots(removed):
            slot.tree._forget(slot)
        await _shutdown_raising_the_first_error(removed)
        return removed

    async def status(self) -> WorkerStatus:
        """The tree's status with the status of each child under ``workers``."""
        status = await super().status()
        status["workers"] = [await child.status() for child in self.children]
        return status

    async def startup(self) -> None:
        """Start the tree: its ``on_startup``, then each child in order.

        A tree starting a new run starts its children afresh: children
        stopped on request in an earlier run are started again, and restart
        counting (intensity window, backoff) begins anew. A child removed or
        stopped on request while the tree starts is not started.

        Raises:
            WorkerStartError: the tree is running or stopping.
            Exception: whatever ``on_startup`` or a child's ``startup()``
                raised; the children already started are stopped first.

        Example:
            ```python
            await tree.startup()  # every child runs when this returns
            ```
        """
        if self.is_running() or self.is_stopping():
            await super().startup()  # refused: WorkerStartError, nothing changes
            return
        self._new_run()
        try:
            await super().startup()
        except Exception:
            # The children it started itself are stopped already; these were
            # started by hand (start_workers) meanwhile, and nothing else
            # would ever stop them.
            for worker, error in await shutdown_in_reverse(self._running_children()):
                logger.error("worker %r failed", worker.worker_name, exc_info=error)
            raise
        except BaseException:
            await force(self._running_children(), f"startup of tree {self._name!r} failed")
            raise

    async def run(self) -> None:
        """Watch the children until the tree is asked to stop (or, unsupervised, one ends)."""
        supervisor = self._supervisor
        try:
            while self._state is _RUNNING:
                if self._to_start:
                    await self._start_added()
                elif self._exited:
                    await self._child_ended(self._exited.popleft())
                elif supervisor is not None and supervisor.due:
                    self._give_up(await supervisor.restart_next())
                else:
                    await self._wait_wakeup()
        except asyncio.CancelledError:
            if supervisor is not None:
                supervisor.cancel()
            await force(self.children, f"tree {self._name!r} was cancelled")
            # Supervised, the ends no supervisor handled are all in _exited
            # (the forced children's too: they ended while it ran or stopped).
            self._take_errors(self._exited if supervisor else self._children.values())
            raise
        if supervisor is not None:
            supervisor.cancel()
        # Ends not handled yet (just before the stop request, or since) are
        # settled here, as the ends of children stopped below will be: see
        # _stopped_with. The ends handled while the tree ran were dealt with
        # then, by the supervisor (restarted, or logged as not restarted) or
        # by stopping the unsupervised tree.
        self._take_errors(self._exited)
        slots = [slot for slot in self._children.values() if not slot.worker.is_stopped()]
        stop = shutdown_together if self._concurrent_stop else shutdown_in_reverse
        try:
            errors = await stop([slot.worker for slot in slots])
        except asyncio.CancelledError:  # forced while stopping: the group forced the rest
            self._take_errors(slots)  # as a graceful stop would have
            raise
        for child, error in errors:
            slot = child._slot
            # a removed one's error is its remover's, a held one's its stopper's
            if slot is not None and slot.parent is self and not slot.held:
                self._stopped_with(child, error)

    # ------------------------------------------------------------- internals

    def _check_new(self, workers: Sequence[Worker]) -> tuple[list[str], list[Slot]]:
        """Check every worker to add, before any is added.

        Return their names in this tree, and the slots of those that leave a
        stopped tree for this one (none on the short path below: new workers).

        A large tree adds ten thousand workers at once, so the common case
        takes a short path: new workers are checked with one attribute test
        each and a few set operations over the whole batch, and only taken
        names go one by one (``_free_name``). Anything else (a worker that is
        not new, not a worker, an ancestor, or given twice) takes
        ``_check_each``, which finds and reports the first problem in the
        order given, exactly as if there were no short path.
        """
        ancestors: set[int] = set()
        node: Worker | None = self
        while node is not None:
            ancestors.add(id(node))
            node = node._parent
        names = _new_names(workers)
        if names is None or not ancestors.isdisjoint(map(id, workers)):
            return self._check_each(workers, ancestors)
        children = self._children
        if len(set(names)) == len(names) and children.keys().isdisjoint(names):
            return names, []
        if len(set(map(id, workers))) != len(workers):  # the same worker twice
            return self._check_each(workers, ancestors)
        # New and distinct workers, some names taken: suffix or refuse those.
        taken: set[str] = set()
        for i, name in enumerate(names):
            if name in children or name in taken:
                names[i] = name = self._free_name(workers[i], taken)
            taken.add(name)
        return names, []

    def _check_each(
        self, workers: Sequence[Worker], ancestors: set[int]
    ) -> tuple[list[str], list[Slot]]:
        """Check the workers one by one: raise for the first problem, suffix derived names."""
        seen: set[int] = set()
        names: list[str] = []
        leaving: list[Slot] = []
        taken: set[str] = set()
        children = self._children
        for worker in workers:
            if not isinstance(worker, Worker):
                raise TypeError(f"workers must be Worker instances, got {worker!r}")
            key = id(worker)
            if key in ancestors:
                raise ValueError(f"worker {worker.worker_name!r} cannot be its own descendant")
            parent = worker._parent
            if parent is self:
                raise ValueError(f"worker {worker.worker_name!r} is already in tree {self._name!r}")
            holding = None if parent is None else _not_stopped(parent)
            if key in seen or holding is not None:
                owner = parent.worker_name if parent is not None else self._name
                above = (
                    f" (tree {holding.worker_name!r} above it is {holding.worker_state})"
                    if holding is not None and holding is not parent
                    else ""
                )
                raise ValueError(
                    f"worker {worker.worker_name!r} already belongs to tree {owner!r}{above}"
                )
            if worker._state in _STARTED:
                raise ValueError(
                    f"worker {worker.worker_name!r} is {worker.worker_state}: add workers to "
                    "a tree before starting them"
                )
            seen.add(key)
            slot = worker._slot
            if parent is not None and slot is not None:  # its trees stopped: it moves
                leaving.append(slot)
            name = worker._name
            if name in children or name in taken:
                name = self._free_name(worker, taken)
            taken.add(name)
            names.append(name)
        return names, leaving

    def _free_name(self, worker: Worker, taken: set[str]) -> str:
        """The name of a worker whose name is taken: a suffix if it was derived, else refused."""
        name = worker.worker_name
        if not worker._auto_name:
            raise DuplicateWorkerName(f"tree {self._name!r} already has a worker named {name!r}")
        n = self._name_counts.get(name, 1)
        while True:
            n += 1
            candidate = f"{name}-{n}"
            if candidate not in self._children and candidate not in taken:
                self._name_counts[name] = n
                return candidate

    def _running_children(self) -> list[Worker]:
        return [c for c in self.children if c.has_started() and not c.is_stopped()]

    def _members(self) -> list[Slot]:
        """The slots of the current children, in start order (for the supervisor)."""
        return list(self._children.values())

    def _forget(self, slot: Slot) -> None:
        """Remove a child: from now on nothing it does reaches this tree."""
        del self._children[slot.worker.worker_name]
        slot.leave()

    def _new_run(self) -> None:
        """Forget the previous run: every child starts afresh."""
        self._to_start.clear()
        self._exited.clear()  # exits seen after the last run's stop request
        for slot in self._children.values():
            if slot.held or slot.restarting or slot.backoff_step:  # most are fresh: no call
                slot.new_run()
        if self._supervisor is not None:
            self._supervisor.reset()

    async def _before_run(self) -> None:
        """Start the children in order; undo and raise if one fails.

        Each child is looked at when its turn comes, not from a list taken
        at the start: one removed or stopped on request meanwhile (the
        earlier ones' ``on_startup`` can take long) is not started, and one
        already started by hand is left running.
        """
        started: list[Worker] = []
        for slot in list(self._children.values()):
            if self._state is not _RUNNING:
                break
            if not slot.to_start:
                continue
            child = slot.worker
            self._child_starting = child  # a stop meanwhile applies to it: see _stop_starting_child
            try:
                try:
                    await child.startup()
                finally:
                    self._child_started()
            except asyncio.CancelledError:
                await force(started, f"startup of tree {self._name!r} was cancelled")
                raise
            except Exception as exc:
                if not slot.watched:
                    continue  # removed or stopped while it started: its remover has the error
                if self._forced_by_the_stop(child):
                    break
                exc.add_note(f"while starting worker {child.worker_name!r} of tree {self._name!r}")
                members = [w for w in started if w._parent is self]
                for worker, error in await shutdown_in_reverse(members):
                    logger.error("worker %r failed", worker.worker_name, exc_info=error)
                raise
            started.append(child)

    async def _start_added(self) -> None:
        to_start, self._to_start = self._to_start, []
        for slot in to_start:
            if self._state is not _RUNNING:
                return
            if not slot.to_start:
                continue
            child = slot.worker
            self._child_starting = child  # a stop meanwhile applies to it: see _stop_starting_child
            try:
                try:
                    await child.startup()
                finally:
                    self._child_started()
            except Exception as exc:
                if not slot.watched:
                    continue
                if self._forced_by_the_stop(child):
                    return
                if self._supervisor is not None:
                    # The worker does not keep an error startup() raised: log
                    # it, as a failed restart is (the supervisor restarts it).
                    logger.warning("worker %r failed to start", child.worker_name, exc_info=exc)
                    self._give_up(await self._supervisor.child_ended(slot, exc))
                else:
                    self._child_failed(child, exc)
                    self.gracefully_stop()

    def _stop_starting_child(self) -> None:
        """The tree is asked to stop while a child starts: stop it as a running one.

        A child's start steps (a connect, a child process's setup) run in
        the tree's task: without this a stop requested while one hangs would
        wait for the tree's own grace period, whatever the child's. It is
        asked to stop, then forced after its own grace period.
        """
        child = self._child_starting
        if child is None or self._child_start_timer is not None:
            return
        child.gracefully_stop()  # its start steps see is_running() False
        reason = f"tree {self._name!r} stopped while worker {child.worker_name!r} was starting"
        self._child_start_timer = asyncio.get_running_loop().call_later(
            child.stopping_grace_period, child.force_stop, reason
        )

    def _child_started(self) -> None:
        """The start in progress ended, however: nothing to force any more."""
        self._child_starting = None
        timer = self._child_start_timer
        if timer is not None:
            self._child_start_timer = None
            timer.cancel()

    def _forced_by_the_stop(self, child: Worker) -> bool:
        """A child whose start the tree's stop forced: not a failure of the tree."""
        if self._state is _RUNNING or child.worker_state is not WorkerState.FORCE_STOPPED:
            return False
        logger.warning(
            "worker %r of tree %r was forced to stop while it started",
            child.worker_name,
            self._name,
        )
        return True

    def _child_exited(self, slot: Slot) -> None:
        """A child's task ended (called through its slot, from that task's last step)."""
        state = self._state
        if state is _RUNNING:
            if slot.watched:
                self._exited.append(slot)
                self._wake()
        elif state is _STOPPING and slot.worker._error is not None and slot.watched:
            # While the tree stops only a crash matters (_take_errors settles
            # it); ten thousand clean ends of a stop are not queued one by one.
            self._exited.append(slot)
            self._wake()

    async def _child_ended(self, slot: Slot) -> None:
        child = slot.worker
        if not slot.watched or not child.is_stopped():
            return  # removed, stopped on request, restarting, or started again meanwhile
        error = child._error
        if self._supervisor is not None:
            self._give_up(await self._supervisor.child_ended(slot, error))
            return
        if error is None:
            logger.info(
                "worker %r of tree %r ended: stopping the tree", child.worker_name, self._name
            )
        else:
            logger.warning(
                "worker %r of tree %r failed: stopping the tree",
                child.worker_name,
                self._name,
            )
            self._child_failed(child, error)
        self.gracefully_stop()

    def _give_up(self, error: BaseException | None) -> None:
        """The supervisor gave up (too many restarts): fail the tree with its error."""
        if error is not None:
            self._fail(error)
            self.gracefully_stop()

    def _take_errors(self, slots: Iterable[Slot]) -> None:
        """Settle the errors of these children as the tree stops (not a remover's or stopper's)."""
        for slot in dict.fromkeys(slots):  # a slot can be queued twice in _exited
            child = slot.worker
            if child._error is not None and slot.member and not slot.held:
                self._stopped_with(child, child._error)

    def _stopped_with(self, child: Worker, error: BaseException) -> None:
        """A child ended with ``error`` after (or just before) the tree's stop request.

        Unsupervised, it is the tree's error, as it would have been while
        the tree ran. Supervised, a child's crash is never the tree's error
        (only ``TooManyRestarts`` is, as an Erlang supervisor exits with
        ``shutdown`` whatever its children did while it terminated them): the
        tree no longer restarts anything, so it logs the crash instead. The
        error is also kept by the child (its ``status()``, its ``crashed``
        transition). Which of the two a crash racing the stop request gets then
        decides only whether it is restarted, never what ``shutdown()`` raises.
        """
        if self._supervisor is None:
            self._child_failed(child, error)
        else:
            logger.error(
                "worker %r of tree %r failed as the tree stopped; it is not restarted",
                child.worker_name,
                self._name,
                exc_info=error,
            )

    def _child_failed(self, child: Worker, error: BaseException) -> None:
        if error is self._error:
            return
        if self._error is None:
            error.add_note(f"raised by worker {child.worker_name!r} of tree {self._name!r}")
            self._fail(error)
        else:
            logger.error(
                "worker %r of tree %r failed", child.worker_name, self._name, exc_info=error
            )

    def _stop_requested(self) -> None:
        super()._stop_requested()
        self._stop_starting_child()
        self._wake()

    def _find_all(self, patterns: tuple[str, ...]) -> list[Worker]:
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"pattern must be a string, got {pattern!r}")
        found: dict[int, Worker] = {}
        for pattern in patterns:
            for worker in self.find(pattern):
                found.setdefault(id(worker), worker)
        return list(found.values())

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            release(wakeup)

    async def _wait_wakeup(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakeup = waiter
        try:
            await waiter
        finally:
            self._wakeup = None


def _not_stopped(tree: Worker | None) -> Worker | None:
    """The first of ``tree`` and the trees above it that has not stopped, if any.

    None when all ran and stopped: they let their workers go.
    """
    while tree is not None:
        if tree._state not in _ENDED:
            return tree
        tree = tree._parent
    return None


def _new_names(workers: Sequence[Worker]) -> list[str] | None:
    """The names of workers that may all join a tree as they are, else None.

    Each is an instance of a ``Worker`` subclass (read from its class's MRO:
    ``isinstance`` on an ABC goes through ``ABCMeta.__instancecheck__``),
    belongs to no tree and was not started. None sends the batch to the
    full checks, which report the problem.
    """
    names: list[str] = []
    append = names.append
    for worker in workers:
        if (
            Worker not in type(worker).__mro__
            or (worker._slot is not None and worker._parent is not None)  # a new one has no slot
            or worker._state in _STARTED
        ):
            return None
        append(worker._name)
    return names


def _slots(workers: Iterable[Worker]) -> list[Slot]:
    """The slots of workers ``find()`` just returned: all members of a tree."""
    return [w._slot for w in workers if w._slot is not None and w._slot.member]


async def _shutdown_raising_the_first_error(workers: list[Worker]) -> None:
    """Shut all of them down in reverse order, then raise the first error, if any."""
    errors = await shutdown_in_reverse(workers)
    if errors:
        raise errors[0][1]
