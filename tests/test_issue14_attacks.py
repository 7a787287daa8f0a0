"""Issue 14, attacked as a hostile aio-fluid user moving over would.

The review found eight defects, each written as a strict xfail and fixed
since (the tests now hold the fixes): a functools.wraps wrapper refused, a
child re-added to its own stopped tree, workers named after fluid's wrapper,
a sync handler's Task reported failed, the busy-loop warning for a backlog,
ValidationError's pickling and args, a thread handler's coroutine dropped.
The other tests pin what was attacked and held: handlers as "any callable returning an
awaitable" through cancellation and forced stops, the sync dispatcher's
refusals, a worker moving from a stopped tree, names with ``/``, the busy-loop
warning, cron across DST in more zones, the aio-fluid error classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

import pytest

import fluid
import fluid.redis
from fluid import WorkerState
from fluid import _function as fluid_function
from fluid.utils.errors import ValidationError

from .helpers import wait_until
from .test_cron import fires_at

P = ParamSpec("P")
R = TypeVar("R")


def traced(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A decorator as users write them: a plain ``def`` wrapper, ``functools.wraps``.

    ``mypy --strict`` accepts what it returns wherever a callable returning
    an awaitable goes; ``functools.wraps`` copies ``fn``'s ``__annotations__``
    (``return: 'None'``) onto the wrapper, a plain function.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return fn(*args, **kwargs)

    return wrapper


async def tick() -> None:
    await asyncio.sleep(0.001)


async def handle(message: str) -> None:
    await asyncio.sleep(0)


def names(tree: fluid.Workers) -> list[str]:
    return [child.worker_name for child in tree.children]


# ------------------------------------------------------------------ defects


@pytest.mark.parametrize(
    "build",
    [
        lambda: fluid.WorkerFunction(traced(tick)),
        lambda: fluid.QueueConsumerWorker[str](traced(handle)),
        lambda: fluid.ScheduledWorker(traced(tick), interval=60),
        lambda: fluid.AsyncDispatcher[str](lambda m: m).register_handler("a", traced(handle)),
    ],
    ids=["worker_function", "queue_consumer", "scheduled", "async_dispatcher"],
)
def test_a_functools_wraps_wrapper_of_an_async_function_is_accepted(
    build: Callable[[], object],
) -> None:
    build()


async def test_adding_a_child_again_to_its_own_stopped_tree_is_refused() -> None:
    again = fluid.WorkerFunction(tick)
    tree = fluid.Workers(again, fluid.WorkerFunction(tick, name="x"), name="t")
    async with tree:
        pass
    assert tree.worker_state is WorkerState.STOPPED
    with contextlib.suppress(ValueError):
        tree.add_workers(again)
    assert names(tree) == ["tick", "x"]
    assert again.worker_path == "t/tick"


class Poller:
    """A callable object whose ``__call__`` returns a coroutine: no ``__name__``."""

    def __call__(self) -> Coroutine[Any, Any, None]:
        return tick()


@pytest.mark.parametrize(
    "build",
    [
        lambda fn: fluid.WorkerFunction(fn),
        lambda fn: fluid.ScheduledWorker(fn, interval=60),
        lambda fn: fluid.TriggerWorker(fn),
        lambda fn: fluid.OneShotWorker(fn),
        lambda fn: fluid.redis.StreamConsumerWorker(
            fn, redis="redis://127.0.0.1:1/0", stream="jobs", group="g"
        ),
    ],
    ids=["worker_function", "scheduled", "trigger", "one_shot", "stream_consumer"],
)
def test_a_callable_object_does_not_name_its_worker_after_fluids_wrapper(
    build: Callable[[Callable[[], Awaitable[None]]], fluid.Worker],
) -> None:
    partial = functools.partial(lambda delay: asyncio.sleep(delay), 0)
    for fn in (Poller(), partial):
        assert "awaiting" not in build(fn).worker_name


async def test_a_sync_handler_returning_a_task_is_not_reported_failed_while_it_runs() -> None:
    ran: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def save(message: str) -> None:
        ran.append(message)

    def fire(message: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(save(message))
        tasks.append(task)
        return task

    dispatcher = fluid.Dispatcher[str](message_type=lambda m: "order")
    dispatcher.register_handler("order", fire)  # type: ignore[arg-type]
    raised = False
    try:
        dispatcher.dispatch("o1")
    except TypeError:
        raised = True
    await asyncio.gather(*tasks, return_exceptions=True)
    # Either it is fire-and-forget (no error), or it is refused (and nothing ran).
    assert not (raised and ran == ["o1"])


async def test_no_busy_loop_warning_for_a_function_draining_a_backlog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for item in range(5000):
        queue.put_nowait(item)

    async def drain() -> bool | None:
        item = await queue.get()  # waits when the queue is empty
        return False if item == 4999 else None

    worker = fluid.WorkerFunction(drain)
    with caplog.at_level(logging.WARNING, logger="fluid"):
        await worker.startup()
        await asyncio.wait_for(worker.wait_for_shutdown(), 10)
    assert worker.worker_state is WorkerState.STOPPED
    assert not [r for r in caplog.records if "has not waited" in r.getMessage()]


def test_validation_error_pickles_with_its_notes() -> None:
    error = ValidationError("price", "must be positive", "number", -1)
    error.add_note("raised by worker 'prices' of tree 'app'")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.msg, copy.field_type, copy.value) == (
        "price",
        "must be positive",
        "number",
        -1,
    )
    assert getattr(copy, "__notes__", None) == ["raised by worker 'prices' of tree 'app'"]


# ------------------------------------------------------------ what held


async def _block(event: asyncio.Event) -> None:
    await event.wait()


@pytest.mark.interleave
async def test_an_eager_task_from_a_lambda_handler_is_cancelled_on_a_forced_stop() -> None:
    """The lambda makes a Task at once; a forced stop cancels it and puts the message back."""
    never = asyncio.Event()
    made: list[asyncio.Future[None]] = []

    def eager(message: str) -> asyncio.Future[None]:
        made.append(asyncio.ensure_future(_block(never)))
        return made[-1]

    consumer = fluid.QueueConsumerWorker[str](eager, stopping_grace_period=0.05)
    await consumer.startup()
    consumer.send("stuck")
    await wait_until(lambda: len(made) == 1)
    began = time.monotonic()
    await consumer.shutdown()
    assert 0.05 <= time.monotonic() - began < 10
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    assert consumer.take_undelivered() == ["stuck"]
    assert made[0].cancelled()


async def test_an_eager_task_of_a_worker_function_is_cancelled_on_a_forced_stop() -> None:
    never = asyncio.Event()
    made: list[asyncio.Future[None]] = []

    def eager() -> asyncio.Future[None]:
        made.append(asyncio.ensure_future(_block(never)))
        return made[-1]

    worker = fluid.WorkerFunction(eager, stopping_grace_period=0.05)
    await worker.startup()
    await wait_until(lambda: len(made) == 1)
    await worker.shutdown()
    assert worker.worker_state is WorkerState.FORCE_STOPPED
    assert made[0].cancelled()
    assert len(made) == 1


class AsyncCall:
    async def __call__(self, message: str) -> None:
        await asyncio.sleep(0)


class Service:
    async def handle(self, message: str) -> None:
        await asyncio.sleep(0)

    @classmethod
    async def handle_cls(cls, message: str) -> None:
        await asyncio.sleep(0)

    def plain(self, message: str) -> Awaitable[None]:
        return handle(message)


def annotated_awaitable(message: str) -> Awaitable[None]:
    return handle(message)


def annotated_coroutine(message: str) -> Coroutine[Any, Any, None]:
    return handle(message)


def returns_future(message: str) -> asyncio.Future[None]:
    return asyncio.ensure_future(handle(message))


async def test_every_kind_of_callable_returning_an_awaitable_handles_messages() -> None:
    """mypy --strict accepts each of these, and each handles a message at run time."""
    service = Service()
    handlers: list[Callable[[str], Awaitable[None]]] = [
        lambda m: handle(m),
        functools.partial(handle),
        functools.partial(lambda m: handle(m)),
        AsyncCall(),
        service.handle,
        Service.handle_cls,
        service.plain,
        annotated_awaitable,  # '-> Awaitable[None]', a string here (future annotations)
        annotated_coroutine,
        returns_future,
    ]
    done: list[str] = []

    def record(message: str, result: object) -> None:
        done.append(message)

    consumers = [
        fluid.QueueConsumerWorker[str](h, name=f"c{i}", on_result=record)
        for i, h in enumerate(handlers)
    ]
    async with fluid.Workers(*consumers):
        for consumer in consumers:
            consumer.send(consumer.worker_name)
        await wait_until(lambda: len(done) == len(handlers))
    assert sorted(done) == sorted(c.worker_name for c in consumers)


@pytest.mark.parametrize(
    "fn",
    [print, len, lambda: (yield), "not callable"],
    ids=["print", "len", "generator", "string"],
)
def test_what_surely_returns_no_awaitable_is_refused_at_once(fn: object) -> None:
    with pytest.raises(TypeError):
        fluid.WorkerFunction(fn)  # type: ignore[arg-type]


def test_a_plain_function_annotated_none_is_refused_as_documented() -> None:
    def job() -> None:
        pass

    with pytest.raises(TypeError, match="job"):
        fluid.WorkerFunction(job)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "handler",
    [
        handle,
        functools.partial(handle),
        AsyncCall(),
        Service().handle,
        Service.handle_cls,
    ],
    ids=["async_def", "partial", "async_call", "bound", "classmethod"],
)
def test_a_sync_dispatcher_refuses_every_kind_of_coroutine_function(
    handler: Callable[[str], Any],
) -> None:
    dispatcher = fluid.Dispatcher[str](message_type=lambda m: "a")
    with pytest.raises(TypeError, match="AsyncDispatcher"):
        dispatcher.register_handler("a", handler)
    assert not dispatcher.get_handlers("a")


def test_a_sync_dispatcher_closes_the_coroutine_a_lambda_returns() -> None:
    dispatcher = fluid.Dispatcher[str](message_type=lambda m: "a")
    dispatcher.register_handler("a", lambda m: handle(m))  # type: ignore[arg-type]
    dispatcher.register_handler("a.after", lambda m: None)
    with pytest.raises(TypeError, match="never awaits"):
        dispatcher.dispatch("x")  # no "never awaited" warning: -W error in pytest config


# ----------------------------------------------------------- the tree rule


class SlowStart(fluid.Workers):
    """A tree whose on_startup waits for a gate: a restart caught half-way."""

    def __init__(self, *workers: fluid.Worker, name: str) -> None:
        super().__init__(*workers, name=name)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def on_startup(self) -> None:
        self.entered.set()
        await self.gate.wait()


@pytest.mark.interleave
async def test_a_worker_cannot_move_while_its_old_tree_restarts() -> None:
    worker = fluid.WorkerFunction(tick, name="w")
    old = SlowStart(worker, name="old")
    old.gate.set()
    async with old:
        pass
    old.gate.clear()
    old.entered.clear()
    restart = asyncio.create_task(old.startup())
    await old.entered.wait()
    with pytest.raises(ValueError, match="already belongs to tree 'old'"):
        fluid.Workers(worker, name="new")
    old.gate.set()
    await restart
    assert worker.worker_path == "old/w"
    assert worker.is_running()
    await old.shutdown()


@pytest.mark.interleave
async def test_a_worker_cannot_move_while_its_old_tree_is_stopping() -> None:
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    worker = fluid.WorkerFunction(slow, name="w")
    old = fluid.Workers(worker, name="old")
    await old.startup()
    old.gracefully_stop()
    assert old.worker_state is WorkerState.STOPPING
    with pytest.raises(ValueError, match="already belongs"):
        fluid.Workers(worker, name="new")
    gate.set()
    await old.wait_for_shutdown()
    assert fluid.Workers(worker, name="new").children == (worker,)


@pytest.mark.interleave
async def test_a_worker_of_a_stopped_subtree_of_a_running_tree_does_not_move() -> None:
    worker = fluid.WorkerFunction(tick, name="w")
    sub = fluid.Workers(worker, name="sub")
    root = fluid.Workers(sub, fluid.WorkerFunction(tick, name="other"), name="root")
    async with root:
        await root.stop_workers("sub")
        assert sub.worker_state is WorkerState.STOPPED
        assert root.is_running()
        with pytest.raises(ValueError, match="already belongs"):
            fluid.Workers(worker, name="new")
        assert worker.worker_path == "root/sub/w"


@pytest.mark.interleave
async def test_a_force_stopped_tree_lets_its_workers_go() -> None:
    worker = fluid.WorkerFunction(tick, name="w")
    stuck = fluid.WorkerFunction(lambda: asyncio.sleep(60), name="stuck")
    old = fluid.Workers(worker, stuck, name="old", stopping_grace_period=0.05)
    await old.startup()
    await old.shutdown()
    fluid.Workers(worker, name="new")
    assert worker.worker_path == "new/w"
    assert names(old) == ["stuck"]


@pytest.mark.interleave
async def test_a_moved_subtree_takes_its_paths_status_and_observers_along() -> None:
    leaf = fluid.WorkerFunction(tick, name="leaf")
    sub = fluid.Workers(leaf, name="sub")
    old = fluid.Workers(sub, name="old")
    seen_old: list[str] = []
    seen_new: list[str] = []
    old.add_observer(lambda t: seen_old.append(t.path))
    async with old:
        pass
    seen_old.clear()
    new = fluid.Workers(sub, name="new")
    new.add_observer(lambda t: seen_new.append(t.path))
    assert leaf.worker_path == "new/sub/leaf"
    assert old.num_workers == 0
    assert old.find("*") == []
    assert names(old) == []
    async with new:
        pass
    assert seen_old == []
    assert "new/sub/leaf" in seen_new
    status = await old.status()
    assert status["workers"] == []
    async with old:  # restarted: it no longer has them
        pass
    assert seen_old == ["old"] * len(seen_old)
    assert leaf.worker_path == "new/sub/leaf"


def test_a_derived_name_with_a_slash_is_refused() -> None:
    class Poll(fluid.Worker):
        def default_name(self) -> str:
            return "poll https://example.com/x"

        async def run(self) -> None:
            pass

    with pytest.raises(ValueError, match="'/'"):
        Poll()


# ------------------------------------------------------- busy-loop warning


async def test_the_busy_loop_warning_comes_once_per_run(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fluid_function, "_BUSY_FOR", 0.05)  # fast for 50 ms, not 2 s
    calls = 0
    limit = 0

    async def spin() -> bool | None:
        nonlocal calls
        calls += 1
        return False if calls >= limit else None

    worker = fluid.WorkerFunction(spin)
    with caplog.at_level(logging.WARNING, logger="fluid"):
        for run in (1, 2):
            limit = calls + 6 * 4096
            await worker.startup()
            await asyncio.wait_for(worker.wait_for_shutdown(), 10)
            warned = [r for r in caplog.records if "has not waited" in r.getMessage()]
            assert len(warned) == run, warned
            assert "'spin'" in warned[-1].getMessage()


async def test_no_busy_loop_warning_with_a_heartbeat(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def quick() -> bool | None:
        nonlocal calls
        calls += 1
        return False if calls >= 50 else None

    with caplog.at_level(logging.WARNING, logger="fluid"):
        worker = fluid.WorkerFunction(quick, heartbeat=0.0001)
        await worker.startup()
        await asyncio.wait_for(worker.wait_for_shutdown(), 10)
    assert not [r for r in caplog.records if "has not waited" in r.getMessage()]


# ------------------------------------------------------------------ cron


def _changes(zone: ZoneInfo) -> list[float]:
    """The instants of 2024 when ``zone``'s UTC offset changes (hourly probe, then minutes)."""
    t = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    end = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    found: list[float] = []
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    while t < end:
        if datetime.fromtimestamp(t + 3600, zone).utcoffset() != offset:
            m = t
            while datetime.fromtimestamp(m, zone).utcoffset() == offset:
                m += 60
            found.append(m)
            offset = datetime.fromtimestamp(m, zone).utcoffset()
            t = m
        t += 3600
    return found


@pytest.mark.parametrize(
    "name",
    [
        "Antarctica/Troll",  # changes by two hours
        "Africa/Casablanca",  # negative DST around Ramadan
        "America/Havana",  # changes at midnight
        "Pacific/Chatham",  # +12:45 / +13:45
        "America/St_Johns",  # -03:30 / -02:30
        "Europe/Dublin",  # negative DST in the tz database
    ],
)
def test_cron_follows_the_dst_rules_in_more_zones(name: str) -> None:
    zone = ZoneInfo(name)
    rng = random.Random(name)
    minutes = ["*", "*/7", "*/15", "0", "30", "15,45", "0-30", "5-50/5"]
    hours = ["*", "*/2", "0", "1", "2", "3", "0,1,2,3", "1-4", "23", "22-23"]
    for change in _changes(zone):
        for _ in range(12):
            expression = f"{rng.choice(minutes)} {rng.choice(hours)} * * *"
            after = change + rng.randint(-26 * 60, 2 * 60) * 60 + rng.random() * 59
            got = fluid.CronExpression(expression, zone).next_timestamp(after)
            assert got > after
            end = change + 3 * 3600
            t = after // 60 * 60 + 60
            while t < min(got, end):
                assert not fires_at(expression, zone, t), (expression, t)
                t += 60
            if got < end:
                assert fires_at(expression, zone, got), (expression, got)


# ------------------------------------------------------- aio-fluid errors


def test_validation_error_pickles_with_its_fields_and_text() -> None:
    error = ValidationError("price", "must be positive", "number", -1)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == "must be positive"
    assert copy.value == -1
    assert isinstance(copy, ValueError)
    assert isinstance(copy, fluid.FluidError)
    assert str(pickle.loads(pickle.dumps(ValidationError("f")))) == "validation error"


@pytest.mark.interleave
@pytest.mark.parametrize("concurrent", [False, True])
async def test_a_dispatcher_handler_task_is_cancelled_and_its_message_kept_on_a_forced_stop(
    concurrent: bool,
) -> None:
    never = asyncio.Event()
    made: list[asyncio.Future[None]] = []

    def eager(message: str) -> asyncio.Future[None]:
        made.append(asyncio.ensure_future(_block(never)))
        return made[-1]

    dispatcher = fluid.AsyncDispatcher[str](message_type=lambda m: "a", concurrent=concurrent)
    dispatcher.register_handler("a.one", eager)
    dispatcher.register_handler("a.two", eager)
    consumer = fluid.AsyncConsumer[str](dispatcher, stopping_grace_period=0.05)
    await consumer.startup()
    consumer.send("stuck")
    await wait_until(lambda: len(made) >= 1)
    await consumer.shutdown()
    assert consumer.worker_state is WorkerState.FORCE_STOPPED
    assert consumer.take_undelivered() == ["stuck"]
    assert all(task.cancelled() for task in made)


def test_validation_error_args_are_aio_fluids() -> None:
    assert ValidationError("price", "bad").args == ("price", "bad")


async def test_each_function_worker_runs_a_lambda_a_partial_and_a_callable_object() -> None:
    """Typed as the hints say (mypy --strict), each runs its function and stops cleanly."""
    calls: list[str] = []

    async def job(label: str) -> None:
        calls.append(label)

    class Job:
        def __init__(self, label: str) -> None:
            self.label = label

        def __call__(self) -> Coroutine[Any, Any, None]:
            return job(self.label)

    def kinds(prefix: str) -> list[Callable[[], Awaitable[None]]]:
        return [
            lambda: job(f"{prefix}-lambda"),
            functools.partial(lambda label: job(label), f"{prefix}-partial"),
            Job(f"{prefix}-object"),
        ]

    workers: list[fluid.Worker] = []
    for i, fn in enumerate(kinds("function")):
        workers.append(fluid.WorkerFunction(fn, heartbeat=60, name=f"f{i}"))
    for i, fn in enumerate(kinds("scheduled")):
        workers.append(fluid.ScheduledWorker(fn, interval=60, name=f"s{i}"))
    triggers = [fluid.TriggerWorker(fn, name=f"t{i}") for i, fn in enumerate(kinds("trigger"))]
    for i, fn in enumerate(kinds("oneshot")):
        workers.append(fluid.OneShotWorker(fn, name=f"o{i}"))
    tree = fluid.Workers(*workers, *triggers, restart="temporary")
    async with tree:
        for trigger in triggers:
            trigger.trigger()
        await wait_until(lambda: len(set(calls)) == 12)
    assert tree.worker_state is WorkerState.STOPPED
    assert (await tree.status())["error"] is None


async def test_a_thread_handler_returning_a_coroutine_fails_its_message() -> None:
    ran: list[str] = []
    made: list[Coroutine[Any, Any, None]] = []

    async def store(message: str) -> None:
        ran.append(message)

    def slip(message: str) -> Coroutine[Any, Any, None]:
        made.append(store(message))
        return made[-1]

    consumer = fluid.QueueConsumerWorker[str](slip, run_in="thread", name="c")
    try:
        async with fluid.Workers(consumer):
            consumer.send("order")
            await wait_until(lambda: len(made) == 1)
        queue = (await consumer.status())["queue"]
    finally:
        for coroutine in made:
            coroutine.close()  # no "never awaited" warning from this test
    assert ran == []
    assert queue["handled"] == 0
    assert queue["failed"] == 1
