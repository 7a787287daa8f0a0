"""The lifecycle states of a worker and the transitions between them.

::

                 startup()
      INIT ─────────────────► RUNNING ──── run() returns or raises ───┐
                                │                                      │
                gracefully_stop()                                      ▼
                                │                                  STOPPED
                                ▼                                      ▲
                             STOPPING ──── run() returns ──────────────┘
                                │
             grace period over, │ task cancelled
                                ▼
                          FORCE_STOPPED

    STOPPED and FORCE_STOPPED go back to RUNNING on startup(): supervisors
    restart workers. RUNNING can also become FORCE_STOPPED directly when the
    worker's task is cancelled from outside (its parent was forced, or the
    event loop is closing).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "WorkerState"]


class WorkerState(StrEnum):
    """The lifecycle state of a worker.

    The value is a plain string, so a state serialises to JSON as is.

    Example:
        ```python
        worker = fluid.WorkerFunction(poll, heartbeat=1)
        assert worker.worker_state is fluid.WorkerState.INIT
        async with worker:
            assert worker.worker_state == "running"
        assert worker.worker_state is fluid.WorkerState.STOPPED
        ```
    """

    INIT = "init"
    """Created and never started."""
    RUNNING = "running"
    """Started: `on_startup()` is running, or it completed and `run()` is running."""
    STOPPING = "stopping"
    """A graceful stop was requested: `run()` should return at its next safe point."""
    STOPPED = "stopped"
    """Ended on its own or after a graceful stop, possibly with an error."""
    FORCE_STOPPED = "force_stopped"
    """Cancelled because it did not stop within its grace period."""

    @property
    def is_final(self) -> bool:
        """True for ``STOPPED`` and ``FORCE_STOPPED``: the worker owns no task."""
        return self in FINAL_STATES

    def can_become(self, new: WorkerState) -> bool:
        """Whether the lifecycle allows going from this state to ``new``.

        Example:
            ```python
            assert WorkerState.RUNNING.can_become(WorkerState.STOPPING)
            assert not WorkerState.INIT.can_become(WorkerState.STOPPING)
            ```
        """
        return new in _TRANSITIONS[self]


FINAL_STATES = frozenset({WorkerState.STOPPED, WorkerState.FORCE_STOPPED})
"""The states of a worker that ended (``is_final``), as a set for the hot paths."""

_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.INIT: frozenset({WorkerState.RUNNING}),
    WorkerState.RUNNING: frozenset(
        {WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.FORCE_STOPPED}
    ),
    WorkerState.STOPPING: frozenset({WorkerState.STOPPED, WorkerState.FORCE_STOPPED}),
    WorkerState.STOPPED: frozenset({WorkerState.RUNNING}),
    WorkerState.FORCE_STOPPED: frozenset({WorkerState.RUNNING}),
}
