"""AsyncConsumer: a queue consumer fanning messages out through a dispatcher."""

from __future__ import annotations

import pytest

import fluid

from .helpers import wait_until


def dispatcher_with(*handlers: object) -> fluid.AsyncDispatcher[dict[str, object]]:
    dispatcher = fluid.AsyncDispatcher[dict[str, object]](message_type=lambda m: str(m["type"]))
    for i, handler in enumerate(handlers):
        dispatcher.register_handler(f"order.h{i}", handler)  # type: ignore[arg-type]
    return dispatcher


async def test_each_message_reaches_every_handler() -> None:
    got: list[tuple[str, object]] = []

    async def store(m: dict[str, object]) -> None:
        got.append(("store", m["id"]))

    async def notify(m: dict[str, object]) -> None:
        got.append(("notify", m["id"]))

    consumer = fluid.AsyncConsumer(dispatcher_with(store, notify), name="orders")
    async with consumer:
        consumer.send({"type": "order", "id": 1})
        consumer.send({"type": "order", "id": 2})
    assert got == [("store", 1), ("notify", 1), ("store", 2), ("notify", 2)]
    assert (await consumer.status())["queue"]["handled"] == 2


async def test_a_failing_handler_does_not_keep_the_message_from_the_others() -> None:
    got: list[object] = []
    errors: list[BaseException] = []

    async def broken(m: dict[str, object]) -> None:
        raise ValueError("broken")

    async def fine(m: dict[str, object]) -> None:
        got.append(m["id"])

    consumer = fluid.AsyncConsumer(
        dispatcher_with(broken, fine), on_error=lambda m, e: errors.append(e)
    )
    async with consumer:
        consumer.send({"type": "order", "id": 7})
        consumer.send({"type": "order", "id": 8})
        await wait_until(lambda: len(errors) == 2)
    assert got == [7, 8]
    assert all(isinstance(e, ValueError) for e in errors)
    assert (await consumer.status())["queue"]["failed"] == 2


async def test_several_failures_reach_the_policy_as_one_group() -> None:
    errors: list[BaseException] = []

    async def bad(m: dict[str, object]) -> None:
        raise KeyError("a")

    async def worse(m: dict[str, object]) -> None:
        raise OSError("b")

    consumer = fluid.AsyncConsumer(
        dispatcher_with(bad, worse), on_error=lambda m, e: errors.append(e)
    )
    async with consumer:
        consumer.send({"type": "order"})
        await wait_until(lambda: len(errors) == 1)
    (group,) = errors
    assert isinstance(group, ExceptionGroup)
    assert len(group.exceptions) == 2


def test_the_dispatcher_must_be_async() -> None:
    sync = fluid.Dispatcher[object](message_type=str)
    with pytest.raises(TypeError, match="dispatcher must be an AsyncDispatcher"):
        fluid.AsyncConsumer(sync)  # type: ignore[arg-type]
