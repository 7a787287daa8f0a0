"""Lifecycle transitions: one observer API for every worker of a tree.

A worker tells of a transition at each step of its life: ``started``,
``stopping``, and one final transition, ``stopped``, ``force_stopped`` or
``crashed`` (with the error). A supervising tree adds ``restarted`` (with the
restart count and the backoff delay it waited). A transition goes to the
observers of the worker itself and then to those of each of its ancestors, so
one observer on the root tree sees everything below it: logging, metrics and
UIs plug in without subclassing.

They are called transitions, not events, because in fluid an ``Event`` is
the dispatcher's routing key (aio-fluid's name) and a trigger is what a
``TriggerWorker`` runs on: one name, one meaning. ``LifecycleEvent`` and
``EventKind``, their earlier names, stay as aliases.

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

__all__ = ["EventKind", "LifecycleEvent", "Observer", "Transition", "TransitionKind", "emit"]

logger = logging.getLogger("fluid")

TransitionKind: TypeAlias = Literal[
    "started", "stopping", "stopped", "force_stopped", "crashed", "restarted"
]
"""The kinds of lifecycle transition, in the order a worker can go through them.

``EventKind`` is an alias kept for earlier code.
"""


@dataclass(frozen=True, slots=True)
class Transition:
    """A step in a worker's life, as told to observers.

    ``LifecycleEvent`` is an alias kept for earlier code.

    Attributes:
        kind: what happened (see [`TransitionKind`][fluid.TransitionKind]).
        worker: the worker it happened to.
        path: the worker's path from the root tree, ``"root/inner/name"``.
        error: for ``crashed``, the error the worker ended with.
        restarts: how many times its tree restarted the worker so far.
        delay: for ``restarted``, the backoff seconds waited before restarting.

    Example:
        ```python
        def log_transition(transition: fluid.Transition) -> None:
            print(transition.kind, transition.path, transition.error or "")

        tree.add_observer(log_transition)
        ```
    """

    kind: TransitionKind
    worker: Worker
    path: str
    error: BaseException | None = None
    restarts: int = 0
    delay: float | None = None


Observer: TypeAlias = Callable[[Transition], object]
"""A function that receives lifecycle transitions."""

# Kept for earlier code: the names these had before "event" kept one meaning.
LifecycleEvent = Transition
EventKind: TypeAlias = TransitionKind


def emit(
    worker: Worker,
    kind: TransitionKind,
    *,
    error: BaseException | None = None,
    delay: float | None = None,
) -> None:
    """Tell the observers of ``worker`` and of its ancestors about a transition."""
    transition: Transition | None = None
    node: Worker | None = worker
    while node is not None:
        observers = node._observers
        if observers:
            if transition is None:
                transition = Transition(
                    kind, worker, worker.worker_path, error, worker.restarts, delay
                )
            for observer in tuple(observers):
                try:
                    observer(transition)
                except Exception:
                    logger.exception("observer %r of worker %r failed", observer, node._name)
        node = node._parent
