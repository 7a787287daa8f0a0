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

from typing import TYPE_CHECKING

from ._state import WorkerState

if TYPE_CHECKING:
    from ._supervision import RestartType
    from ._tree import Workers
    from ._worker import Worker

__all__ = ["Slot"]

_ACTIVE = frozenset((WorkerState.RUNNING, WorkerState.STOPPING))
# Slot._flags: three bits of membership, then the restart type's index
_MEMBER, _HELD, _RESTARTING = 1, 2, 4
_MEMBERSHIP = _MEMBER | _HELD | _RESTARTING
_RESTART_SHIFT = 3
_RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")
_RESTART_BITS = {kind: i << _RESTART_SHIFT for i, kind in enumerate(_RESTART_TYPES)}


class Slot:
    """One child's membership of one tree; created, read and written by that tree only.

    Creating the slot joins the worker to the tree under ``name``.

    The tree's supervisor updates ``restarts``, ``backoff_step`` and
    ``restarting``; the tree updates ``held``, and ``member`` through
    ``leave()``. The worker only calls ``exited()`` and reads ``parent`` and
    ``restarts``.

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

    __slots__ = ("_flags", "backoff_step", "restarts", "tree", "worker")

    def __init__(self, tree: Workers, worker: Worker, name: str, restart: RestartType) -> None:
        self.tree = tree
        self.worker = worker
        self.restarts = 0
        self.backoff_step = 0
        # member, held, restarting and the restart type in one int: a tree
        # of ten thousand children keeps ten thousand slots (24 bytes less
        # each), and what the tree asks of each child it starts is whether
        # the membership bits are "member" alone: one mask, one comparison
        self._flags = _MEMBER | _RESTART_BITS[restart]
        # Joining a tree sets the worker's name in the tree (a derived name
        # may get a suffix), its slot and its parent: the worker does it.
        worker._join(self, name)

    def __repr__(self) -> str:
        flags = "".join(f" {f}" for f in ("held", "restarting") if getattr(self, f))
        status = "" if self.member else " removed"
        return f"<Slot {self.worker.worker_name!r} of {self.tree.worker_name!r}{status}{flags}>"

    @property
    def restart(self) -> RestartType:
        """The child's restart type in this tree."""
        return _RESTART_TYPES[self._flags >> _RESTART_SHIFT]

    @property
    def member(self) -> bool:
        """False once the child was removed: nothing it does reaches the tree."""
        return self._flags & _MEMBER != 0

    @property
    def held(self) -> bool:
        """Stopped on request (``stop_workers``): not restarted, not started with the tree."""
        return self._flags & _HELD != 0

    @held.setter
    def held(self, value: bool) -> None:
        self._flags = self._flags | _HELD if value else self._flags & ~_HELD

    @property
    def restarting(self) -> bool:
        """Stopped by the supervisor for a restart that is pending."""
        return self._flags & _RESTARTING != 0

    @restarting.setter
    def restarting(self, value: bool) -> None:
        self._flags = self._flags | _RESTARTING if value else self._flags & ~_RESTARTING

    @property
    def parent(self) -> Workers | None:
        """The tree while the child belongs to it, else None."""
        return self.tree if self._flags & _MEMBER else None

    @property
    def watched(self) -> bool:
        """True while the tree acts on the child's end: a member, not held, not restarting."""
        return self._flags & _MEMBERSHIP == _MEMBER

    @property
    def to_start(self) -> bool:
        """True when the tree should start the child now: watched and not running.

        Not when it was removed, stopped on request or is restarting, nor
        when someone started it by hand meanwhile; a stopped one starts again.
        """
        return self._flags & _MEMBERSHIP == _MEMBER and self.worker.worker_state not in _ACTIVE

    def exited(self) -> None:
        """Called by the worker from the last step of its task: tell the tree, if it still cares."""
        if self._flags & _MEMBER:
            self.tree._child_exited(self)

    def leave(self) -> None:
        """The child is removed from its tree: from now on its end changes nothing."""
        self._flags &= ~_MEMBERSHIP  # neither a member, nor held, nor restarting

    def new_run(self) -> None:
        """The tree starts a new run: the child starts afresh (no hold, backoff from 0)."""
        self._flags &= ~(_HELD | _RESTARTING)
        self.backoff_step = 0
