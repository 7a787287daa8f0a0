"""Workers at their earlier import path: ``from fluid.utils.worker import Workers``."""

from __future__ import annotations

from .._consumer import AsyncConsumer
from .._function import WorkerFunction
from .._queue import MessageProducer, QueueConsumer, QueueConsumerWorker
from .._state import WorkerState
from .._tree import Workers
from .._worker import STOPPING_GRACE_PERIOD, Worker

__all__ = [
    "STOPPING_GRACE_PERIOD",
    "AsyncConsumer",
    "MessageProducer",
    "QueueConsumer",
    "QueueConsumerWorker",
    "Worker",
    "WorkerFunction",
    "WorkerState",
    "Workers",
]
