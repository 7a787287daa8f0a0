"""Argument checks shared by the public constructors.

Bad input is rejected at the call that made it, with the offending value in
the message, so that a typo never turns into a hang or a late failure.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable
from types import FunctionType, MethodType
from typing import Any

__all__ = [
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
_INF = math.inf


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
