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
* Children stopped on request (``stop_workers``) or removed are not
  restarted and do not stop the tree.
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
from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatchcase

from ._errors import DuplicateWorkerName
from ._group import force, shutdown_in_reverse, shutdown_together
from ._state import WorkerState
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
from ._worker import STOPPING_GRACE_PERIOD, Worker, _release

__all__ = ["Workers"]

logger = logging.getLogger("fluid")

_RUNNING = WorkerState.RUNNING


class Workers(Worker):
    """A worker that owns child workers: ordered start, reverse stop, one outcome.

    Children start in the order they were added; ``startup()`` returns once
    all run. Without a ``strategy``, when any child ends while the tree runs
    the tree stops, and a child's error becomes the tree's error. With a
    ``strategy`` the tree supervises: children that end are restarted as
    their restart type says, within a restart intensity, after a backoff.
    Children can be added, found, stopped and removed by glob pattern while
    the tree runs. Trees nest.

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
        "_children",
        "_concurrent_stop",
        "_default_restart",
        "_exited",
        "_heartbeat",
        "_held",
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
            else Supervisor(self, strategy, max_restarts, period, backoff or Backoff())
        )
        self._concurrent_stop = bool(concurrent_stop)
        self._children: dict[str, Worker] = {}
        self._to_start: list[Worker] = []
        self._exited: list[Worker] = []
        self._held: set[Worker] = set()
        self._wakeup: asyncio.Future[None] | None = None
        self._name_counts: dict[str, int] = {}
        self.add_workers(*workers)

    @property
    def heartbeat(self) -> float:
        """The heartbeat given at construction (nothing polls with it)."""
        return self._heartbeat

    @property
    def children(self) -> tuple[Worker, ...]:
        """The direct children, in start order."""
        return tuple(self._children.values())

    @property
    def num_workers(self) -> int:
        """The number of leaf workers in the tree."""
        return sum(child.num_workers for child in self._children.values())

    def workers(self) -> Iterator[Worker]:
        """Iterate over the leaf workers of the tree, depth first, in start order."""
        for child in self._children.values():
            yield from child.workers()

    @property
    def strategy(self) -> Strategy | None:
        """The restart strategy, or None when the tree does not restart children."""
        return None if self._supervisor is None else self._supervisor.strategy

    def add_workers(self, *workers: Worker, restart: RestartType | None = None) -> None:
        """Add children; if the tree is running they are started right away.

        All are checked before any is added. A child whose name was derived
        from its class gets a numeric suffix (``poll-2``) if the name is taken.

        Args:
            *workers: the children to add, in start order.
            restart: their restart type; by default the tree's ``restart``.

        Raises:
            TypeError: one is not a Worker.
            DuplicateWorkerName: an explicit name is already taken in this tree.
            ValueError: one belongs to a tree already, is running, or is this
                tree or one of its ancestors.
        """
        restart = self._default_restart if restart is None else check_restart(restart)
        names = self._check_new(workers)
        for worker, name in zip(workers, names, strict=True):
            worker._name = name
            worker._parent = self
            worker._restart = restart
            self._children[name] = worker
        if self._state is _RUNNING:
            self._to_start.extend(workers)
            self._wake()

    def find(self, pattern: str) -> list[Worker]:
        """Workers whose name matches a glob ``pattern``, at any depth.

        ``*`` matches any run of characters, ``?`` one, ``[seq]`` one of seq.

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
        for child in self._children.values():
            if fnmatchcase(child._name, pattern):
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
        for worker in matched:
            assert worker._parent is not None
            worker._parent._held.add(worker)
        await _shutdown_raising_the_first_error(matched)
        return matched

    async def start_workers(self, *patterns: str) -> list[Worker]:
        """Start again the stopped workers matching any glob pattern, at any depth.

        Returns:
            The workers started, in start order.

        Raises:
            TypeError: a pattern is not a string.
            Exception: whatever a worker's ``startup()`` raised.
        """
        started = []
        for worker in self._find_all(patterns):
            assert worker._parent is not None
            worker._parent._held.discard(worker)
            if not worker.is_running() and not worker.is_stopping():
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
        for worker in removed:
            parent = worker._parent
            assert parent is not None
            del parent._children[worker._name]
            parent._held.discard(worker)
            worker._parent = None
        await _shutdown_raising_the_first_error(removed)
        return removed

    async def status(self) -> WorkerStatus:
        """The tree's status with the status of each child under ``workers``."""
        status = await super().status()
        status["workers"] = [await child.status() for child in self._children.values()]
        return status

    async def run(self) -> None:
        """Watch the children until the tree is asked to stop (or, unsupervised, one ends)."""
        supervisor = self._supervisor
        try:
            while self._state is _RUNNING:
                if self._to_start:
                    await self._start_added()
                elif self._exited:
                    await self._child_ended(self._exited.pop(0))
                elif supervisor is not None and supervisor.due:
                    await supervisor.restart_next()
                else:
                    await self._wait_wakeup()
        except asyncio.CancelledError:
            if supervisor is not None:
                supervisor.cancel()
            await force(self._children.values(), f"tree {self._name!r} was cancelled")
            self._collect_errors(self._children.values())
            raise
        if supervisor is not None:
            supervisor.cancel()
        else:
            self._collect_errors(self._exited)  # ended just before the stop request
        # A child that already ended was dealt with: by the supervisor (its
        # crash was logged and reported as an event), or by whoever stopped it
        # on request. Only an unsupervised tree still owes its children's errors.
        held = self._held
        children = [
            c
            for c in self._children.values()
            if not (c.is_stopped() and (supervisor is not None or c in held))
        ]
        stop = shutdown_together if self._concurrent_stop else shutdown_in_reverse
        try:
            errors = await stop(children)
        except asyncio.CancelledError:  # forced while stopping: the group forced the rest
            self._collect_errors(children)
            raise
        for child, error in errors:
            self._child_failed(child, error)

    # ------------------------------------------------------------- internals

    def _check_new(self, workers: Sequence[Worker]) -> list[str]:
        ancestors: set[int] = set()
        node: Worker | None = self
        while node is not None:
            ancestors.add(id(node))
            node = node._parent
        seen: set[int] = set()
        names: list[str] = []
        taken: set[str] = set()
        for worker in workers:
            if not isinstance(worker, Worker):
                raise TypeError(f"workers must be Worker instances, got {worker!r}")
            if id(worker) in ancestors:
                raise ValueError(f"worker {worker._name!r} cannot be its own descendant")
            if worker._parent is not None or id(worker) in seen:
                owner = worker._parent._name if worker._parent else self._name
                raise ValueError(f"worker {worker._name!r} already belongs to tree {owner!r}")
            if worker._state is _RUNNING or worker._state is WorkerState.STOPPING:
                raise ValueError(
                    f"worker {worker._name!r} is {worker._state}: add workers to "
                    "a tree before starting them"
                )
            seen.add(id(worker))
            name = self._free_name(worker, taken)
            taken.add(name)
            names.append(name)
        return names

    def _free_name(self, worker: Worker, taken: set[str]) -> str:
        name = worker._name
        if name not in self._children and name not in taken:
            return name
        if not worker._auto_name:
            raise DuplicateWorkerName(f"tree {self._name!r} already has a worker named {name!r}")
        n = self._name_counts.get(name, 1)
        while True:
            n += 1
            candidate = f"{name}-{n}"
            if candidate not in self._children and candidate not in taken:
                self._name_counts[name] = n
                return candidate

    async def _before_run(self) -> None:
        """Start the children in order; undo and raise if one fails."""
        self._to_start.clear()
        self._exited.clear()  # exits seen after the last run's stop request
        self._held.clear()
        if self._supervisor is not None:
            self._supervisor.reset()
        started: list[Worker] = []
        try:
            for child in list(self._children.values()):
                if self._state is not _RUNNING:
                    break
                await child.startup()
                started.append(child)
        except asyncio.CancelledError:
            await force(started, f"startup of tree {self._name!r} was cancelled")
            raise
        except Exception as exc:
            exc.add_note(f"while starting worker {child._name!r} of tree {self._name!r}")
            for worker, error in await shutdown_in_reverse(started):
                logger.error("worker %r failed", worker._name, exc_info=error)
            raise

    async def _start_added(self) -> None:
        to_start, self._to_start = self._to_start, []
        for child in to_start:
            if self._state is not _RUNNING:
                return
            if self._children.get(child._name) is not child:
                continue  # removed again
            if child.has_started() and not child.is_stopped():
                continue  # started by someone else meanwhile; a stopped one starts again
            try:
                await child.startup()
            except Exception as exc:
                if self._supervisor is not None:
                    await self._supervisor.child_ended(child, exc)
                else:
                    self._child_failed(child, exc)
                    self.gracefully_stop()

    def _child_exited(self, child: Worker) -> None:
        """Called by a child when its task ends."""
        if (
            self._state is _RUNNING
            and self._children.get(child._name) is child
            and child not in self._held
            and (self._supervisor is None or child not in self._supervisor.restarting)
        ):
            self._exited.append(child)
            self._wake()

    async def _child_ended(self, child: Worker) -> None:
        if not child.is_stopped() or child in self._held:  # restarted or stopped on request
            return
        error = child._error
        if self._supervisor is not None:
            await self._supervisor.child_ended(child, error)
            return
        if error is None:
            logger.info("worker %r of tree %r ended: stopping the tree", child._name, self._name)
        else:
            logger.warning(
                "worker %r of tree %r failed: stopping the tree",
                child._name,
                self._name,
            )
            self._child_failed(child, error)
        self.gracefully_stop()

    def _collect_errors(self, children: Iterable[Worker]) -> None:
        """Make sure the errors of children that crashed are not lost (unsupervised)."""
        if self._supervisor is None:
            for child in children:
                if child._error is not None and child not in self._held:
                    self._child_failed(child, child._error)

    def _child_failed(self, child: Worker, error: BaseException) -> None:
        if error is self._error:
            return
        if self._error is None:
            error.add_note(f"raised by worker {child._name!r} of tree {self._name!r}")
            self._fail(error)
        else:
            logger.error("worker %r of tree %r failed", child._name, self._name, exc_info=error)

    def _stop_requested(self) -> None:
        super()._stop_requested()
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
            _release(wakeup)

    async def _wait_wakeup(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakeup = waiter
        try:
            await waiter
        finally:
            self._wakeup = None


async def _shutdown_raising_the_first_error(workers: list[Worker]) -> None:
    """Shut all of them down in reverse order, then raise the first error, if any."""
    errors = await shutdown_in_reverse(workers)
    if errors:
        raise errors[0][1]
