"""Every error fluid raises, under one base class.

The hierarchy::

    FluidError                      base of everything fluid raises
    ├── WorkerStateError            an operation is illegal in the worker's state
    │   │                           (also a RuntimeError)
    │   └── WorkerStartError        startup() of a worker that is running or stopping
    ├── DuplicateWorkerName         a tree already holds a child of that name
    │                               (also a ValueError)
    ├── QueueFull                   a bounded queue is full and the sender
    │   │                           could not wait
    │   └── QueueClosed             ... and its consumer is stopped: nobody
    │                               will make room (waiting producers too)
    ├── TooManyRestarts             a supervising tree gave up on a child that
    │                               kept ending (its last error is the cause)
    └── ProcessWorkerError          a child process died without a Python error
                                    to show (exit code, signal, unpicklable),
                                    defined in _child.py

Bad arguments raise the builtin that fits (``TypeError`` or ``ValueError``) at the
call that made them, with a message that names the offending value.
"""

from __future__ import annotations

__all__ = [
    "DuplicateWorkerName",
    "FluidError",
    "QueueClosed",
    "QueueFull",
    "TooManyRestarts",
    "WorkerStartError",
    "WorkerStateError",
]


class FluidError(Exception):
    """Base class of every error raised by fluid.

    Example:
        ```python
        try:
            await worker.startup()
        except fluid.FluidError as exc:
            print(f"fluid refused: {exc}")
        ```
    """


class WorkerStateError(FluidError, RuntimeError):
    """An operation is not allowed in the worker's current state.

    The message names the worker and its state, for example
    ``worker 'poller' cannot go from stopped to stopping``.

    Example:
        ```python
        try:
            await worker.startup()
        except fluid.WorkerStateError as exc:
            print(exc)
        ```
    """


class WorkerStartError(WorkerStateError):
    """`startup()` was called on a worker that is running or stopping.

    A worker in ``INIT``, ``STOPPED`` or ``FORCE_STOPPED`` can be started; a
    worker that is already running cannot be started twice.

    Example:
        ```python
        await worker.startup()
        try:
            await worker.startup()
        except fluid.WorkerStartError as exc:
            print(exc)  # worker 'poller' cannot start: it is running
        ```
    """


class DuplicateWorkerName(FluidError, ValueError):
    """A tree already holds a child with this name.

    Names are unique within one tree so that children can be found, stopped
    and removed by name.

    Example:
        ```python
        tree = fluid.Workers(fluid.WorkerFunction(poll, name="poll"))
        try:
            tree.add_workers(fluid.WorkerFunction(poll, name="poll"))
        except fluid.DuplicateWorkerName as exc:
            print(exc)
        ```
    """


class QueueFull(FluidError):
    """A bounded queue is full and the sender could not wait for space.

    ``send()`` raises it at once when the queue holds ``maxsize`` messages, or
    after ``timeout`` seconds when a thread asked to wait. The message was not
    queued: nothing is dropped silently.

    Example:
        ```python
        consumer = fluid.QueueConsumerWorker(handle, maxsize=100)
        try:
            consumer.send(message)
        except fluid.QueueFull:
            reject_request()
        ```
    """


class QueueClosed(QueueFull):
    """A bounded queue is full and its consumer is stopped: nobody will make room.

    A producer that would have to wait for room (``await put()``, or
    ``send(timeout=...)`` from a thread) is refused with it at once while the
    consumer is stopped, and the producers already waiting when the consumer
    stops are woken with it instead of waiting forever. The message was not
    queued. Starting the consumer again opens its queue again. A subclass of
    [`QueueFull`][fluid.QueueFull], so ``except fluid.QueueFull`` still sees
    every refusal.

    Example:
        ```python
        try:
            await consumer.put(message)
        except fluid.QueueClosed:
            keep_for_later(message)  # the consumer stopped with a full queue
        ```
    """


class TooManyRestarts(FluidError):
    """A supervising tree had to restart children more than ``max_restarts`` times in ``period``.

    A restart counts when the tree decides it, as the child ends, not when it
    is made after its backoff.

    The tree stops and this becomes its error. The child's last error is the
    ``__cause__``.

    Attributes:
        worker_name: the name of the child that kept ending.
        restarts: the restarts counted in the window.
        period: the window, in seconds.

    Example:
        ```python
        try:
            await tree.wait_for_shutdown()
        except fluid.TooManyRestarts as exc:
            print(exc.worker_name, "kept failing:", exc.__cause__)
        ```
    """

    def __init__(self, message: str, worker_name: str, restarts: int, period: float) -> None:
        super().__init__(message)
        self.worker_name = worker_name
        self.restarts = restarts
        self.period = period
