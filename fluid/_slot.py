"""Slot: a child's place in its tree, the narrow protocol between a worker and its parent.

Why a slot, and not fields on the worker:

* **Membership is checked in one place.** A child's end reaches its tree a
  loop turn after it happened (observers run first, the tree's task wakes
  later), and a restart waits for its backoff. Meanwhile the child can be
  removed, stopped on request, or stopped for a group restart. Every exit and
  every pending restart carries the slot, not the worker, and the slot says
  whether the tree still acts on that child. A worker removed and added back
  gets a new slot, so a stale exit or restart of its old membership cannot
  touch the new one.
* **The worker knows nothing of trees.** It holds its slot and, from the last
  step of its task, calls ``Slot.exited()``; paths and event bubbling read
  ``Slot.parent``. The tree owns the slot and decides what an exit means.
* **What a restart of the tree resets.** The restart type belongs to the
  membership. The backoff step, the hold and a restart in progress belong to
  one run of the tree: a tree that starts again (an outer supervisor
  restarting it) starts its children afresh, as an Erlang supervisor does, so
  a child that keeps failing takes the restarted tree down again within its
  restart intensity and the failure escalates level by level. The restart
  count is the child's public history (``Worker.restarts``) and is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._state import WorkerState

if TYPE_CHECKING:
    from ._supervision import RestartType
    from ._tree import Workers
    from ._worker import Worker

__all__ = ["Slot"]

_ACTIVE = frozenset((WorkerState.RUNNING, WorkerState.STOPPING))


class Slot:
    """One child's membership of one tree; created, read and written by that tree only.

    Creating the slot joins the worker to the tree under ``name``.

    The tree's supervisor updates ``restarts``, ``backoff_step`` and
    ``restarting``; the tree updates ``member`` and ``held``. The worker only
    calls ``exited()`` and reads ``parent`` and ``restarts``.

    Attributes:
        tree: the tree that owns the slot.
        worker: the child.
        restart: the child's restart type in this tree.
        restarts: how many times the tree's supervisor restarted the child.
        backoff_step: consecutive restarts in this run of the tree (the next
            backoff delay grows with it).
        member: False once the child was removed: nothing it does reaches the tree.
        held: stopped on request (``stop_workers``): neither restarted nor
            started with the tree until ``start_workers``.
        restarting: stopped by the supervisor for a restart that is pending.
    """

    __slots__ = (
        "_on_exit",
        "backoff_step",
        "held",
        "member",
        "restart",
        "restarting",
        "restarts",
        "tree",
        "worker",
    )

    def __init__(
        self,
        tree: Workers,
        worker: Worker,
        name: str,
        restart: RestartType,
        on_exit: Callable[[Slot], None],
    ) -> None:
        self.tree = tree
        self.worker = worker
        self.restart: RestartType = restart
        self.restarts = 0
        self.backoff_step = 0
        self.member = True
        self.held = False
        self.restarting = False
        self._on_exit = on_exit
        # Joining a tree sets the worker's name in the tree (a derived name
        # may get a suffix), its slot and its parent: the worker does it.
        worker._join(self, name)

    def __repr__(self) -> str:
        flags = "".join(f" {f}" for f in ("held", "restarting") if getattr(self, f))
        status = "" if self.member else " removed"
        return f"<Slot {self.worker.worker_name!r} of {self.tree.worker_name!r}{status}{flags}>"

    @property
    def parent(self) -> Workers | None:
        """The tree while the child belongs to it, else None."""
        return self.tree if self.member else None

    @property
    def watched(self) -> bool:
        """True while the tree acts on the child's end: a member, not held, not restarting."""
        return self.member and not self.held and not self.restarting

    @property
    def to_start(self) -> bool:
        """True when the tree should start the child now: watched and not running.

        Not when it was removed, stopped on request or is restarting, nor
        when someone started it by hand meanwhile; a stopped one starts again.
        """
        # watched, written out: the tree asks this of each child it starts
        return (
            self.member
            and not self.held
            and not self.restarting
            and self.worker.worker_state not in _ACTIVE
        )

    def exited(self) -> None:
        """Called by the worker from the last step of its task: tell the tree, if it still cares."""
        if self.member:
            self._on_exit(self)

    def leave(self) -> None:
        """The child is removed from its tree: from now on its end changes nothing."""
        self.member = False
        self.held = False
        self.worker._leave(self)
        self.restarting = False

    def new_run(self) -> None:
        """The tree starts a new run: the child starts afresh (no hold, backoff from 0)."""
        self.held = False
        self.restarting = False
        self.backoff_step = 0
