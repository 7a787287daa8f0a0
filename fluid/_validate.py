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


def check_seconds(what: str, value: object) -> float:
    """Return ``value`` as a float of seconds, or raise for anything else."""
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
    if inspect.iscoroutinefunction(obj):
        return True
    return callable(obj) and inspect.iscoroutinefunction(type(obj).__call__)


def check_async_callable(what: str, fn: Any) -> Callable[..., Any]:
    """Return ``fn`` if it is an async callable, else raise ``TypeError``."""
    if not is_async_callable(fn):
        raise TypeError(f"{what} must be a coroutine function (async def), got {fn!r}")
    return fn  # type: ignore[no-any-return]


def function_name(fn: object) -> str:
    """A worker name from a function's name (``fetch_prices``), or "" if it has none."""
    name = getattr(fn, "__name__", "")
    return default_name(name) if isinstance(name, str) and name.isidentifier() else ""


def default_name(obj: object) -> str:
    """A worker name from a class name: ``QueueConsumerWorker`` → ``queue_consumer_worker``."""
    name = obj if isinstance(obj, str) else type(obj).__name__
    return _CAMEL.sub(r"\1_\2", _ACRONYM.sub(r"\1_\2", name)).lower()


def check_count(what: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value
