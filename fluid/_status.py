"""The typed, JSON-serialisable shapes returned by ``status()``."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from ._claim import ClaimStatus
from ._state import WorkerState

__all__ = [
    "EventStatus",
    "ProcessStatus",
    "QueueStatus",
    "ScheduleStatus",
    "StreamStatus",
    "ThreadStatus",
    "TriggerStatus",
    "WorkerStatus",
]


class QueueStatus(TypedDict):
    """The books of a queue consumer, under the ``queue`` key of its status.

    They always balance: ``sent = handled + failed + taken + size +
    in_flight``; no message vanishes.

    Attributes:
        sent: messages accepted into the queue (``send``, ``put``), ever.
        size: messages queued and not yet taken by the consumer.
        capacity: the queue's ``maxsize``, or None when unbounded.
        handled: messages whose handler returned without error (for a
            subclass reading ``messages()`` itself: messages given to ``run``).
        failed: messages whose handler raised (reported to ``on_error``).
        in_flight: messages taken from the queue whose handler is running.
        taken: messages removed unhandled with ``take_undelivered()``.
        undelivered: messages left in the queue when the worker last stopped
            (still there and counted in ``size``, see ``take_undelivered()``).

    Example:
        ```python
        figures = (await consumer.status())["queue"]
        print(f"{figures['size']} queued, {figures['handled']} handled")
        ```
    """

    sent: int
    size: int
    capacity: int | None
    handled: int
    failed: int
    in_flight: int
    taken: int
    undelivered: int


class TriggerStatus(TypedDict):
    """Figures of a trigger worker, under the ``event`` key of its status.

    The key keeps its earlier name, ``event``, so that what reads a status
    reads it as before; ``EventStatus`` is an alias kept for earlier code.

    Attributes:
        runs: runs that ended, returning or raising.
        failures: runs that raised (reported to ``on_error``).
        pending: a trigger is waiting for a run to start.
        in_progress: a run is in progress.

    Example:
        ```python
        status = await worker.status()
        print(status["event"])  # {"runs": 3, "failures": 0, "pending": False, ...}
        ```
    """

    runs: int
    failures: int
    pending: bool
    in_progress: bool


# Kept for earlier code: the name it had before "event" kept one meaning.
EventStatus = TriggerStatus


class ThreadStatus(TypedDict):
    """Figures of a thread worker's thread, under the ``thread`` key of its status.

    Attributes:
        name: the name of the thread of the last run (``fluid:<worker name>``),
            or ``None`` before the first start.
        alive: whether that thread is still running.
        abandoned: whether it ignored a stop past the grace period and was
            left running.

    Example:
        ```python
        status = await worker.status()
        print(status["thread"])  # {"name": "fluid:poll", "alive": True, "abandoned": False}
        ```
    """

    name: str | None
    alive: bool
    abandoned: bool


class ProcessStatus(TypedDict):
    """Figures of a process worker's child, under the ``process`` key of its status.

    Attributes:
        pid: the process id of the current or last child, ``None`` before the
            first start.
        alive: whether that child is still running.
        exitcode: its exit code once it ended (negative: killed by that
            signal), else ``None``.

    Example:
        ```python
        status = await worker.status()
        print(status["process"])  # {"pid": 4242, "alive": True, "exitcode": None}
        ```
    """

    pid: int | None
    alive: bool
    exitcode: int | None


class ScheduleStatus(TypedDict):
    """Figures of a scheduled or one-shot worker, under the ``schedule`` key of its status.

    Attributes:
        next_run: when the next run is due, as an ISO 8601 wall-clock time,
            or ``None`` (paused, running, stopped, or nothing left to run).
        runs: runs that ended since the worker last started, returning or raising.
        failures: runs that raised (reported to ``on_error``).
        overruns: slots missed because a run overran or the loop was blocked.
        skipped: missed slots that were dropped (``missed="skip"``).
        drift: seconds the last scheduled run started after its due time
            (``None`` before the first one).
        paused: the schedule is paused.
        in_progress: a run is in progress.
        claims: with ``claim=``, the slot claims of a cluster-wide schedule
            (won, lost, failed, late, failing).

    Example:
        ```python
        status = await worker.status()
        print(status["schedule"])  # {"next_run": "2025-01-01T09:00:00+00:00", ...}
        ```
    """

    next_run: str | None
    runs: int
    failures: int
    overruns: int
    skipped: int
    drift: float | None
    paused: bool
    in_progress: bool
    claims: NotRequired[ClaimStatus]


class StreamStatus(TypedDict):
    """Figures of a stream consumer, under the ``stream`` key of its status.

    Its ``queue`` figures are the local buffer's books; these are the
    broker's side of the same entries.

    Attributes:
        stream: the stream's name.
        group: the consumer group's name.
        consumer: this consumer's name in the group.
        connected: whether the last call to the broker succeeded.
        held: entries this consumer holds: buffered, in flight, or handled
            and waiting for their ack (at most ``maxsize``).
        read: entries read as new, ever.
        claimed: entries taken over from idle consumers (or own pending ones
            read again at start), ever.
        acked: entries acked after their handler returned, ever.
        released: entries given back for another delivery (a failure, a
            ``Retry``, or left at a stop), ever.
        dead_lettered: entries moved to the dead letters, ever.
        own_pending: entries pending for this consumer on the broker, or
            ``None`` when it could not be asked.
        lag: entries of the stream the group has not read, or ``None``.

    Example:
        ```python
        status = await consumer.status()
        print(status["stream"]["lag"], status["stream"]["own_pending"])
        ```
    """

    stream: str
    group: str
    consumer: str
    connected: bool
    held: int
    read: int
    claimed: int
    acked: int
    released: int
    dead_lettered: int
    own_pending: int | None
    lag: int | None


class WorkerStatus(TypedDict):
    """What ``await worker.status()`` returns: plain data, ready for ``json.dumps``.

    Attributes:
        name: the worker's name.
        path: its names from the root tree down, ``"root/inner/name"``.
        state: its lifecycle state (a string enum).
        restarts: how many times its supervising tree restarted it.
        uptime: seconds since it last started, while it runs; else ``None``.
        error: the error it ended with, as ``"Type: message"``, or ``None``.
        queue: for queue consumers, their figures.
        event: for trigger workers, their figures.
        thread: for thread workers, their thread's figures.
        process: for process workers, their child process's figures.
        schedule: for scheduled and one-shot workers, their figures.
        workers: for trees, the status of each child, in start order.
        stream: for stream consumers, their figures.
        ready: present and False while a worker cannot do its work though it
            runs (a stream consumer whose broker is unreachable): status
            routes answer 503 for it.

    Example:
        ```python
        status = await tree.status()
        print(json.dumps(status, indent=2))
        ```
    """

    name: str
    path: str
    state: WorkerState
    restarts: int
    uptime: float | None
    error: str | None
    queue: NotRequired[QueueStatus]
    event: NotRequired[TriggerStatus]
    thread: NotRequired[ThreadStatus]
    process: NotRequired[ProcessStatus]
    schedule: NotRequired[ScheduleStatus]
    workers: NotRequired[list[WorkerStatus]]
    stream: NotRequired[StreamStatus]
    ready: NotRequired[bool]
