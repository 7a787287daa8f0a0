"""Event, Dispatcher and AsyncDispatcher."""

from __future__ import annotations

from typing import NamedTuple

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


def test_async_dispatcher_rejects_sync_handlers() -> None:
    dispatcher = fluid.AsyncDispatcher[Msg](message_type=msg_type)
    with pytest.raises(TypeError, match="handler must be a coroutine function"):
        dispatcher.register_handler("a", lambda m: None)  # type: ignore[arg-type,return-value]


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
