"""@fluid.worker, @fluid.consumer, @fluid.on_trigger and @fluid.scheduled: sugar over the classes.

The annotated assignments are the typing tests: mypy (run over tests/) fails if
a decorator's result is not the Worker subclass, or not of the right message type.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable

import pytest

import fluid

from .helpers import wait_until

# ----------------------------------------------------------------- @worker


async def test_bare_worker_decorator_makes_a_worker_function() -> None:
    calls = 0

    @fluid.worker
    async def tick() -> None:
        nonlocal calls
        calls += 1

    made: fluid.WorkerFunction = tick
    assert type(made) is fluid.WorkerFunction
    assert made.worker_name == "tick"
    assert made.heartbeat == 0
    async with made:
        await wait_until(lambda: calls >= 2)


async def test_worker_decorator_passes_its_arguments_on() -> None:
    @fluid.worker(heartbeat=60, name="poller", stopping_grace_period=3)
    async def poll() -> None:
        pass

    made: fluid.WorkerFunction = poll
    assert type(made) is fluid.WorkerFunction
    assert (made.worker_name, made.heartbeat, made.stopping_grace_period) == ("poller", 60, 3)


async def test_a_decorated_function_returning_false_stops_its_worker() -> None:
    @fluid.worker(heartbeat=0)
    async def once() -> bool:
        return False

    await once.startup()
    async with asyncio.timeout(2):
        await once.wait_for_shutdown()
    assert once.worker_state is fluid.WorkerState.STOPPED


def test_worker_decorator_rejects_bad_input_at_the_call() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        fluid.worker(heartbeat=-1)
    with pytest.raises(TypeError, match="name must be a string"):
        fluid.worker(name=3)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="stopping_grace_period"):
        fluid.worker(stopping_grace_period=float("inf"))


def test_worker_decorator_rejects_a_sync_function_when_applied() -> None:
    def not_async() -> None:
        pass

    decorate = fluid.worker(heartbeat=1)
    with pytest.raises(TypeError, match=r"@fluid\.worker decorates a coroutine function"):
        decorate(not_async)  # type: ignore[arg-type]


def test_a_positional_argument_gets_a_hint() -> None:
    with pytest.raises(TypeError, match=r"pass options by keyword, e\.g\. @fluid\.worker\(name"):
        fluid.worker("poller")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"@fluid\.on_trigger\(name"):
        fluid.on_trigger("poller")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"@fluid\.consumer\(name"):
        fluid.consumer("poller")  # type: ignore[call-overload]


# --------------------------------------------------------------- @consumer


async def test_bare_consumer_decorator_makes_a_typed_queue_consumer() -> None:
    got: list[int] = []

    @fluid.consumer
    async def store(order: int) -> None:
        got.append(order)

    made: fluid.QueueConsumerWorker[int] = store
    assert type(made) is fluid.QueueConsumerWorker
    assert made.worker_name == "store"
    async with made:
        made.send(1)
        made.send(2)
        await wait_until(lambda: len(got) == 2)
    assert got == [1, 2]


async def test_consumer_decorator_passes_keyword_arguments_on() -> None:
    release = asyncio.Event()
    in_flight = 0
    failed: list[str] = []

    def record(message: str, error: Exception) -> None:
        failed.append(message)

    @fluid.consumer(maxsize=8, concurrency=2, on_error=record, name="orders", drain=False)
    async def handle(order: str) -> None:
        nonlocal in_flight
        if order == "bad":
            raise LookupError(order)
        in_flight += 1
        await release.wait()

    made: fluid.QueueConsumerWorker[str] = handle
    assert (made.worker_name, made.maxsize) == ("orders", 8)
    async with made:
        made.send("bad")
        await wait_until(lambda: failed == ["bad"])  # on_error got it
        made.send("a")
        made.send("b")
        await wait_until(lambda: in_flight == 2)  # concurrency=2: both at once
        made.send("c")
        made.gracefully_stop()
        release.set()
    assert made.take_undelivered() == ["c"]  # drain=False: left in the queue


async def test_consumer_decorator_passes_priority_on() -> None:
    got: list[int] = []

    def lowest_first(message: int) -> int:
        return message

    @fluid.consumer(priority=lowest_first)
    async def handle(message: int) -> None:
        got.append(message)

    made: fluid.QueueConsumerWorker[int] = handle
    for message in (3, 1, 2):
        made.send(message)  # queued before the start: taken by priority
    async with made:
        await wait_until(lambda: len(got) == 3)
    assert got == [1, 2, 3]


def test_consumer_decorator_rejects_bad_input_at_the_call() -> None:
    with pytest.raises(TypeError, match="unknown keyword arguments: bogus"):
        fluid.consumer(bogus=1)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="on_error must be"):
        fluid.consumer(on_error="ignore")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="stopping_grace_period"):
        fluid.consumer(stopping_grace_period=-1)
    with pytest.raises(TypeError, match="name must be a string"):
        fluid.consumer(name=None)  # type: ignore[call-overload]


def test_consumer_decorator_rejects_bad_values_when_applied() -> None:
    async def handle(message: int) -> None:
        pass

    with pytest.raises(ValueError, match="maxsize"):
        fluid.consumer(maxsize=-1)(handle)
    with pytest.raises(ValueError, match="concurrency"):
        fluid.consumer(concurrency=0)(handle)
    with pytest.raises(TypeError, match="coroutine function"):
        fluid.consumer(maxsize=1)(lambda m: None)  # type: ignore[arg-type,return-value]


async def test_derived_consumer_names_are_suffixed_in_a_tree_given_ones_are_not() -> None:
    async def store(message: int) -> None:
        pass

    tree = fluid.Workers(fluid.consumer(store), fluid.consumer(store))
    assert [w.worker_name for w in tree.workers()] == ["store", "store-2"]
    named = fluid.consumer(name="orders")(store)
    with pytest.raises(fluid.DuplicateWorkerName):
        fluid.Workers(named, fluid.consumer(name="orders")(store))


# ------------------------------------------------------------- @on_trigger


async def test_bare_on_trigger_decorator_makes_a_trigger_worker() -> None:
    runs = 0

    @fluid.on_trigger
    async def rebuild() -> None:
        nonlocal runs
        runs += 1

    made: fluid.TriggerWorker = rebuild
    assert type(made) is fluid.TriggerWorker
    assert made.worker_name == "rebuild"
    async with made:
        made.trigger()
        await wait_until(lambda: runs == 1)


async def test_on_trigger_decorator_passes_its_arguments_on() -> None:
    seen: list[int] = []

    def record(run: int, error: Exception) -> None:
        seen.append(run)

    @fluid.on_trigger(name="indexer", stopping_grace_period=2, on_error=record)
    async def rebuild() -> None:
        raise LookupError("no index")

    made: fluid.TriggerWorker = rebuild
    assert (made.worker_name, made.stopping_grace_period) == ("indexer", 2)
    async with made:
        made.trigger()
        await wait_until(lambda: seen == [1])


def test_on_trigger_decorator_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="on_error must be"):
        fluid.on_trigger(on_error="ignore")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="stopping_grace_period"):
        fluid.on_trigger(stopping_grace_period=-0.5)

    def not_async() -> None:
        pass

    with pytest.raises(TypeError, match=r"@fluid\.on_trigger decorates a coroutine function"):
        fluid.on_trigger(not_async)  # type: ignore[arg-type]


def test_on_event_is_the_earlier_name_of_on_trigger() -> None:
    assert fluid.on_event is fluid.on_trigger

    @fluid.on_event
    async def rebuild() -> None:
        pass

    made: fluid.TriggerWorker = rebuild
    assert type(made) is fluid.TriggerWorker


# -------------------------------------------------------------- @scheduled


def test_scheduled_lives_with_the_other_decorators() -> None:
    assert {d.__module__ for d in (fluid.worker, fluid.consumer, fluid.on_trigger)} == {
        fluid.scheduled.__module__
    }


async def test_scheduled_passes_its_options_on() -> None:
    async def poll() -> None:
        pass

    made = fluid.scheduled(delay=2, max_count=3, name="poller", stopping_grace_period=4)(poll)
    assert (made.worker_name, made.stopping_grace_period) == ("poller", 4)
    options: fluid.ScheduleOptions = {"interval": 5, "missed": "catch_up"}
    assert fluid.scheduled(**options)(poll).worker_name == "poll"


def test_scheduled_rejects_bad_input_at_the_call() -> None:
    with pytest.raises(TypeError, match="scheduled\\(\\) got unknown keyword arguments: bogus"):
        fluid.scheduled(interval=1, bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="name must be a string"):
        fluid.scheduled(interval=1, name=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stopping_grace_period"):
        fluid.scheduled(interval=1, stopping_grace_period=-1)


# -------------------------------------------------- one list of keywords


def _keywords(fn: Callable[..., object], *leave_out: str) -> dict[str, str]:
    """The keyword parameters of ``fn`` and their types, but those left out."""
    hints = typing.get_type_hints(fn)
    return {
        name: str(hints[name])
        for name, parameter in inspect.signature(fn).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and name not in ("self", *leave_out)
    }


def _options(options: type) -> dict[str, str]:
    return {name: str(hint) for name, hint in typing.get_type_hints(options).items()}


def test_consumer_options_are_the_consumer_keywords() -> None:
    # priority and on_error are the decorator's own keywords, typed by the message.
    decorator = _options(fluid.ConsumerOptions) | _keywords(fluid.consumer, "fn")
    assert decorator == _keywords(fluid.QueueConsumer.__init__)
    # The decorator makes coroutine consumers on the loop: it offers no run_in
    # (a plain function in a pool) and no on_result.
    assert decorator == _keywords(
        fluid.QueueConsumerWorker.__init__, "on_message", "run_in", "on_result"
    )


def test_schedule_options_are_the_scheduled_worker_keywords() -> None:
    assert _options(fluid.ScheduleOptions) == _keywords(fluid.ScheduledWorker.__init__, "fn")


@pytest.mark.parametrize(
    ("decorator", "init"),
    [
        (fluid.worker, fluid.WorkerFunction.__init__),
        (fluid.on_trigger, fluid.TriggerWorker.__init__),
    ],
)
def test_a_written_out_decorator_takes_the_keywords_of_its_class(
    decorator: Callable[..., object], init: Callable[..., object]
) -> None:
    def defaults(fn: Callable[..., object]) -> dict[str, object]:
        return {
            name: parameter.default
            for name, parameter in inspect.signature(fn).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY
        }

    first = list(inspect.signature(init).parameters)[1]  # after self: the function
    assert _keywords(decorator, "fn") == _keywords(init, first)
    assert defaults(decorator) == defaults(init)


# ------------------------------------------------------------------ typing


def test_decorated_workers_have_precise_types() -> None:
    # mypy checks this body: the annotated assignments must type-check, and
    # each "type: ignore" must stay needed (an unused one fails mypy --strict).
    @fluid.consumer(maxsize=10)
    async def on_text(message: str) -> None:
        pass

    async def by_length(message: str) -> None:
        pass

    def text_priority(message: str) -> int:
        return len(message)

    texts: fluid.QueueConsumerWorker[str] = on_text
    texts.send("fine")
    texts.send(1)  # type: ignore[arg-type]
    wrong: fluid.QueueConsumerWorker[int] = on_text  # type: ignore[assignment]
    ranked: fluid.QueueConsumerWorker[str] = fluid.consumer(priority=text_priority)(by_length)
    options: fluid.ConsumerOptions = {"maxsize": 5, "drain": False}
    unpacked: fluid.QueueConsumerWorker[str] = fluid.consumer(**options)(by_length)

    async def numbers(message: int) -> None:
        pass

    fluid.consumer(priority=text_priority)(numbers)  # type: ignore[arg-type]

    async def poll() -> None:
        pass

    polled: fluid.ScheduledWorker = fluid.scheduled(interval=1)(poll)
    with pytest.raises(TypeError):
        fluid.scheduled(interval="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missed"):
        fluid.scheduled(interval=1, missed="later")  # type: ignore[arg-type]
    assert texts.queue_size() == 2
    assert {type(w) for w in (wrong, ranked, unpacked)} == {fluid.QueueConsumerWorker}
    assert type(polled) is fluid.ScheduledWorker
