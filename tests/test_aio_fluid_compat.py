"""aio-fluid code runs on fluid: its import paths, its test suite's semantics, its handlers.

Each test holds one point of docs/aio-fluid.md: a name at its aio-fluid path,
a behaviour aio-fluid's own ``tests/utils/test_worker.py`` expects (written
here afresh from what it asserts), a handler aio-fluid accepted, or one of the
listed differences, so that the page cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import pickle
import re
import time
from abc import ABC
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import fluid
from fluid import WorkerState
from fluid.utils.dispatcher import AsyncDispatcher, Dispatcher, Event
from fluid.utils.errors import (
    FlamegraphError,
    FluidError,
    FluidValueError,
    ValidationError,
    WorkerStartError,
)
from fluid.utils.worker import (
    AsyncConsumer,
    HasWorkers,
    QueueConsumerWorker,
    Worker,
    WorkerFunction,
    Workers,
)

from .helpers import wait_until

PAGE = Path(__file__).parent.parent / "docs" / "aio-fluid.md"

# ------------------------------------------------------------------ the names

AIO_FLUID_NAMES: dict[str, tuple[str, ...]] = {
    # The public names of aio-fluid 2.12's modules: what they define, and what
    # they import from aio-fluid's own modules (the standard library's and
    # third parties' names they import are not theirs to give).
    "fluid.utils.worker": (
        "logger",
        "WorkerState",
        "HasWorkers",
        "WorkerTaskRunner",
        "Worker",
        "WorkerFunction",
        "T",
        "MessageProducer",
        "QueueConsumer",
        "QueueConsumerWorker",
        "AsyncConsumer",
        "Workers",
        "AsyncDispatcher",
        "MessageType",
        "WorkerStartError",
    ),
    "fluid.utils.dispatcher": (
        "MessageType",
        "MessageHandlerType",
        "Event",
        "BaseDispatcher",
        "Dispatcher",
        "AsyncDispatcher",
    ),
    "fluid.utils.errors": (
        "FluidError",
        "FluidValueError",
        "ValidationError",
        "WorkerStartError",
        "FlamegraphError",
    ),
}

NOT_PROVIDED = {("fluid.utils.worker", "WorkerTaskRunner")}
"""Names docs/aio-fluid.md lists as not provided, with the reason and the replacement."""


def _not_provided_on_the_page() -> set[tuple[str, str]]:
    """The ``| `module` | `Name` | reason | replacement |`` rows of the page's table."""
    text = PAGE.read_text()
    section = text.split("## Names not provided", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\| `(fluid\.utils\.\w+)` \| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", section, re.M
    )
    assert all(reason.strip() and replacement.strip() for _, _, reason, replacement in rows)
    return {(module, name) for module, name, _, _ in rows}


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in AIO_FLUID_NAMES.items() for name in names],
)
def test_every_aio_fluid_name_is_at_its_path_or_listed_as_not_provided(
    module: str, name: str
) -> None:
    found = hasattr(importlib.import_module(module), name)
    if (module, name) in NOT_PROVIDED:
        assert not found
        assert (module, name) in _not_provided_on_the_page()
    else:
        assert found, f"{module}.{name} is missing"
        assert name in importlib.import_module(module).__all__


def test_the_page_lists_as_not_provided_only_what_is_not() -> None:
    assert _not_provided_on_the_page() == NOT_PROVIDED


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (module, name)
        for module, names in AIO_FLUID_NAMES.items()
        for name in names
        if hasattr(fluid, name)
    ],
)
def test_a_name_fluid_has_too_is_fluids_own_object(module: str, name: str) -> None:
    """``isinstance`` checks and subclasses work across both import paths."""
    assert getattr(importlib.import_module(module), name) is getattr(fluid, name)


def test_the_type_variables_are_type_variables() -> None:
    from fluid.utils import dispatcher, worker

    assert isinstance(dispatcher.MessageType, TypeVar)
    assert isinstance(dispatcher.MessageHandlerType, TypeVar)
    assert worker.MessageType is dispatcher.MessageType  # aio-fluid imports it from there
    assert isinstance(worker.T, TypeVar)
    assert worker.T.__contravariant__


def test_the_logger_is_the_one_fluid_writes_to() -> None:
    from fluid.utils.worker import logger

    assert logger is logging.getLogger("fluid")


async def test_has_workers_hands_its_workers_to_a_tree() -> None:
    async def tick() -> None:
        await asyncio.sleep(0.01)

    class Service(HasWorkers):
        def __init__(self) -> None:
            self.poller = WorkerFunction(tick, name="poller")

        def get_workers(self) -> list[Worker]:
            return [self.poller]

    assert issubclass(HasWorkers, ABC)
    with pytest.raises(TypeError, match="abstract"):
        HasWorkers()  # type: ignore[abstract]
    service = Service()
    async with Workers(*service.get_workers()) as tree:
        assert tree.find("poller") == [service.poller]
        assert service.poller.is_running()


def test_the_errors_are_under_fluid_error() -> None:
    assert issubclass(FluidValueError, ValueError)
    assert issubclass(FluidValueError, FluidError)
    assert issubclass(ValidationError, FluidValueError)
    assert issubclass(FlamegraphError, FluidError)
    assert issubclass(WorkerStartError, FluidError)
    error = ValidationError("price", "must be positive", "number", -1)
    assert str(error) == "must be positive"
    assert (error.field, error.field_type, error.value) == ("price", "number", -1)
    assert str(ValidationError("name")) == "validation error"
    copy = pickle.loads(pickle.dumps(error))  # e.g. from a process pool's worker
    assert (str(copy), copy.field, copy.field_type, copy.value) == (
        "must be positive",
        "price",
        "number",
        -1,
    )


# --------------------------------------- what aio-fluid's test suite expects


class _Polite(Worker):
    async def run(self) -> None:
        while self.is_running():
            await self.sleep(10)  # woken by a stop request


class _Stubborn(Worker):
    """Never looks at its state: only a forced stop ends it."""

    async def run(self) -> None:
        await asyncio.Event().wait()


class _FirstMessage:
    """A handler object with an async ``__call__``, resolving a future with the first message."""

    def __init__(self) -> None:
        self.got: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def __call__(self, message: object) -> None:
        self.got.set_result(message)


async def test_a_consumer_in_a_tree_gets_what_was_sent_before_the_start() -> None:
    handler = _FirstMessage()
    consumer = QueueConsumerWorker(handler)
    assert consumer.queue_size() == 0
    consumer.send("test")
    assert consumer.queue_size() == 1
    tree = Workers(consumer)
    await tree.startup()
    assert consumer.is_stopping() is False
    assert await asyncio.wait_for(handler.got, 10) == "test"
    assert consumer.queue_size() == 0
    await tree.shutdown()
    assert tree.is_stopped()


async def test_a_worker_never_started_is_one_worker_and_waits_for_nothing() -> None:
    worker = _Stubborn(stopping_grace_period=2)
    assert worker.num_workers == 1
    assert list(worker.workers()) == [worker]
    await asyncio.wait_for(worker.wait_for_shutdown(), 10)  # returns at once
    assert worker.worker_state is WorkerState.INIT


async def test_a_running_worker_refuses_a_second_start_and_is_forced_to_stop() -> None:
    worker = _Stubborn(stopping_grace_period=0.2)
    await worker.startup()
    with pytest.raises(WorkerStartError):
        await worker.startup()
    assert worker.is_running()
    began = time.monotonic()
    await worker.shutdown()
    assert 0.2 <= time.monotonic() - began < 10  # its grace period, then the cancel
    assert worker.is_stopped()
    assert worker.worker_state is WorkerState.FORCE_STOPPED


async def test_an_error_of_run_is_raised_by_wait_for_shutdown() -> None:
    class Failing(Worker):
        async def run(self) -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("I'm so bad")

    worker = Failing()
    await worker.startup()
    with pytest.raises(RuntimeError, match=r"^I'm so bad$"):
        await worker.wait_for_shutdown()
    assert worker.is_stopped()


async def test_a_cancellation_of_run_nobody_asked_for_is_raised_by_wait_for_shutdown() -> None:
    class Cancelling(Worker):
        async def run(self) -> None:
            await asyncio.sleep(0.01)
            raise asyncio.CancelledError

    worker = Cancelling()
    await worker.startup()
    with pytest.raises(asyncio.CancelledError):
        await worker.wait_for_shutdown()
    assert worker.is_stopped()


async def test_a_tree_stops_when_a_child_stops_and_forces_a_stubborn_one() -> None:
    tree = Workers(_Polite(), _Stubborn(stopping_grace_period=0.2))
    assert tree.num_workers == 2
    assert tree.has_started() is False
    await tree.startup()
    assert tree.has_started()
    assert await tree.status()
    assert tree.is_running()
    polite, stubborn = list(tree.workers())
    assert polite.is_running()
    polite.gracefully_stop()
    assert polite.is_stopping()
    assert stubborn.is_running()
    await asyncio.wait_for(tree.wait_for_shutdown(), 10)
    assert tree.is_stopped()
    assert stubborn.worker_state is WorkerState.FORCE_STOPPED


def test_the_constructors_take_aio_fluids_keywords() -> None:
    async def handle(message: object) -> None:
        pass

    async def poll() -> None:
        pass

    dispatcher = AsyncDispatcher[object](message_type=lambda m: "any")
    workers: list[Worker] = [
        _Polite(name="polite", stopping_grace_period=3),
        WorkerFunction(poll, heartbeat=1, name="poll", stopping_grace_period=3),
        QueueConsumerWorker(handle, name="handle", stopping_grace_period=3),
        AsyncConsumer(dispatcher, name="dispatch", stopping_grace_period=3),
    ]
    tree = Workers(*workers, name="all", heartbeat=0.5, stopping_grace_period=4)
    assert [w.worker_name for w in tree.workers()] == ["polite", "poll", "handle", "dispatch"]
    assert {w.stopping_grace_period for w in workers} == {3.0}
    assert tree.worker_name == "all"


# --------------------------------- callables returning awaitables (the hints)


async def _record(got: list[object], message: object) -> None:
    got.append(message)


async def test_a_worker_function_of_a_lambda_wrapping_a_coroutine_runs() -> None:
    got: list[object] = []
    worker = WorkerFunction(lambda: _record(got, "tick"), heartbeat=0.01)
    async with worker:
        await wait_until(lambda: len(got) >= 2)


async def test_a_consumer_of_callables_returning_awaitables_handles_each_message() -> None:
    got: list[object] = []

    class Relay:
        def __call__(self, message: object) -> Coroutine[Any, Any, None]:
            return _record(got, ("object", message))

    handlers: list[Any] = [
        lambda message: _record(got, ("lambda", message)),
        functools.partial(_record, got),
        Relay(),
    ]
    for count, handler in enumerate(handlers, 1):
        async with QueueConsumerWorker(handler, name="relay") as consumer:
            consumer.send(1)
            await wait_until(lambda count=count: len(got) == count)  # type: ignore[misc]
    assert got == [("lambda", 1), 1, ("object", 1)]


async def test_an_async_consumer_of_an_aio_fluid_dispatcher_with_lambda_handlers() -> None:
    got: list[object] = []

    class ByKind(AsyncDispatcher[dict[str, str]]):
        def event_type(self, message: dict[str, str]) -> str:  # aio-fluid's abstract method
            return message["kind"]

    dispatcher = ByKind()
    dispatcher.register_handler("order.store", lambda m: _record(got, ("store", m["id"])))
    dispatcher.register_handler(Event("order", "audit"), functools.partial(_record, got))
    async with AsyncConsumer(dispatcher, name="orders") as consumer:
        consumer.send({"kind": "order", "id": "1"})
        await wait_until(lambda: len(got) == 2)
    assert got == [("store", "1"), {"kind": "order", "id": "1"}]


def test_a_sync_dispatcher_refuses_an_async_handler_at_registration() -> None:
    async def audit(message: object) -> None:
        pass

    dispatcher = Dispatcher[object](message_type=lambda m: "order")
    with pytest.raises(TypeError, match="register it on an AsyncDispatcher"):
        dispatcher.register_handler("order", audit)  # type: ignore[arg-type]


# ------------------------------------------------- differences on the page


async def test_difference_none_is_a_message_handed_to_the_handler() -> None:
    got: list[object] = []
    async with QueueConsumerWorker(functools.partial(_record, got)) as consumer:
        consumer.send(None)  # aio-fluid's consumers skipped it
        await wait_until(lambda: got == [None])


def test_difference_an_event_name_with_two_dots_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'type' or 'type\.tag'"):
        Event.from_string("order.audit.extra")  # aio-fluid read it as order.audit


async def test_difference_star_handlers_get_every_message() -> None:
    got: list[object] = []
    dispatcher = AsyncDispatcher[str](message_type=lambda m: m)
    dispatcher.register_handler("*", functools.partial(_record, got))
    assert await dispatcher.dispatch("order") == 1  # in aio-fluid: 0, "*" was a type
    assert got == ["order"]


def test_difference_get_handlers_gives_a_copy() -> None:
    dispatcher = Dispatcher[str](message_type=lambda m: m)
    dispatcher.register_handler("a", print)
    handlers = dispatcher.get_handlers("a")
    assert handlers == {"": print}
    handlers.clear()  # aio-fluid gave its own dict: this would unregister
    assert dispatcher.get_handlers("a") == {"": print}


async def test_difference_async_dispatch_awaits_the_handlers_in_turn() -> None:
    running: list[int] = []
    most = 0

    async def handler(message: object) -> None:
        nonlocal most
        running.append(1)
        most = max(most, len(running))
        await asyncio.sleep(0.001)
        running.pop()

    dispatcher = AsyncDispatcher[str](message_type=lambda m: m)
    for tag in "abc":
        dispatcher.register_handler(f"x.{tag}", handler)
    assert await dispatcher.dispatch("x") == 3
    assert most == 1  # aio-fluid gathered them: 3 at once
    concurrent = AsyncDispatcher[str](message_type=lambda m: m, concurrent=True)
    for tag in "abc":
        concurrent.register_handler(f"x.{tag}", handler)
    await concurrent.dispatch("x")
    assert most == 3  # concurrent=True is aio-fluid's way


async def test_difference_status_is_a_worker_status() -> None:
    worker = _Polite(name="polite")
    async with worker:
        status = await worker.status()
    assert status["state"] is WorkerState.RUNNING  # aio-fluid: {"running": True, "stopping": False}
    assert "running" not in status
    assert "stopping" not in status


async def test_difference_after_shutdown_reasons_and_codes() -> None:
    heard: list[tuple[str, int]] = []

    class Reporting(Worker):
        def __init__(self, body: Awaitable[object] | None, grace: float = 10) -> None:
            super().__init__(stopping_grace_period=grace)
            self.body = body

        async def run(self) -> None:
            if self.body is None:
                while self.is_running():
                    await self.sleep(10)
            else:
                await self.body

        def after_shutdown(self, reason: str, code: int = 0) -> None:
            heard.append((reason, code))

    async def fail() -> None:
        raise RuntimeError("boom")

    clean = Reporting(None)
    await clean.startup()
    await clean.shutdown()
    failing = Reporting(fail())
    await failing.startup()
    with pytest.raises(RuntimeError):
        await failing.wait_for_shutdown()
    stuck = Reporting(asyncio.Event().wait(), grace=0.05)
    await stuck.startup()
    await stuck.shutdown()
    # aio-fluid: ("normal shutdown", 0), ("boom", 2), ("forced shutdown", 1)
    assert heard == [("stopped", 0), ("failed: RuntimeError: boom", 1), ("force stopped", 1)]


async def test_difference_a_stopped_worker_starts_again() -> None:
    worker = _Polite()
    await worker.startup()
    await worker.shutdown()
    await worker.startup()  # aio-fluid: WorkerStartError once started, ever
    assert worker.is_running()
    await worker.shutdown()


def test_difference_a_trees_workers_are_its_leaves() -> None:
    inner = Workers(_Polite(name="a"), _Polite(name="b"), name="inner")
    outer = Workers(inner, _Polite(name="c"))
    assert [w.worker_name for w in outer.workers()] == ["a", "b", "c"]  # aio-fluid: inner, c
    assert outer.num_workers == 3  # aio-fluid: 2
    assert [w.worker_name for w in outer.children] == ["inner", "c"]
