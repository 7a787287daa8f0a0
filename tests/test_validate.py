"""The argument checks every constructor runs: same answers, and cheap on the common path.

The checks run once per worker built, so their common cases take shortcuts
(a cached snake-case name, a code-flag test before ``inspect``, a float
returned as is). These tests hold that each shortcut answers exactly as the
full check does, that the full check still decides every other case, and
that nothing the shortcuts keep holds a user's function or class alive.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import math
import re
import sys
import types
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fluid
from fluid import _validate
from fluid._validate import (
    async_callable,
    check_async_callable,
    check_seconds,
    default_name,
    function_name,
    is_async_callable,
)

# ------------------------------------------------------------ references
# The checks as they were before the shortcuts: every answer must match.

_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def reference_snake(name: str) -> str:
    return _CAMEL.sub(r"\1_\2", _ACRONYM.sub(r"\1_\2", name)).lower()


def reference_is_async_callable(obj: object) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    return callable(obj) and inspect.iscoroutinefunction(type(obj).__call__)


def reference_check_seconds(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return seconds


def outcome(fn: Callable[[], object]) -> tuple[str, object]:
    """What a call returns or raises (type and message), for comparing two checks."""
    try:
        result = fn()
    except Exception as error:
        return type(error).__name__, str(error)
    return type(result).__name__, result


# ------------------------------------------------------------ default names


class HTTPPollWorker(fluid.Worker):
    async def run(self) -> None:
        pass


class JSONAPIPoller(HTTPPollWorker):
    pass


def test_default_names_of_classes_and_subclasses() -> None:
    assert HTTPPollWorker().worker_name == "http_poll_worker"
    assert JSONAPIPoller().worker_name == "jsonapi_poller"
    # again, from the cache: the same answers
    assert HTTPPollWorker().worker_name == "http_poll_worker"
    assert JSONAPIPoller().worker_name == "jsonapi_poller"
    assert default_name(JSONAPIPoller()) == default_name("JSONAPIPoller")


def test_a_class_redefined_or_renamed_gets_the_name_of_its_current_name() -> None:
    def make() -> type[fluid.Worker]:
        class QueuePoller(fluid.Worker):
            async def run(self) -> None:
                pass

        return QueuePoller

    first, second = make(), make()
    assert first is not second
    assert first().worker_name == second().worker_name == "queue_poller"
    second.__name__ = "OtherPoller"
    assert second().worker_name == "other_poller"
    assert first().worker_name == "queue_poller"


@given(st.text(alphabet="aAbBzZ09_xX", max_size=12))
def test_the_cached_snake_case_matches_the_regular_expressions(name: str) -> None:
    assert default_name(name) == reference_snake(name)
    assert default_name(name) == reference_snake(name)  # second time: from the cache


def test_the_snake_case_of_a_name_is_computed_once() -> None:
    """The regular expressions run once per distinct name, not once per worker."""
    _validate._snake_case.cache_clear()
    names = [fluid.WorkerFunction(_tick).worker_name for _ in range(50)]
    assert names == ["_tick"] * 50
    info = _validate._snake_case.cache_info()
    assert info.misses == 1
    assert info.hits == 49


def test_the_name_cache_is_bounded() -> None:
    for i in range(5000):
        assert default_name(f"Made{i}Worker") == f"made{i}_worker"
    maxsize = _validate._snake_case.cache_info().maxsize
    assert maxsize is not None
    assert _validate._snake_case.cache_info().currsize <= maxsize


async def _tick() -> None:
    pass


async def fetchHTTPPage() -> None:  # a camel-case function name on purpose
    pass


def test_function_names() -> None:
    assert function_name(_tick) == "_tick"
    assert function_name(fetchHTTPPage) == "fetch_http_page"
    assert function_name(functools.partial(_tick)) == ""  # a partial has no __name__
    assert function_name(lambda: None) == ""  # "<lambda>" is not an identifier
    assert fluid.WorkerFunction(fetchHTTPPage).worker_name == "fetch_http_page"
    assert fluid.WorkerFunction(functools.partial(_tick)).worker_name == "worker_function"


class AsyncCall:
    async def __call__(self) -> None:
        pass


class SyncCall:
    def __call__(self) -> None:
        pass


def test_default_names_of_callables_without_a_function_name() -> None:
    assert fluid.WorkerFunction(AsyncCall()).worker_name == "worker_function"


# ------------------------------------------------------------ async callables


class Methods:
    async def poll(self) -> None:
        pass

    def sync(self) -> None:
        pass

    @staticmethod
    async def static() -> None:
        pass

    @classmethod
    async def klass(cls) -> None:
        pass

    def gen(self) -> Iterator[None]:
        yield


def _sync() -> None:
    pass


async def _agen() -> Any:
    yield 1


def _candidates() -> list[object]:
    methods = Methods()
    return [
        _tick,
        _sync,
        _agen,
        fetchHTTPPage,
        functools.partial(_tick),
        functools.partial(functools.partial(_tick)),
        functools.partial(_sync),
        methods.poll,
        methods.sync,
        Methods.poll,
        Methods.static,
        Methods.klass,
        functools.partial(methods.poll),
        AsyncCall(),
        SyncCall(),
        functools.partial(AsyncCall()),
        AsyncCall,  # the class: calling it is not async
        print,
        len,
        None,
        42,
        "text",
        lambda: None,
    ]


@pytest.mark.parametrize("candidate", _candidates(), ids=repr)
def test_the_callable_check_answers_as_inspect_does(candidate: object) -> None:
    expected = reference_is_async_callable(candidate)
    assert is_async_callable(candidate) is expected
    if expected:
        assert check_async_callable("fn", candidate) is candidate
    else:
        message = f"fn must be a coroutine function (async def), got {candidate!r}"
        with pytest.raises(TypeError) as caught:
            check_async_callable("fn", candidate)
        assert str(caught.value) == message


def test_the_callable_check_reads_the_code_as_it_is_now() -> None:
    """No answer is kept per function: a function whose code changes gets the new answer."""

    async def changing() -> None:
        pass

    assert is_async_callable(changing)
    changing.__code__ = _sync.__code__
    assert not is_async_callable(changing)
    with pytest.raises(TypeError, match="must be a coroutine function"):
        check_async_callable("fn", changing)
    # a plain function saying "-> None" surely returns no awaitable: refused
    with pytest.raises(TypeError, match="or a callable returning an awaitable"):
        async_callable("fn", changing)
    changing.__annotations__ = {}  # says nothing: it may return one
    assert async_callable("fn", changing) is not changing  # wrapped: its result is checked
    changing.__code__ = _tick.__code__
    assert is_async_callable(changing)
    assert async_callable("fn", changing) is changing


def test_an_async_call_method_added_later_counts() -> None:
    class Later:
        def __call__(self) -> None:
            pass

    later = Later()
    assert not is_async_callable(later)
    Later.__call__ = AsyncCall.__call__  # type: ignore[method-assign, assignment]
    assert is_async_callable(later)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is 3.12+")
def test_a_function_marked_as_a_coroutine_function_counts() -> None:
    def marked() -> Any:
        return _tick()

    inspect.markcoroutinefunction(marked)  # type: ignore[attr-defined, unused-ignore]
    assert is_async_callable(marked)
    assert is_async_callable(functools.partial(marked))


def test_async_functions_and_methods_do_not_go_through_inspect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building a worker from an async function reads its code flags, not ``inspect``."""

    def refuse(obj: object) -> bool:
        raise AssertionError(f"inspect.iscoroutinefunction({obj!r}) called")

    monkeypatch.setattr(inspect, "iscoroutinefunction", refuse)
    methods = Methods()
    for candidate in (
        _tick,
        functools.partial(_tick),
        methods.poll,
        Methods.static,
        Methods.klass,
        AsyncCall(),
    ):
        assert is_async_callable(candidate)
    fluid.WorkerFunction(_tick)


# ------------------------------------------------ callables returning awaitables


@pytest.mark.parametrize("candidate", _candidates(), ids=repr)
def test_async_callables_are_taken_as_they_are(candidate: object) -> None:
    """What ``check_async_callable`` accepts, ``async_callable`` returns itself: no wrapper."""
    if is_async_callable(candidate):
        assert async_callable("fn", candidate) is candidate


@pytest.mark.parametrize(
    "candidate",
    [None, 42, "text", print, len, _agen, functools.partial(_agen)],
    ids=repr,
)
def test_what_surely_returns_no_awaitable_is_refused_at_once(candidate: object) -> None:
    with pytest.raises(TypeError) as caught:
        async_callable("fn", candidate)
    assert str(caught.value) == (
        "fn must be a coroutine function (async def) or a callable returning an "
        f"awaitable, got {candidate!r}"
    )


async def test_generator_functions_are_refused_but_iterable_coroutines_are_not() -> None:
    def plain() -> Iterator[None]:
        yield

    def legacy() -> Generator[None, None, str]:
        yield
        return "done"

    with pytest.raises(TypeError, match="must be a coroutine function"):
        async_callable("fn", plain)
    with pytest.raises(TypeError, match="must be a coroutine function"):
        async_callable("fn", Methods().gen)
    # @types.coroutine: a coroutine from before async def, awaitable, so taken
    assert await async_callable("fn", types.coroutine(legacy))() == "done"


async def test_a_callable_returning_an_awaitable_is_awaited() -> None:
    def makes_coroutine(x: int) -> Coroutine[Any, Any, int]:
        return _double(x)

    def makes_future(x: int) -> asyncio.Future[int]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(x * 3)
        return future

    class Calls:
        def __call__(self, x: int) -> Coroutine[Any, Any, int]:
            return _double(x)

    wrapped = async_callable("fn", makes_coroutine)
    assert await wrapped(2) == 4
    assert wrapped.__name__ == "makes_coroutine"  # default worker names keep working
    assert wrapped.__wrapped__ is makes_coroutine  # type: ignore[attr-defined]
    assert await async_callable("fn", lambda x: _double(x))(5) == 10
    assert await async_callable("fn", makes_future)(2) == 6
    assert await async_callable("fn", functools.partial(makes_coroutine, 7))() == 14
    assert await async_callable("fn", Calls())(1) == 2


async def test_a_callable_returning_no_awaitable_fails_at_its_call_naming_it() -> None:
    calls: list[int] = []

    def sync(x: int) -> list[int]:
        calls.append(x)
        return calls

    wrapped = async_callable("on_message", sync)
    with pytest.raises(TypeError) as caught:
        await wrapped(1)
    assert str(caught.value) == (
        f"on_message {sync!r} returned [1], not an awaitable: it must be a "
        "coroutine function (async def) or return an awaitable"
    )
    assert calls == [1]  # it was called: its result is what is wrong
    big = async_callable("fn", lambda: list(range(10_000)))
    with pytest.raises(TypeError, match=r"returned \[0, 1, 2, 3, 4, 5, \.\.\.\]"):
        await big()  # a big result is abbreviated in the message


async def _double(x: int) -> int:
    return x * 2


# ------------------------------------------------------------ nothing kept alive


def test_building_workers_keeps_no_function_alive() -> None:
    async def ephemeral() -> None:
        pass

    class Ephemeral:
        async def __call__(self) -> None:
            pass

    instance = Ephemeral()
    refs: list[weakref.ref[Any]] = [weakref.ref(ephemeral), weakref.ref(Ephemeral)]
    refs.append(weakref.ref(instance))
    tree = fluid.Workers(
        fluid.WorkerFunction(ephemeral),
        fluid.WorkerFunction(functools.partial(ephemeral)),
        fluid.WorkerFunction(instance),
        fluid.WorkerFunction(ephemeral, name="explicit"),
    )
    assert [w.worker_name for w in tree.children] == [
        "ephemeral",
        "worker_function",
        "worker_function-2",
        "explicit",
    ]
    del tree, ephemeral, Ephemeral, instance
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


# ------------------------------------------------------------ seconds


class FloatSub(float):
    pass


class IntSub(int):
    pass


SECONDS = [
    0,
    1,
    60,
    -1,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    0.5,
    -0.5,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    True,
    False,
    FloatSub(2.5),
    FloatSub(-1.0),
    FloatSub(math.nan),
    IntSub(3),
    IntSub(-3),
    "1",
    None,
    1j,
]


@pytest.mark.parametrize("value", SECONDS, ids=repr)
def test_seconds_are_checked_as_before(value: object) -> None:
    assert outcome(lambda: check_seconds("heartbeat", value)) == outcome(
        lambda: reference_check_seconds("heartbeat", value)
    )


@given(st.one_of(st.floats(), st.integers(), st.booleans()))
def test_seconds_of_any_number_are_checked_as_before(value: float) -> None:
    got = outcome(lambda: check_seconds("grace", value))
    assert got == outcome(lambda: reference_check_seconds("grace", value))
    if got[0] == "float":
        assert math.copysign(1, check_seconds("grace", value)) == math.copysign(1, float(value))


def _returns_none() -> None:
    pass


def _returns_flag() -> bool:
    return True


def _returns_unhashable():  # type: ignore[no-untyped-def]
    return None


_returns_unhashable.__annotations__ = {"return": {"an unhashable": "annotation"}}


def _says_nothing():  # type: ignore[no-untyped-def]
    return None


@pytest.mark.parametrize("fn", [_returns_none, _returns_flag])
def test_a_plain_function_annotated_with_a_plain_result_is_refused_at_once(fn: object) -> None:
    # the usual slip, `def job() -> None` where a coroutine function goes,
    # fails at the call that made the worker, not at its first run
    with pytest.raises(TypeError, match="or a callable returning an awaitable"):
        async_callable("fn", fn)
    with pytest.raises(TypeError, match="run_function"):
        fluid.WorkerFunction(fn)  # type: ignore[arg-type]


def test_a_plain_function_whose_annotation_says_nothing_known_is_checked_at_its_call() -> None:
    for fn in (_returns_unhashable, _says_nothing, lambda: None):
        wrapped = async_callable("fn", fn)
        with pytest.raises(TypeError, match="returned None, not an awaitable"):
            wrapped()
