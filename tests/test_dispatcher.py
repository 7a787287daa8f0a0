"""Event, Dispatcher and AsyncDispatcher."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, NamedTuple

import pytest

import fluid


class Msg(NamedTuple):
    type: str
    body: str = ""


def msg_type(message: Msg) -> str:
    return message.type


def test_event_parses_type_and_tag() -> None:
    assert fluid.Event.from_string("order") == fluid.Event("order", "")
    assert fluid.Event.from_string("order.audit") == fluid.Event("order", "audit")
    assert str(fluid.Event("order", "audit")) == "order.audit"
    event = fluid.Event("a", "b")
    assert fluid.Event.from_string_or_event(event) is event


@pytest.mark.parametrize("bad", ["", ".tag", "a.b.c"])
def test_event_rejects_malformed_names(bad: str) -> None:
    with pytest.raises(ValueError, match=r"'type' or 'type\.tag'"):
        fluid.Event.from_string(bad)


def test_event_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        fluid.Event.from_string(3)  # type: ignore[arg-type]


def test_sync_dispatch_calls_every_handler_of_the_type() -> None:
    got: list[str] = []
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("order", lambda m: got.append(f"plain:{m.body}"))
    dispatcher.register_handler("order.audit", lambda m: got.append(f"audit:{m.body}"))
    dispatcher.register_handler("refund", lambda m: got.append("refund"))
    assert dispatcher.dispatch(Msg("order", "1")) == 2
    assert got == ["plain:1", "audit:1"]
    assert dispatcher.dispatch(Msg("unknown")) == 0
    assert sorted(dispatcher.event_types()) == ["order", "refund"]


def test_register_returns_the_replaced_handler_and_unregister_removes() -> None:
    def first(m: Msg) -> None:
        pass

    def second(m: Msg) -> None:
        pass

    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    assert dispatcher.register_handler("a.x", first) is None
    assert dispatcher.register_handler("a.x", second) is first
    assert dispatcher.get_handlers(Msg("a")) == {"x": second}
    assert dispatcher.unregister_handler("a.x") is second
    assert dispatcher.unregister_handler("a.x") is None
    assert dispatcher.get_handlers(Msg("a")) is None
    assert dispatcher.dispatch(Msg("a")) == 0


def test_one_failing_handler_does_not_stop_the_others_and_its_error_is_raised() -> None:
    got: list[str] = []

    def bad(m: Msg) -> None:
        raise KeyError("bad")

    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a.1", bad)
    dispatcher.register_handler("a.2", lambda m: got.append("2"))
    with pytest.raises(KeyError, match="bad"):
        dispatcher.dispatch(Msg("a"))
    assert got == ["2"]


def test_several_failures_raise_an_exception_group() -> None:
    def bad(m: Msg) -> None:
        raise KeyError(m.body)

    def worse(m: Msg) -> None:
        raise ValueError(m.body)

    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a.1", bad)
    dispatcher.register_handler("a.2", worse)
    dispatcher.register_handler("a.3", lambda m: None)
    with pytest.raises(ExceptionGroup, match="2 of 3 handlers failed") as info:
        dispatcher.dispatch(Msg("a", "x"))
    assert [type(e) for e in info.value.exceptions] == [KeyError, ValueError]


async def test_async_dispatch_awaits_every_handler() -> None:
    got: list[str] = []

    async def one(m: Msg) -> None:
        got.append("one")

    async def two(m: Msg) -> None:
        raise RuntimeError("two")

    async def three(m: Msg) -> None:
        got.append("three")

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type)
    for tag, handler in (("1", one), ("2", two), ("3", three)):
        dispatcher.register_handler(f"a.{tag}", handler)
    with pytest.raises(RuntimeError, match="two"):
        await dispatcher.dispatch(Msg("a"))
    assert got == ["one", "three"]


async def test_registering_during_a_dispatch_does_not_break_it() -> None:
    got: list[str] = []
    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type)

    async def late(m: Msg) -> None:
        got.append("late")

    async def registrar(m: Msg) -> None:
        got.append("registrar")
        dispatcher.register_handler("a.late", late)

    dispatcher.register_handler("a.first", registrar)
    assert await dispatcher.dispatch(Msg("a")) == 1
    assert await dispatcher.dispatch(Msg("a")) == 2
    assert got == ["registrar", "registrar", "late"]


# ------------------------------------- what a handler may be (as the hints say)


async def _record(got: list[str], what: str) -> None:
    got.append(what)


async def _record_message(got: list[str], what: str, message: Msg) -> None:
    got.append(what)


class _CallReturningCoroutine:
    """A sync ``__call__`` returning a coroutine: aio-fluid awaited what it returned."""

    def __init__(self, got: list[str]) -> None:
        self.got = got

    def __call__(self, message: Msg) -> Coroutine[Any, Any, None]:
        return _record(self.got, "object")


@pytest.mark.parametrize("concurrent", [False, True])
async def test_async_dispatcher_takes_any_callable_returning_an_awaitable(
    concurrent: bool,
) -> None:
    got: list[str] = []

    def returns_coroutine(label: str, message: Msg) -> Coroutine[Any, Any, None]:
        return _record(got, label)

    def returns_future(message: Msg) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        got.append("future")
        return future

    handlers: dict[str, Callable[[Msg], Awaitable[None]]] = {
        "a.lambda": lambda m: _record(got, "lambda"),
        "a.partial": functools.partial(returns_coroutine, "partial"),
        "a.object": _CallReturningCoroutine(got),
        "a.future": returns_future,
        "a.async_partial": functools.partial(_record_message, got, "async_partial"),
    }
    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=concurrent)
    for event, handler in handlers.items():
        assert dispatcher.register_handler(event, handler) is None
    assert await dispatcher.dispatch(Msg("a")) == 5
    assert sorted(got) == ["async_partial", "future", "lambda", "object", "partial"]
    # The handlers as registered come back, not the wrappers that await them.
    assert dispatcher.get_handlers(Msg("a")) == {e[2:]: h for e, h in handlers.items()}
    assert dispatcher.register_handler("a.lambda", handlers["a.object"]) is handlers["a.lambda"]
    assert dispatcher.unregister_handler("a.partial") is handlers["a.partial"]


def _says_none(message: Msg) -> None:
    pass


@pytest.mark.parametrize("concurrent", [False, True])
async def test_async_dispatcher_fails_a_handler_returning_no_awaitable_naming_it(
    concurrent: bool,
) -> None:
    got: list[str] = []

    def sync(message: Msg):  # type: ignore[no-untyped-def]
        got.append("sync ran")  # no "-> None": nothing says it returns no awaitable

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=concurrent)
    with pytest.raises(TypeError, match="or a callable returning an awaitable"):
        dispatcher.register_handler("a.slip", _says_none)  # type: ignore[arg-type]
    dispatcher.register_handler("a.sync", sync)
    dispatcher.register_handler("a.after", lambda m: _record(got, "after"))
    with pytest.raises(TypeError) as caught:
        await dispatcher.dispatch(Msg("a"))
    assert str(caught.value) == (
        f"handler {sync!r} returned None, not an awaitable: it must be a "
        "coroutine function (async def) or return an awaitable"
    )
    assert got == ["sync ran", "after"]  # the others still got the message
    assert dispatcher.dispatch_status()["a"]["failures"] == {"a.sync": 1}


def _generator(message: Msg) -> Iterator[None]:
    yield


async def _async_generator(message: Msg) -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize(
    "handler",
    [print, _generator, _async_generator, functools.partial(_generator), 42],
    ids=["builtin", "generator", "async_generator", "partial_generator", "int"],
)
def test_async_dispatcher_refuses_what_surely_returns_no_awaitable(handler: object) -> None:
    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type)
    with pytest.raises(TypeError, match="handler must be a coroutine function"):
        dispatcher.register_handler("a", handler)  # type: ignore[arg-type]
    assert dispatcher.event_types() == []


class _AsyncCall:
    async def __call__(self, message: Msg) -> None:
        pass


async def _async_handler(message: Msg) -> None:
    pass


@pytest.mark.parametrize(
    "handler",
    [_async_handler, functools.partial(_async_handler), _AsyncCall()],
    ids=["async_def", "partial", "async_call"],
)
def test_sync_dispatcher_refuses_coroutine_functions(handler: object) -> None:
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    with pytest.raises(TypeError) as caught:
        dispatcher.register_handler("a", handler)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"handler of a Dispatcher must be a plain function, got the coroutine "
        f"function {handler!r}: register it on an AsyncDispatcher"
    )
    assert dispatcher.event_types() == []
    assert dispatcher.dispatch(Msg("a")) == 0


def test_sync_dispatcher_fails_a_handler_returning_a_coroutine_and_closes_it() -> None:
    """No "coroutine never awaited" warning: the coroutine is closed, the handler failed."""
    made: list[Coroutine[Any, Any, None]] = []
    got: list[str] = []

    def wraps_a_coroutine(message: Msg) -> None:
        coroutine = _record(got, "never")
        made.append(coroutine)
        return coroutine  # type: ignore[return-value]

    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a.wrapped", wraps_a_coroutine)
    dispatcher.register_handler("a.plain", lambda m: got.append("plain"))
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        with pytest.raises(TypeError) as caught:
            dispatcher.dispatch(Msg("a"))
        made[0].close()  # closing again is a no-op: it was closed, never started
        assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED
        made.clear()
        gc.collect()
    assert [w for w in caught_warnings if issubclass(w.category, RuntimeWarning)] == []
    assert str(caught.value) == (
        f"handler {wraps_a_coroutine!r} of a Dispatcher returned an awaitable, which "
        "a Dispatcher never awaits: register it on an AsyncDispatcher"
    )
    assert got == ["plain"]
    assert dispatcher.dispatch_status()["a"]["failures"] == {"a.wrapped": 1}


def test_sync_dispatcher_handlers_may_return_values_that_are_not_awaitable() -> None:
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a", lambda m: 42)  # type: ignore[arg-type]
    assert dispatcher.dispatch(Msg("a")) == 1


def test_sync_dispatcher_rejects_non_callables() -> None:
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    with pytest.raises(TypeError, match="handler must be callable"):
        dispatcher.register_handler("a", "nope")  # type: ignore[arg-type]


def test_message_type_is_required_unless_overridden() -> None:
    with pytest.raises(TypeError, match="needs a message_type function"):
        fluid.Dispatcher[Msg]()

    class ByType(fluid.Dispatcher[Msg]):
        def message_type(self, message: Msg) -> str:
            return message.type

    got: list[Msg] = []
    dispatcher = ByType()
    dispatcher.register_handler("a", got.append)
    dispatcher.dispatch(Msg("a"))
    assert got == [Msg("a")]


# ------------------------------------------------------------- catch-all


def test_catch_all_handlers_get_every_message_after_the_types_own() -> None:
    got: list[str] = []
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("*.log", lambda m: got.append(f"log:{m.type}"))
    dispatcher.register_handler("order.store", lambda m: got.append("store"))
    dispatcher.register_handler("*", lambda m: got.append(f"all:{m.type}"))
    assert dispatcher.dispatch(Msg("order")) == 3
    assert dispatcher.dispatch(Msg("unknown")) == 2
    assert got == ["store", "log:order", "all:order", "log:unknown", "all:unknown"]
    assert sorted(dispatcher.event_types()) == ["*", "order"]
    assert dispatcher.get_handlers(Msg("order")) is not None
    assert list(dispatcher.get_handlers(Msg("order")) or {}) == ["store"]


def test_unregistering_a_catch_all_handler_removes_it_from_every_type() -> None:
    got: list[str] = []
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("order", lambda m: got.append("order"))
    dispatcher.register_handler("*.log", lambda m: got.append("log"))
    assert dispatcher.unregister_handler("*.log") is not None
    assert dispatcher.dispatch(Msg("order")) == 1
    assert dispatcher.dispatch(Msg("other")) == 0
    assert got == ["order"]
    assert dispatcher.event_types() == ["order"]


def test_a_type_without_own_handlers_left_still_gets_the_catch_all() -> None:
    got: list[str] = []
    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("order", lambda m: got.append("order"))
    dispatcher.register_handler("*", lambda m: got.append("all"))
    dispatcher.unregister_handler("order")
    assert dispatcher.dispatch(Msg("order")) == 1
    assert got == ["all"]


async def test_a_failing_handler_does_not_keep_the_catch_all_from_the_message() -> None:
    got: list[str] = []

    async def bad(m: Msg) -> None:
        raise KeyError("own")

    async def record(m: Msg) -> None:
        got.append(m.type)

    async def worse(m: Msg) -> None:
        raise ValueError("catch-all")

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a", bad)
    dispatcher.register_handler("*.record", record)
    dispatcher.register_handler("*.worse", worse)
    with pytest.raises(ExceptionGroup, match="2 of 3 handlers failed") as info:
        await dispatcher.dispatch(Msg("a"))
    assert [type(e) for e in info.value.exceptions] == [KeyError, ValueError]
    assert got == ["a"]


# ---------------------------------------------------------- dispatch status


def test_dispatch_status_counts_messages_per_type_and_failures_per_handler() -> None:
    calls = 0

    def flaky(m: Msg) -> None:
        nonlocal calls
        calls += 1
        if calls % 2 == 0:  # the second registration of the same function fails
            raise KeyError(m.body)

    def fail(m: Msg) -> None:
        raise ValueError(m.body)

    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("order.first", flaky)
    dispatcher.register_handler("order.second", flaky)
    dispatcher.register_handler("refund", lambda m: None)
    dispatcher.register_handler("*.audit", fail)
    for _ in range(3):
        with pytest.raises(ExceptionGroup):
            dispatcher.dispatch(Msg("order"))
    with pytest.raises(ValueError, match="x"):
        dispatcher.dispatch(Msg("other", "x"))
    with pytest.raises(ValueError, match="x"):
        dispatcher.dispatch(Msg("refund", "x"))
    assert dispatcher.dispatch_status() == {
        "order": {"dispatched": 3, "failures": {"order.second": 3, "*.audit": 3}},
        "refund": {"dispatched": 1, "failures": {"*.audit": 1}},
        "*": {"dispatched": 1, "failures": {"*.audit": 1}},
    }


async def test_async_dispatch_status_and_a_snapshot_that_does_not_change() -> None:
    async def ok(m: Msg) -> None:
        pass

    async def bad(m: Msg) -> None:
        raise KeyError(m.body)

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a.ok", ok)
    dispatcher.register_handler("a.bad", bad)
    with pytest.raises(KeyError):
        await dispatcher.dispatch(Msg("a"))
    snapshot = dispatcher.dispatch_status()
    dispatcher.unregister_handler("a.bad")  # figures survive a change of handlers
    await dispatcher.dispatch(Msg("a"))
    await dispatcher.dispatch(Msg("b"))
    assert snapshot == {
        "a": {"dispatched": 1, "failures": {"a.bad": 1}},
        "*": {"dispatched": 0, "failures": {}},
    }
    assert dispatcher.dispatch_status() == {
        "a": {"dispatched": 2, "failures": {"a.bad": 1}},
        "*": {"dispatched": 1, "failures": {}},
    }


def test_stats_is_an_alias_of_dispatch_status() -> None:
    # stats() and DispatchStats were renamed so that "status" is the one word
    # for figures; code written for them still runs and gets the same figures.
    from fluid import DispatchStats

    def fail(m: Msg) -> None:
        raise ValueError(m.body)

    dispatcher = fluid.Dispatcher[Msg](message_type=msg_type)
    dispatcher.register_handler("a.fail", fail)
    assert dispatcher.stats() == dispatcher.dispatch_status()
    with pytest.raises(ValueError, match="x"):
        dispatcher.dispatch(Msg("a", "x"))
    dispatcher.dispatch(Msg("b"))
    figures: dict[str, DispatchStats] = dispatcher.stats()
    assert figures == dispatcher.dispatch_status()
    assert figures == {
        "a": {"dispatched": 1, "failures": {"a.fail": 1}},
        "*": {"dispatched": 1, "failures": {}},
    }
    assert figures is not dispatcher.stats()  # a snapshot each time, as before
    assert DispatchStats is fluid.DispatchStatus
    assert "DispatchStats" not in fluid.__all__


# ------------------------------------------------------- concurrent mode


async def test_concurrent_handlers_run_at_the_same_time() -> None:
    both_started = asyncio.Event()
    started = 0

    async def meet(m: Msg) -> None:
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        await both_started.wait()  # in turn, the first would wait forever

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=True)
    assert dispatcher.concurrent
    dispatcher.register_handler("a.1", meet)
    dispatcher.register_handler("*.2", meet)
    async with asyncio.timeout(2):
        assert await dispatcher.dispatch(Msg("a")) == 2


async def test_concurrent_failures_are_raised_together_in_registration_order() -> None:
    got: list[str] = []

    async def slow_failure(m: Msg) -> None:
        await asyncio.sleep(0.01)
        raise KeyError("first registered, last to fail")

    async def fine(m: Msg) -> None:
        got.append("fine")

    async def needs_two(m: Msg, extra: int) -> None:
        pass

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=True)
    dispatcher.register_handler("a.slow", slow_failure)
    dispatcher.register_handler("a.fine", fine)
    dispatcher.register_handler("a.call", functools.partial(needs_two, extra=1, bogus=2))  # type: ignore[call-arg]
    with pytest.raises(ExceptionGroup, match="2 of 3 handlers failed") as info:
        await dispatcher.dispatch(Msg("a"))
    assert [type(e) for e in info.value.exceptions] == [KeyError, TypeError]
    assert got == ["fine"]
    assert dispatcher.dispatch_status()["a"]["failures"] == {"a.slow": 1, "a.call": 1}


async def test_cancelling_a_concurrent_dispatch_cancels_and_waits_for_every_handler() -> None:
    cancelled: list[str] = []
    both_started = asyncio.Event()
    started = 0

    async def hang(m: Msg) -> None:
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # cleanup that takes a turn
            cancelled.append(m.body)
            raise

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=True)
    dispatcher.register_handler("a.1", hang)
    dispatcher.register_handler("a.2", hang)
    task = asyncio.create_task(dispatcher.dispatch(Msg("a", "x")))
    await both_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == ["x", "x"]  # both ended before the dispatch did


async def test_a_handler_that_cancels_itself_cancels_a_concurrent_dispatch() -> None:
    async def quits(m: Msg) -> None:
        raise asyncio.CancelledError

    async def fine(m: Msg) -> None:
        pass

    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=True)
    dispatcher.register_handler("a.quits", quits)
    dispatcher.register_handler("a.fine", fine)
    with pytest.raises(asyncio.CancelledError):
        await dispatcher.dispatch(Msg("a"))


def test_concurrent_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="concurrent must be True or False"):
        fluid.AsyncDispatcher[Msg](message_type=msg_type, concurrent=1)  # type: ignore[arg-type]


# ------------------------------------------------- aio-fluid's event_type()


class _ByKindEventType(fluid.AsyncDispatcher[dict[str, str]]):
    """Written for aio-fluid: its abstract method is event_type()."""

    def event_type(self, message: dict[str, str]) -> str:
        return message["kind"]


class _ByKindMessageType(fluid.Dispatcher[dict[str, str]]):
    def message_type(self, message: dict[str, str]) -> str:
        return message["kind"]


async def test_a_subclass_overriding_event_type_routes_by_it() -> None:
    got: list[str] = []

    async def store(message: dict[str, str]) -> None:
        got.append(message["id"])

    dispatcher = _ByKindEventType()
    dispatcher.register_handler("order", store)
    await dispatcher.dispatch({"kind": "order", "id": "1"})
    await dispatcher.dispatch({"kind": "other", "id": "2"})
    assert got == ["1"]
    assert dispatcher.message_type({"kind": "order"}) == "order"


def test_a_subclass_overriding_message_type_answers_event_type_too() -> None:
    got: list[str] = []
    dispatcher = _ByKindMessageType()
    dispatcher.register_handler("order", lambda message: got.append(message["id"]))
    dispatcher.dispatch({"kind": "order", "id": "1"})
    assert got == ["1"]
    assert dispatcher.event_type({"kind": "order"}) == "order"
    plain = fluid.Dispatcher[dict[str, str]](message_type=lambda m: m["kind"])
    assert plain.event_type({"kind": "x"}) == "x"


def test_a_dispatcher_without_a_type_names_both_methods() -> None:
    with pytest.raises(TypeError, match=r"message_type\(\) \(or event_type\(\)"):
        fluid.AsyncDispatcher[dict[str, str]]()
