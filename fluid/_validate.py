"""Argument checks shared by the public constructors.

Bad input is rejected at the call that made it, with the offending value in
the message, so that a typo never turns into a hang or a late failure.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import reprlib
from collections.abc import Awaitable, Callable
from types import BuiltinFunctionType, CoroutineType, FunctionType, MethodType
from typing import Any

__all__ = [
    "async_callable",
    "check_async_callable",
    "check_count",
    "check_name",
    "check_seconds",
    "default_name",
    "function_name",
]

_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_CO_COROUTINE = inspect.CO_COROUTINE
# Code flags of functions whose call never gives an awaitable: a generator
# (unless @types.coroutine made it an iterable coroutine) or an async generator.
_CO_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
_CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE
_INF = math.inf
_UNSAID = object()
_PLAIN_RETURNS = frozenset(
    [None, "None", bool, "bool", int, "int", float, "float", str, "str", bytes, "bytes"]
)
"""Return annotations that say a function returns no awaitable (as objects or strings)."""


def check_seconds(what: str, value: object) -> float:
    """Return ``value`` as a float of seconds, or raise for anything else."""
    # Every worker checks one or two of these when it is built: a plain
    # float or int in range returns at once (NaN fails both comparisons).
    # Anything else takes the full checks below, which give the message.
    if type(value) is float:
        if 0.0 <= value < _INF:
            return value
    elif type(value) is int and value >= 0:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return seconds


def check_name(name: object) -> str:
    """Return ``name`` if it is a string, else raise ``TypeError``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    return name


def is_async_callable(obj: object) -> bool:
    """True for coroutine functions, partials of them and async ``__call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if _is_async_def(obj) or (callable(obj) and _is_async_def(type(obj).__call__)):
        return True
    if inspect.iscoroutinefunction(obj):
        return True
    return callable(obj) and inspect.iscoroutinefunction(type(obj).__call__)


def _is_async_def(obj: object) -> bool:
    """True for an ``async def`` function or a method bound to one.

    The cheap, exact part of ``inspect.iscoroutinefunction``, which every
    worker built from a function pays for: it reads the function's code
    flags as they are now, so it needs no cache (a cache keyed on functions
    would keep them alive, or go stale when ``__code__`` is reassigned).
    Whatever it does not recognise goes to ``inspect``, so it only ever
    answers True sooner, never differently.
    """
    if type(obj) is MethodType:
        obj = obj.__func__
    return type(obj) is FunctionType and bool(obj.__code__.co_flags & _CO_COROUTINE)


def check_async_callable(what: str, fn: Any) -> Callable[..., Any]:
    """Return ``fn`` if it is an async callable, else raise ``TypeError``."""
    if type(fn) is FunctionType and fn.__code__.co_flags & _CO_COROUTINE:
        return fn  # an async def function: the common case, one test
    if not is_async_callable(fn):
        raise TypeError(f"{what} must be a coroutine function (async def), got {fn!r}")
    return fn  # type: ignore[no-any-return]


def async_callable(what: str, fn: Any) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function: itself if it is one, else a wrapper that awaits its result.

    The hints of fluid's handlers say ``Callable[..., Awaitable[...]]``, as
    aio-fluid's did: besides ``async def`` functions they admit a lambda
    wrapping a coroutine, a ``functools.partial`` of an async function, or an
    object whose ``__call__`` returns a coroutine. This check admits the same.

    An async callable (what ``check_async_callable`` accepts) is returned as
    is: calling it costs nothing more than before. Any other callable is
    wrapped once, here, in a function that calls it and returns what it
    returns, for the caller to await; whether that is awaitable can only be
    known by calling it, so a plain function that returns ``None`` raises a
    ``TypeError`` naming it at its first call. What can be told now is
    refused now: something not callable, a built-in function (C code is
    never ``async def``), a generator or async generator function, and a
    plain function annotated as returning ``None``, a ``bool``, a number or
    a string (``def job() -> None``: the usual slip).

    Raises:
        TypeError: ``fn`` is not callable, or surely returns no awaitable.
    """
    if type(fn) is FunctionType and fn.__code__.co_flags & _CO_COROUTINE:
        return fn  # an async def function: one test
    if is_async_callable(fn):
        return fn  # type: ignore[no-any-return]
    if not callable(fn) or _never_awaitable(fn):
        raise TypeError(
            f"{what} must be a coroutine function (async def) or a callable "
            f"returning an awaitable, got {fn!r}"
        )
    return _awaiting(what, fn)


def _never_awaitable(fn: object) -> bool:
    """True for callables whose result is surely not awaitable."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, BuiltinFunctionType):
        return True
    if type(fn) is MethodType:
        fn = fn.__func__
    if type(fn) is not FunctionType:
        return False
    flags = fn.__code__.co_flags
    if flags & _CO_GENERATORS:
        return not flags & _CO_ITERABLE_COROUTINE
    # a plain function annotated as returning a plain value (the usual slip:
    # a sync ``def job() -> None`` given where a coroutine function goes);
    # an unannotated one, like a lambda, may return a coroutine
    if hasattr(fn, "__wrapped__"):  # functools.wraps copied the annotations of another
        return False
    returns = fn.__annotations__.get("return", _UNSAID) if fn.__annotations__ else _UNSAID
    try:
        return returns in _PLAIN_RETURNS
    except TypeError:  # an annotation that is not hashable says nothing we know
        return False


def _awaiting(what: str, fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A function that calls ``fn`` and returns its result, once it is known awaitable.

    Not a coroutine function itself: the caller awaits ``fn``'s awaitable
    directly, so a call costs one Python call and a type test, not one more
    coroutine (half the added cost, measured). A result that is not awaitable
    raises at the call, which every caller makes inside the same ``try`` as
    its ``await``. The function carries ``fn``'s name (for default worker
    names) and ``__wrapped__``, as ``functools.wraps`` gives.
    """

    def awaiting(*args: Any) -> Awaitable[Any]:
        result = fn(*args)
        if type(result) is CoroutineType or inspect.isawaitable(result):
            return result
        raise TypeError(
            f"{what} {fn!r} returned {reprlib.repr(result)}, not an awaitable: it must "
            "be a coroutine function (async def) or return an awaitable"
        )

    functools.update_wrapper(awaiting, fn)
    if not isinstance(getattr(fn, "__name__", None), str):
        # a callable object or a partial names nothing: neither does the
        # wrapper, so a worker's default name is not "awaiting"
        awaiting.__name__ = awaiting.__qualname__ = ""
    return awaiting


def function_name(fn: object) -> str:
    """A worker name from a function's name (``fetch_prices``), or "" if it has none."""
    name = getattr(fn, "__name__", "")
    return default_name(name) if isinstance(name, str) and name.isidentifier() else ""


def default_name(obj: object) -> str:
    """A worker name from a class name: ``QueueConsumerWorker`` → ``queue_consumer_worker``."""
    return _snake_case(obj if isinstance(obj, str) else type(obj).__name__)


@functools.lru_cache(maxsize=1024)
def _snake_case(name: str) -> str:
    """``QueueConsumerWorker`` → ``queue_consumer_worker``, once per distinct name.

    Two regular expression substitutions cost more than the rest of building
    a worker, and a program builds many workers of few classes or functions.
    The cache is keyed on the name, a string, not on the class or function:
    the answer depends on nothing else (a class redefined under the same
    name, or renamed, gets the right one), and it keeps no user object
    alive. It is bounded for programs that make classes or functions with
    ever new names.
    """
    return _CAMEL.sub(r"\1_\2", _ACRONYM.sub(r"\1_\2", name)).lower()


def check_count(what: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value
