"""Workers: a tree of workers that start in order and stop in reverse.

How a tree runs:

* ``startup()`` runs the tree's ``on_startup``, then starts each child in
  order and returns when all run. If one fails to start, the ones already
  started are stopped (in reverse) and ``startup()`` raises its error.
* The tree's task sleeps on one future. It is woken by a stop request, by a
  child that ended (each child tells its parent from its own task's last
  step: no polling, no task per child) and by children added while running.
* A child that ends while the tree runs stops the whole tree; if it failed,
  its error becomes the tree's error, raised by ``shutdown()`` and
  ``wait_for_shutdown()`` with a note naming the child.
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
from ._state import WorkerState
from ._status import WorkerStatus
from ._validate import check_seconds
from ._worker import STOPPING_GRACE_PERIOD, Worker, _release

__all__ = ["Workers"]

logger = logging.getLogger("fluid")

_RUNNING = WorkerState.RUNNING


class Workers(Worker):
    """A worker that owns child workers: ordered start, reverse stop, one outcome.

    Children start in the order they were added; ``startup()`` returns once
    all run. When any child ends while the tree runs, the tree stops, and a
    child's error becomes the tree's error. Children can be added, found by
    glob pattern and removed while the tree runs. Trees nest.

    Args:
        *workers: the children, in start order.
        name: the tree's name; by default derived from the class name.
        heartbeat: accepted for compatibility with earlier fluid versions and
            validated; children are watched through completion callbacks, so
            nothing is polled.
        stopping_grace_period: seconds the whole tree gets to stop before it
            is cancelled, children included.

    Raises:
        TypeError: a child is not a Worker.
        DuplicateWorkerName: two children have the same explicit name.
        ValueError: a child already belongs to a tree or is running.

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
        "_exited",
        "_heartbeat",
        "_name_counts",
        "_to_start",
        "_wakeup",
    )

    def __init__(
        self,
        *workers: Worker,
        name: str = "",
        heartbeat: float = 0.1,
        stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    ) -> None:
        super().__init__(name, stopping_grace_period)
        self._heartbeat = check_seconds("heartbeat", heartbeat)
        self._children: dict[str, Worker] = {}
        self._to_start: list[Worker] = []
        self._exited: list[Worker] = []
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

    def add_workers(self, *workers: Worker) -> None:
        """Add children; if the tree is running they are started right away.

        All are checked before any is added. A child whose name was derived
        from its class gets a numeric suffix (``poll-2``) if the name is taken.

        Raises:
            TypeError: one is not a Worker.
            DuplicateWorkerName: an explicit name is already taken in this tree.
            ValueError: one belongs to a tree already, is running, or is this
                tree or one of its ancestors.
        """
        names = self._check_new(workers)
        for worker, name in zip(workers, names, strict=True):
            worker._name = name
            worker._parent = self
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

    async def remove_workers(self, *patterns: str) -> list[Worker]:
        """Stop and remove the direct children matching any glob pattern.

        They are stopped in reverse start order, each within its grace
        period, and the tree goes on running without them.

        Returns:
            The removed workers, in start order.

        Raises:
            TypeError: a pattern is not a string.
            Exception: the error a removed child ended with (the first one if
                several failed); all matching children are removed first.
        """
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"pattern must be a string, got {pattern!r}")
        removed = [
            child
            for child in self._children.values()
            if any(fnmatchcase(child._name, p) for p in patterns)
        ]
        for child in removed:
            del self._children[child._name]
            child._parent = None
        errors = await _shutdown_in_reverse(removed)
        if errors:
            raise errors[0][1]
        return removed

    async def status(self) -> WorkerStatus:
        """The tree's status with the status of each child under ``workers``."""
        status = await super().status()
        status["workers"] = [await child.status() for child in self._children.values()]
        return status

    async def run(self) -> None:
        """Supervise the children until the tree is asked to stop or one ends."""
        try:
            while self._state is _RUNNING:
                if self._to_start:
                    await self._start_added()
                elif self._exited:
                    self._child_ended(self._exited.pop(0))
                else:
                    await self._wait_wakeup()
        except asyncio.CancelledError:
            await _force(self._children.values(), f"tree {self._name!r} was cancelled")
            raise
        for child, error in await _shutdown_in_reverse(list(self._children.values())):
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
        started: list[Worker] = []
        try:
            for child in list(self._children.values()):
                if self._state is not _RUNNING:
                    break
                await child.startup()
                started.append(child)
        except asyncio.CancelledError:
            await _force(started, f"startup of tree {self._name!r} was cancelled")
            raise
        except Exception as exc:
            exc.add_note(f"while starting worker {child._name!r} of tree {self._name!r}")
            for worker, error in await _shutdown_in_reverse(started):
                logger.error("worker %r failed", worker._name, exc_info=error)
            raise

    async def _start_added(self) -> None:
        to_start, self._to_start = self._to_start, []
        for child in to_start:
            if self._state is not _RUNNING:
                return
            if self._children.get(child._name) is not child or child.has_started():
                continue
            try:
                await child.startup()
            except Exception as exc:
                self._child_failed(child, exc)
                self.gracefully_stop()

    def _child_exited(self, child: Worker) -> None:
        """Called by a child when its task ends."""
        if self._state is _RUNNING and self._children.get(child._name) is child:
            self._exited.append(child)
            self._wake()

    def _child_ended(self, child: Worker) -> None:
        if not child.is_stopped():  # restarted since it reported its exit
            return
        error = child._error
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


async def _shutdown_in_reverse(workers: list[Worker]) -> list[tuple[Worker, Exception]]:
    """Shut workers down one by one, last first; return the errors they raised.

    If cancelled, the workers not yet stopped are cancelled and waited for
    before the cancellation propagates.
    """
    errors: list[tuple[Worker, Exception]] = []
    pending = list(workers)
    try:
        while pending:
            worker = pending[-1]
            try:
                await worker.shutdown()
            except Exception as exc:
                errors.append((worker, exc))
            pending.pop()
    except asyncio.CancelledError:
        await _force(pending, "the tree stopping it was cancelled")
        raise
    return errors


async def _force(workers: Iterable[Worker], reason: str) -> None:
    """Cancel every running worker, then wait for all of them to end."""
    running = [w for w in workers if w.has_started() and not w.is_stopped()]
    for worker in running:
        worker._cancel(reason)
    for worker in running:
        await worker._wait_exit_uninterrupted()
