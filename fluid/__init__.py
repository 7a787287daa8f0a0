"""fluid: an asyncio-native worker framework.

One small core, the [`Worker`][fluid.Worker] lifecycle state machine, and a
library built by composing it: functions in a loop, queue consumers, fan-out
consumers and trees that start in order and stop in reverse.

Example:
    ```python
    import asyncio
    import fluid

    async def tick() -> None:
        print("tick")

    async def main() -> None:
        async with fluid.Workers(fluid.WorkerFunction(tick, heartbeat=1)):
            await asyncio.sleep(3)

    asyncio.run(main())
    ```
"""

from __future__ import annotations

from ._consumer import AsyncConsumer
from ._cron import CronExpression
from ._decorators import ConsumerOptions, consumer, on_event, worker
from ._dispatcher import AsyncDispatcher, BaseDispatcher, Dispatcher, DispatchStats, Event
from ._errors import (
    DuplicateWorkerName,
    FluidError,
    QueueClosed,
    QueueFull,
    TooManyRestarts,
    WorkerStartError,
    WorkerStateError,
)
from ._function import WorkerFunction
from ._lifecycle import EventKind, LifecycleEvent, Observer
from ._oneshot import OneShotWorker
from ._policy import ErrorCallback, OnError
from ._pools import ProcessPool, ThreadPool
from ._prefork import Prefork, PreforkChild, prefork_child
from ._processes import ProcessWorker, ProcessWorkerError
from ._queue import MessageProducer, QueueConsumer, QueueConsumerWorker, RunIn
from ._runner import run, run_async_safely, set_uvloop_if_available
from ._schedule import ScheduledWorker, scheduled
from ._state import WorkerState
from ._status import (
    EventStatus,
    ProcessStatus,
    QueueStatus,
    ScheduleStatus,
    ThreadStatus,
    WorkerStatus,
)
from ._supervision import Backoff, RestartType, Strategy
from ._threads import ThreadWorker
from ._tree import Workers
from ._trigger import EventWorker
from ._worker import STOPPING_GRACE_PERIOD, Worker

__version__ = "0.1.0"

__all__ = [
    "STOPPING_GRACE_PERIOD",
    "AsyncConsumer",
    "AsyncDispatcher",
    "Backoff",
    "BaseDispatcher",
    "ConsumerOptions",
    "CronExpression",
    "DispatchStats",
    "Dispatcher",
    "DuplicateWorkerName",
    "ErrorCallback",
    "Event",
    "EventKind",
    "EventStatus",
    "EventWorker",
    "FluidError",
    "LifecycleEvent",
    "MessageProducer",
    "Observer",
    "OnError",
    "OneShotWorker",
    "Prefork",
    "PreforkChild",
    "ProcessPool",
    "ProcessStatus",
    "ProcessWorker",
    "ProcessWorkerError",
    "QueueClosed",
    "QueueConsumer",
    "QueueConsumerWorker",
    "QueueFull",
    "QueueStatus",
    "RestartType",
    "RunIn",
    "ScheduleStatus",
    "ScheduledWorker",
    "Strategy",
    "ThreadPool",
    "ThreadStatus",
    "ThreadWorker",
    "TooManyRestarts",
    "Worker",
    "WorkerFunction",
    "WorkerStartError",
    "WorkerState",
    "WorkerStateError",
    "WorkerStatus",
    "Workers",
    "consumer",
    "on_event",
    "prefork_child",
    "run",
    "run_async_safely",
    "scheduled",
    "set_uvloop_if_available",
    "worker",
]
