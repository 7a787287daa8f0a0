"""Lifecycle events: one observer API for every worker of a tree.

A worker emits an event at each step of its life: ``started``, ``stopping``,
and one final event, ``stopped``, ``force_stopped`` or ``crashed`` (with the
error). A supervising tree adds ``restarted`` (with the restart count and the
backoff delay it waited). An event goes to the observers of the worker itself
and then to those of each of its ancestors, so one observer on the root tree
sees everything below it: logging, metrics and UIs plug in without
subclassing.

Observers are plain functions called on the event loop, in the order they
were added. They must not block. An observer that raises is logged and the
worker goes on: observing never changes what is observed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["EventKind", "LifecycleEvent", "Observer", "emit"]

logger = logging.getLogger("fluid")

EventKind: TypeAlias = Literal[
    "started", "stopping", "stopped", "force_stopped", "crashed", "restarted"
]
"""The kinds of lifecycle event, in the order a worker can emit them."""


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """Something that happened to a worker, as told to observers.

    Attributes:
        kind: what happened (see [`EventKind`][fluid.EventKind]).
        worker: the worker it happened to.
        path: the worker's path from the root tree, ``"root/inner/name"``.
        error: for ``crashed``, the error the worker ended with.
        restarts: how many times its tree restarted the worker so far.
        delay: for ``restarted``, the backoff seconds waited before restarting.

    Example:
        ```python
        def log_event(event: fluid.LifecycleEvent) -> None:
            print(event.kind, event.path, event.error or "")

        tree.add_observer(log_event)
        ```
    """

    kind: EventKind
    worker: Worker
    path: str
    error: BaseException | None = None
    restarts: int = 0
    delay: float | None = None


Observer: TypeAlias = Callable[[LifecycleEvent], object]
"""A function that receives lifecycle events."""


def emit(
    worker: Worker,
    kind: EventKind,
    *,
    error: BaseException | None = None,
    delay: float | None = None,
) -> None:
    """Tell the observers of ``worker`` and of its ancestors about an event."""
    event: LifecycleEvent | None = None
    node: Worker | None = worker
    while node is not None:
        observers = node._observers
        if observers:
            if event is None:
                event = LifecycleEvent(
                    kind, worker, worker.worker_path, error, worker.restarts, delay
                )
            for observer in tuple(observers):
                try:
                    observer(event)
                except Exception:
                    logger.exception("observer %r of worker %r failed", observer, node._name)
        node = node._parent
