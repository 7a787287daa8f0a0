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
    ├── ProcessWorkerError          a child process died without a Python error
    │                               to show (exit code, signal, unpicklable),
    │                               defined in _child.py
    ├── TargetError                 a target ``"package.module:attribute"``
    │                               cannot be loaded (also a ValueError)
    └── NotAWorker                  a worker factory returned something else
                                    than a Worker (also a TypeError)

Bad arguments raise the builtin that fits (``TypeError`` or ``ValueError``) at the
call that made them, with a message that names the offending value.
"""

from __future__ import annotations

__all__ = [
    "DuplicateWorkerName",
    "FluidError",
    "NotAWorker",
    "QueueClosed",
    "QueueFull",
    "TargetError",
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


class TargetError(FluidError, ValueError):
    """A target ``"package.module:attribute"`` cannot be loaded; the message says why.

    The spec is malformed, its module is not found or fails to import (the
    message then holds the import's traceback), the attribute is missing, or
    it is neither a Worker nor a function returning one. The ``fluid``
    command prints the message and exits 2; ``fluid.Prefork`` raises it at
    the call for a malformed spec.

    A ``ValueError``, not an ``ImportError``: what is wrong is the value the
    caller gave (a string naming something that is not a loadable worker),
    and most of the reasons are no import failure at all (a spec without
    ``:``, a missing attribute, an attribute that is not a worker). Code that
    checked arguments with ``except ValueError`` sees it.

    Example:
        ```python
        from fluid.cli import TargetError, load_target

        try:
            load_target("myapp.workers:missing")
        except TargetError as exc:
            print(exc)  # module 'myapp.workers' has no attribute 'missing'
        ```
    """


class NotAWorker(FluidError, TypeError):
    """A worker factory returned something else than a Worker.

    [`fluid.run`][fluid.run], ``fluid.Prefork`` children and the web
    integrations call the factory they were given and check what it
    returns: a coroutine (an ``async def`` factory) or any other object is
    refused with this error, which names the factory and what it returned.
    A ``TypeError``, as the value has the wrong type; the ``fluid`` command
    exits 2 on it.

    Example:
        ```python
        def build() -> fluid.Worker:
            return "not a worker"  # a bug

        try:
            fluid.run(build)
        except fluid.NotAWorker as exc:
            print(exc)  # <function build ...> returned 'not a worker', not a fluid.Worker
        ```
    """
