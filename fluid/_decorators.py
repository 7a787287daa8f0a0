"""Decorators that turn coroutine functions into workers: thin sugar over the classes.

Every decorator of fluid lives here, and each builds one worker of a fluid
class and nothing else: what ``@fluid.worker`` gives is a
[`WorkerFunction`][fluid.WorkerFunction], what ``@fluid.consumer`` gives is a
[`QueueConsumerWorker`][fluid.QueueConsumerWorker], what ``@fluid.on_trigger``
gives is a [`TriggerWorker`][fluid.TriggerWorker] and what ``@fluid.scheduled``
gives is a [`ScheduledWorker`][fluid.ScheduledWorker]. The overloads tell mypy
which class (and, for consumers, which message type) the decorated name holds.

The keyword arguments of a consumer and of a schedule are many, so they are
written once, as a ``TypedDict`` ([`ConsumerOptions`][fluid.ConsumerOptions],
[`ScheduleOptions`][fluid.ScheduleOptions]) that the decorator takes with
``**options: Unpack[...]``: mypy checks every name and type at the call, and a
test holds each ``TypedDict`` equal to the class's keyword parameters, so the
decorator cannot fall behind the class. The class keeps its parameters written
out, for its own signature and docstring.

Bad input fails at decoration: the arguments are checked when the decorator is
called, by the same checks as the classes', and the class checks the function
when the decorator is applied. Neither waits for the worker to start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, tzinfo
from typing import Any, Literal, TypedDict, TypeVar, Unpack, overload

from ._claim import SlotClaim, check_claim
from ._cron import CronExpression
from ._function import WorkerFunction
from ._plan import Missed, check_missed, check_mode
from ._policy import OnError, check_on_error
from ._queue import QueueConsumerWorker
from ._schedule import ScheduledWorker
from ._trigger import TriggerWorker
from ._validate import check_count, check_name, check_seconds, is_async_callable
from ._worker import STOPPING_GRACE_PERIOD

__all__ = [
    "ConsumerOptions",
    "ScheduleOptions",
    "consumer",
    "on_event",
    "on_trigger",
    "scheduled",
    "worker",
]

MessageT = TypeVar("MessageT")

RunFunction = Callable[[], Awaitable[bool | None]]
MessageHandler = Callable[[MessageT], Awaitable[None]]


class ConsumerOptions(TypedDict, total=False):
    """Keyword arguments of ``@fluid.consumer`` passed on to the consumer as they are.

    ``priority`` and ``on_error`` are separate keywords of the decorator: they
    take the message, so their type follows the decorated function's.

    Attributes:
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop (and drain).
        drain: on a graceful stop, handle what is queued before ending.
        maxsize: the most messages the queue holds (0: no limit).
        concurrency: how many messages are handled at once.

    Example:
        ```python
        options: fluid.ConsumerOptions = {"maxsize": 1000, "concurrency": 8}

        @fluid.consumer(**options)
        async def store(order: dict) -> None:
            await db.save(order)
        ```
    """

    name: str
    stopping_grace_period: float
    drain: bool
    maxsize: int
    concurrency: int


class ScheduleOptions(TypedDict, total=False):
    """Keyword arguments of ``@fluid.scheduled``: those of ``ScheduledWorker``, as they are.

    Their meaning, defaults and checks are the
    [`ScheduledWorker`][fluid.ScheduledWorker]'s; give exactly one of
    ``interval``, ``delay`` and ``cron``.

    Attributes:
        interval: seconds between the starts of two runs (fixed rate).
        delay: seconds between the end of a run and the start of the next.
        cron: a cron expression (string or [`CronExpression`][fluid.CronExpression]).
        tz: the zone of a cron string's times; UTC by default.
        initial_delay: seconds from ``startup()`` to the first run.
        max_count: end the worker after this many runs.
        missed: ``"skip"`` (default) or ``"catch_up"``.
        claim: a [`SlotClaim`][fluid.SlotClaim]: each slot runs on one replica.
        max_skew: with ``claim``, the largest difference between replicas' clocks.
        on_error: ``"log"`` (default), ``"stop"`` or a function ``(due, error)``.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.

    Example:
        ```python
        nightly: fluid.ScheduleOptions = {"cron": "30 2 * * *", "tz": "Europe/London"}

        @fluid.scheduled(**nightly)
        async def backup() -> None:
            print("backing up")
        ```
    """

    interval: float | None
    delay: float | None
    cron: str | CronExpression | None
    tz: tzinfo | str | None
    initial_delay: float
    max_count: int | None
    missed: Missed
    claim: SlotClaim | None
    max_skew: float | None
    on_error: OnError[datetime]
    name: str
    stopping_grace_period: float


_CONSUMER_OPTIONS = frozenset(ConsumerOptions.__optional_keys__)
_SCHEDULE_OPTIONS = frozenset(ScheduleOptions.__optional_keys__)


# ------------------------------------------------------------------- worker


@overload
def worker(fn: RunFunction, /) -> WorkerFunction: ...


@overload
def worker(
    *,
    heartbeat: float = 0,
    name: str = "",
    stopping_grace_period: float = STOPPING_GRACE_PERIOD,
) -> Callable[[RunFunction], WorkerFunction]: ...


def worker(
    fn: RunFunction | None = None,
    /,
    *,
    heartbeat: float = 0,
    name: str = "",
    stopping_grace_period: float = STOPPING_GRACE_PERIOD,
) -> WorkerFunction | Callable[[RunFunction], WorkerFunction]:
    """Turn a coroutine function into a [`WorkerFunction`][fluid.WorkerFunction].

    Use it bare (``@fluid.worker``) or with the worker's keyword arguments. The
    function is awaited in a loop, ``heartbeat`` seconds apart, until the
    worker is stopped or the function returns ``False``.

    Args:
        fn: the coroutine function, when the decorator is used bare.
        heartbeat: seconds to sleep between two calls.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.

    Returns:
        The worker, or a decorator that makes it.

    Raises:
        TypeError: the decorated object is not a coroutine function, or an
            argument has the wrong type.
        ValueError: ``heartbeat`` or the grace period is negative.

    Example:
        ```python
        @fluid.worker(heartbeat=5)
        async def poll_prices() -> None:
            print("polling")

        async with poll_prices:  # a fluid.WorkerFunction named "poll_prices"
            await asyncio.sleep(12)
        ```
    """
    check_seconds("heartbeat", heartbeat)
    check_name(name)
    check_seconds("stopping_grace_period", stopping_grace_period)

    def decorate(fn: RunFunction) -> WorkerFunction:
        _check_function("worker", fn)
        return WorkerFunction(
            fn, heartbeat=heartbeat, name=name, stopping_grace_period=stopping_grace_period
        )

    return decorate if fn is None else decorate(fn)


# ----------------------------------------------------------------- consumer


@overload
def consumer(fn: MessageHandler[MessageT], /) -> QueueConsumerWorker[MessageT]: ...


@overload
def consumer(
    *,
    priority: None = None,
    on_error: Literal["log", "stop"] = "log",
    **options: Unpack[ConsumerOptions],
) -> Callable[[MessageHandler[MessageT]], QueueConsumerWorker[MessageT]]: ...


@overload
def consumer(
    *,
    priority: Callable[[MessageT], Any] | None = None,
    on_error: OnError[MessageT] = "log",
    **options: Unpack[ConsumerOptions],
) -> Callable[[MessageHandler[MessageT]], QueueConsumerWorker[MessageT]]: ...


# The second overload binds no type variable in its arguments, so mypy keeps
# the returned decorator generic and takes the message type from the decorated
# function. The third binds it from ``priority`` or an ``on_error`` function,
# so that they are checked against the function's message type.


def consumer(
    fn: MessageHandler[MessageT] | None = None,
    /,
    *,
    priority: Callable[[MessageT], Any] | None = None,
    on_error: OnError[MessageT] = "log",
    **options: Unpack[ConsumerOptions],
) -> (
    QueueConsumerWorker[MessageT]
    | Callable[[MessageHandler[MessageT]], QueueConsumerWorker[MessageT]]
):
    """Turn a coroutine function of one message into a queue consumer.

    The result is a [`QueueConsumerWorker`][fluid.QueueConsumerWorker] whose
    message type is the function's. Use it bare (``@fluid.consumer``) or with
    the consumer's keyword arguments, passed on as they are. Send messages to
    the result with ``send()`` or ``await put()``.

    Args:
        fn: the coroutine function, when the decorator is used bare.
        priority: a function giving each message's priority, lowest first.
        on_error: ``"log"`` (default), ``"stop"`` or a function
            ``(message, error)``, as for ``QueueConsumerWorker``.
        **options: the other keyword arguments of ``QueueConsumerWorker``: see
            [`ConsumerOptions`][fluid.ConsumerOptions]. ``name`` defaults to the
            function's name.

    Returns:
        The consumer, or a decorator that makes it.

    Raises:
        TypeError: the decorated object is not a coroutine function, a keyword
            is unknown or an argument has the wrong type.
        ValueError: an argument is out of range (``maxsize``, ``concurrency``,
            the grace period, ``on_error``).

    Example:
        ```python
        @fluid.consumer(maxsize=1000, concurrency=8)
        async def store(order: dict) -> None:
            await db.save(order)

        async with store:  # a fluid.QueueConsumerWorker[dict] named "store"
            await store.put({"id": 1})
        ```
    """
    _check_keywords("consumer", options, _CONSUMER_OPTIONS)
    check_name(options.get("name", ""))
    check_seconds("stopping_grace_period", options.get("stopping_grace_period", 0))
    check_on_error(on_error)

    def decorate(fn: MessageHandler[MessageT]) -> QueueConsumerWorker[MessageT]:
        _check_function("consumer", fn)
        return QueueConsumerWorker(fn, priority=priority, on_error=on_error, **options)

    return decorate if fn is None else decorate(fn)


# --------------------------------------------------------------- on_trigger


@overload
def on_trigger(fn: RunFunction, /) -> TriggerWorker: ...


@overload
def on_trigger(
    *,
    name: str = "",
    stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    on_error: OnError[int] = "log",
) -> Callable[[RunFunction], TriggerWorker]: ...


def on_trigger(
    fn: RunFunction | None = None,
    /,
    *,
    name: str = "",
    stopping_grace_period: float = STOPPING_GRACE_PERIOD,
    on_error: OnError[int] = "log",
) -> TriggerWorker | Callable[[RunFunction], TriggerWorker]:
    """Turn a coroutine function into a [`TriggerWorker`][fluid.TriggerWorker].

    Use it bare (``@fluid.on_trigger``) or with the worker's keyword arguments.
    The function runs once per ``trigger()``; triggers during a run coalesce
    into one more run.

    Args:
        fn: the coroutine function, when the decorator is used bare.
        name: the worker's name; by default the function's name.
        stopping_grace_period: seconds given to a graceful stop.
        on_error: ``"log"`` (default), ``"stop"`` or a function ``(run, error)``.

    Returns:
        The worker, or a decorator that makes it.

    Raises:
        TypeError: the decorated object is not a coroutine function, or an
            argument has the wrong type.
        ValueError: the grace period is negative or ``on_error`` unknown.

    Example:
        ```python
        @fluid.on_trigger
        async def rebuild_index() -> None:
            print("rebuilding")

        async with rebuild_index:  # a fluid.TriggerWorker
            rebuild_index.trigger()
        ```
    """
    check_name(name)
    check_seconds("stopping_grace_period", stopping_grace_period)
    check_on_error(on_error)

    def decorate(fn: RunFunction) -> TriggerWorker:
        _check_function("on_trigger", fn)
        return TriggerWorker(
            fn, name=name, stopping_grace_period=stopping_grace_period, on_error=on_error
        )

    return decorate if fn is None else decorate(fn)


on_event = on_trigger
"""The earlier name of [`on_trigger`][fluid.on_trigger], kept for earlier code."""


# ---------------------------------------------------------------- scheduled


def scheduled(**options: Unpack[ScheduleOptions]) -> Callable[[RunFunction], ScheduledWorker]:
    """Decorate a coroutine function to make it a [`ScheduledWorker`][fluid.ScheduledWorker].

    The arguments are those of ``ScheduledWorker`` (see
    [`ScheduleOptions`][fluid.ScheduleOptions]) and are checked when the
    decorator is called; the decorated name holds the worker.

    Args:
        **options: the keyword arguments of ``ScheduledWorker``; exactly one of
            ``interval``, ``delay`` and ``cron``. ``name`` defaults to the
            function's name.

    Returns:
        A decorator that makes the worker.

    Raises:
        ValueError: as ``ScheduledWorker`` does, at decoration.
        TypeError: a keyword is unknown or an argument has the wrong type; the
            decorated object is not a coroutine function.

    Example:
        ```python
        @fluid.scheduled(interval=5)
        async def poll_prices() -> None:
            print("polling")

        async with poll_prices:  # a ScheduledWorker named "poll_prices"
            await asyncio.sleep(12)
        ```
    """
    _check_keywords("scheduled", options, _SCHEDULE_OPTIONS)
    # The checks of ScheduledWorker.__init__, in its order, with its defaults.
    delay = options.get("delay")
    interval, delay, _ = check_mode(
        options.get("interval"), delay, options.get("cron"), options.get("tz")
    )
    check_seconds("initial_delay", options.get("initial_delay", 0))
    max_count = options.get("max_count")
    if max_count is not None:
        check_count("max_count", max_count, 1)
    missed = check_missed(options.get("missed", "skip"), delay)
    check_claim(options.get("claim"), options.get("max_skew"), interval, delay, missed)
    check_on_error(options.get("on_error", "log"))
    check_name(options.get("name", ""))
    check_seconds("stopping_grace_period", options.get("stopping_grace_period", 0))

    def decorate(fn: RunFunction) -> ScheduledWorker:
        return ScheduledWorker(fn, **options)

    return decorate


# ---------------------------------------------------------------- internals


def _check_function(decorator: str, fn: object) -> None:
    """Reject what is not a coroutine function, with a hint for a misplaced argument."""
    if is_async_callable(fn):
        return
    hint = ""
    if not callable(fn):
        hint = f"; pass options by keyword, e.g. @fluid.{decorator}(name=...)"
    raise TypeError(
        f"@fluid.{decorator} decorates a coroutine function (async def), got {fn!r}{hint}"
    )


def _check_keywords(decorator: str, options: Mapping[str, object], known: frozenset[str]) -> None:
    """Refuse keywords the class does not take, as a written-out signature would."""
    unknown = sorted(options.keys() - known)
    if unknown:
        raise TypeError(f"{decorator}() got unknown keyword arguments: {', '.join(unknown)}")
