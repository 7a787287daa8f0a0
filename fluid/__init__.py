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

import typing
import warnings

from ._claim import ClaimStatus, SlotClaim
from ._consumer import AsyncConsumer
from ._cron import CronExpression
from ._decorators import (
    ConsumerOptions,
    ScheduleOptions,
    consumer,
    on_trigger,
    scheduled,
    worker,
)
from ._dispatcher import AsyncDispatcher, BaseDispatcher, Dispatcher, DispatchStatus, Event
from ._errors import (
    DuplicateWorkerName,
    FluidError,
    NotAWorker,
    QueueClosed,
    QueueFull,
    TargetError,
    TooManyRestarts,
    WorkerStartError,
    WorkerStateError,
)
from ._function import WorkerFunction
from ._lifecycle import Observer, Transition, TransitionKind
from ._oneshot import OneShotWorker
from ._policy import ErrorCallback, OnError
from ._pools import ProcessPool, ThreadPool
from ._prefork import Prefork, PreforkChild, prefork_child
from ._processes import ProcessWorker, ProcessWorkerError
from ._queue import MessageProducer, QueueConsumer, QueueConsumerWorker, RunIn
from ._runner import run, run_async_safely
from ._schedule import ScheduledWorker
from ._state import WorkerState
from ._status import (
    ProcessStatus,
    QueueStatus,
    ScheduleStatus,
    StreamStatus,
    ThreadStatus,
    TriggerStatus,
    WorkerStatus,
)
from ._supervision import Backoff, RestartType, Strategy
from ._threads import ThreadWorker
from ._tree import Workers
from ._trigger import TriggerWorker
from ._worker import STOPPING_GRACE_PERIOD, Worker

__version__ = "0.1.0"

__all__ = [
    "STOPPING_GRACE_PERIOD",
    "AsyncConsumer",
    "AsyncDispatcher",
    "Backoff",
    "BaseDispatcher",
    "ClaimStatus",
    "ConsumerOptions",
    "CronExpression",
    "DispatchStatus",
    "Dispatcher",
    "DuplicateWorkerName",
    "ErrorCallback",
    "Event",
    "FluidError",
    "MessageProducer",
    "NotAWorker",
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
    "ScheduleOptions",
    "ScheduleStatus",
    "ScheduledWorker",
    "SlotClaim",
    "Strategy",
    "StreamStatus",
    "TargetError",
    "ThreadPool",
    "ThreadStatus",
    "ThreadWorker",
    "TooManyRestarts",
    "Transition",
    "TransitionKind",
    "TriggerStatus",
    "TriggerWorker",
    "Worker",
    "WorkerFunction",
    "WorkerStartError",
    "WorkerState",
    "WorkerStateError",
    "WorkerStatus",
    "Workers",
    "consumer",
    "on_trigger",
    "prefork_child",
    "run",
    "run_async_safely",
    "scheduled",
    "worker",
]

# The earlier names of renamed objects: importable as before (``fluid.EventWorker``,
# ``from fluid import EventWorker``), silently, but neither in ``__all__`` nor in
# ``dir(fluid)``, so that each idea has one public name (docs/api/index.md lists both).
_EARLIER_NAMES: typing.Final = {
    "DispatchStats": "DispatchStatus",
    "EventKind": "TransitionKind",
    "EventStatus": "TriggerStatus",
    "EventWorker": "TriggerWorker",
    "LifecycleEvent": "Transition",
    "on_event": "on_trigger",
}
"""Earlier public name → the name it has now."""

_MOVED: typing.Final = {"set_uvloop_if_available": "fluid.utils"}
"""Names that left the front door → their home; using them here warns."""

if typing.TYPE_CHECKING:  # type checkers see the earlier names as re-exports
    from ._decorators import on_event as on_event
    from ._dispatcher import DispatchStats as DispatchStats
    from ._lifecycle import EventKind as EventKind
    from ._lifecycle import LifecycleEvent as LifecycleEvent
    from ._status import EventStatus as EventStatus
    from ._trigger import EventWorker as EventWorker
    from .utils import set_uvloop_if_available as set_uvloop_if_available
else:  # hidden from type checkers, which would otherwise accept any fluid.name

    def __getattr__(name: str) -> object:
        if name in _EARLIER_NAMES:
            return globals()[_EARLIER_NAMES[name]]
        if name in _MOVED:
            warnings.warn(
                f"fluid.{name} moved to {_MOVED[name]}.{name}: it is not part of fluid's "
                "front door any more",
                DeprecationWarning,
                stacklevel=2,
            )
            from . import utils

            return getattr(utils, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
