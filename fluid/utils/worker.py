"""Workers at aio-fluid's import path: ``from fluid.utils.worker import Workers``.

Every public name of aio-fluid's ``fluid.utils.worker`` is here but one: the
classes are fluid's own (``Workers is fluid.Workers``), so ``isinstance``
checks and subclasses work across both paths. ``HasWorkers`` is defined here,
as in aio-fluid, for the objects that hand their workers to a tree.
``WorkerTaskRunner``, aio-fluid's runner of a worker's task, is not: a fluid
worker runs its own task (``startup()``, ``shutdown()``,
``wait_for_shutdown()``). docs/aio-fluid.md lists every difference.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

from .._consumer import AsyncConsumer
from .._dispatcher import AsyncDispatcher
from .._errors import WorkerStartError
from .._function import WorkerFunction
from .._queue import MessageProducer, QueueConsumer, QueueConsumerWorker
from .._state import WorkerState
from .._tree import Workers
from .._worker import STOPPING_GRACE_PERIOD, Worker
from .dispatcher import MessageType

__all__ = [
    "STOPPING_GRACE_PERIOD",
    "AsyncConsumer",
    "AsyncDispatcher",
    "HasWorkers",
    "MessageProducer",
    "MessageType",
    "QueueConsumer",
    "QueueConsumerWorker",
    "T",
    "Worker",
    "WorkerFunction",
    "WorkerStartError",
    "WorkerState",
    "Workers",
    "logger",
]

logger = logging.getLogger("fluid")
"""The logger fluid's workers and trees write to: ``"fluid"``.

aio-fluid's was named after this module, ``"fluid.utils.worker"``; a logging
configuration for that name no longer reaches the workers' messages, one for
``"fluid"`` does.
"""

T = TypeVar("T", contravariant=True)
"""aio-fluid's type variable of ``MessageProducer``, kept for code that imports it."""


class HasWorkers(ABC):
    """An object that hands workers to a tree: a service, a plugin, an app part.

    As in aio-fluid, the one method to implement is ``get_workers()``; add
    what it returns to a tree with ``workers.add_workers(*obj.get_workers())``.

    Example:
        ```python
        from fluid.utils.worker import HasWorkers

        class Billing(HasWorkers):
            def __init__(self) -> None:
                self.invoices = fluid.QueueConsumerWorker(send_invoice)

            def get_workers(self) -> list[fluid.Worker]:
                return [self.invoices]

        tree = fluid.Workers(*Billing().get_workers())
        ```
    """

    @abstractmethod
    def get_workers(self) -> Sequence[Worker]:
        """The workers this object wants run in a tree."""
