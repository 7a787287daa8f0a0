"""Helpers for testing code built on fluid: virtual time, so that schedules run in milliseconds.

[`VirtualTimeLoop`][fluid.testing.VirtualTimeLoop] is an asyncio event loop
whose clock is a [`VirtualClock`][fluid.testing.VirtualClock]. Whenever every
task is waiting and no I/O is ready, the clock *jumps* to the next timer, as
trio's ``MockClock`` does with ``autojump_threshold=0``: an hour of
``asyncio.sleep``, ``call_later`` or fluid schedules passes in microseconds,
in the same order as in real time, and the same way on every run.

How it works: asyncio's loop asks its selector to wait for I/O for as long as
the next timer is away. The virtual loop's selector first looks for I/O
without waiting (or waits ``autojump_threshold`` real seconds); if none came,
it moves the clock forward by the time asked and returns, and the loop then
runs the timer that is now due. Only public asyncio API is used: the loop is
a ``SelectorEventLoop`` given this selector, with ``time()`` overridden.

The clock also keeps a virtual wall clock (``wall_time()``): fluid's cron and
``at=`` schedules read it from the loop, so they run on virtual time too.

Caveat: while a thread works (``asyncio.to_thread``, an executor) the loop
sees no I/O and the clock may jump past timers meant to wait for it. Give
such tests an ``autojump_threshold`` (real seconds the loop waits for I/O or
a thread before it jumps).
"""

from __future__ import annotations

import asyncio
import functools
import math
import selectors
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = ["VirtualClock", "VirtualTimeLoop", "current_clock", "run", "virtual_time"]

P = ParamSpec("P")
T = TypeVar("T")


def _check_seconds(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, got {value!r}")
    return float(value)


class VirtualClock:
    """A clock for event loops that runs on virtual time.

    Args:
        start: the value ``time()`` starts at (the loop's monotonic clock).
        wall: the virtual wall-clock time at ``start``: an aware datetime or
            a POSIX timestamp; by default the real time when the clock is made.
        autojump_threshold: real seconds the loop waits for I/O (or a thread)
            before jumping to its next timer; ``0`` jumps at once, ``math.inf``
            never (time then moves only by [`jump`][fluid.testing.VirtualClock.jump]).

    Raises:
        ValueError: a negative threshold, or a naive ``wall`` datetime.

    Example:
        ```python
        clock = fluid.testing.VirtualClock(wall=datetime(2024, 3, 31, tzinfo=UTC))
        with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            runner.run(main())  # an hour of sleeps takes milliseconds
        ```
    """

    __slots__ = ("_autojump_threshold", "_time", "_wall_offset")

    def __init__(
        self,
        *,
        start: float = 0.0,
        wall: datetime | float | None = None,
        autojump_threshold: float = 0.0,
    ) -> None:
        self._time = float(start)
        self._wall_offset = 0.0
        self.set_wall(time.time() if wall is None else wall)
        self._autojump_threshold = _check_seconds("autojump_threshold", autojump_threshold)

    def __repr__(self) -> str:
        return f"<VirtualClock time={self._time} wall={self.now().isoformat()}>"

    @property
    def autojump_threshold(self) -> float:
        """Real seconds to wait for I/O before jumping to the next timer."""
        return self._autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        self._autojump_threshold = _check_seconds("autojump_threshold", value)

    def time(self) -> float:
        """The virtual monotonic time: what ``loop.time()`` returns."""
        return self._time

    def wall_time(self) -> float:
        """The virtual wall clock, as a POSIX timestamp; it moves with ``time()``."""
        return self._wall_offset + self._time

    def now(self, tz: tzinfo = UTC) -> datetime:
        """The virtual wall clock as an aware datetime in ``tz``.

        Example:
            ```python
            print(fluid.testing.current_clock().now())
            ```
        """
        return datetime.fromtimestamp(self.wall_time(), tz)

    def jump(self, seconds: float) -> None:
        """Move time forward; timers now due run on the loop's next turn.

        Call it from the loop's thread (from another thread:
        ``loop.call_soon_threadsafe(clock.jump, seconds)``).

        Raises:
            ValueError: ``seconds`` is negative: time never goes back.

        Example:
            ```python
            clock.jump(60)  # a minute passes
            await asyncio.sleep(0)  # let what is now due run
            ```
        """
        self._time += _check_seconds("seconds", seconds)

    def set_wall(self, wall: datetime | float) -> None:
        """Set the wall clock, as NTP or an operator stepping the system clock would.

        ``time()`` does not move: timers keep their places, and what reads the
        wall clock (cron and ``at=`` schedules) sees the step.

        Args:
            wall: the new wall-clock time: an aware datetime or a POSIX timestamp.

        Raises:
            ValueError: ``wall`` is a naive datetime.

        Example:
            ```python
            clock.set_wall(clock.now() + timedelta(hours=2))  # the clock jumps ahead
            ```
        """
        if isinstance(wall, datetime):
            if wall.tzinfo is None or wall.utcoffset() is None:
                raise ValueError(f"wall must be timezone-aware, got {wall!r}")
            wall = wall.timestamp()
        self._wall_offset = float(wall) - self._time

    def new_event_loop(self) -> VirtualTimeLoop:
        """A new event loop running on this clock: a ``loop_factory``.

        Example:
            ```python
            asyncio.Runner(loop_factory=clock.new_event_loop)
            ```
        """
        return VirtualTimeLoop(self)


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, instead of sleeping until the next timer, moves the clock to it."""

    def __init__(self, clock: VirtualClock) -> None:
        self._selector = selectors.DefaultSelector()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return self._selector.select(0)
        threshold = self._clock.autojump_threshold
        if timeout is None or math.isinf(threshold):
            return self._selector.select(None)  # nothing to jump to: wait for I/O or a thread
        events = self._selector.select(threshold)
        if not events:
            self._clock.jump(timeout)  # the loop asked to sleep until its next timer
        return events

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._selector.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._selector.modify(fileobj, events, data)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._selector.get_map()

    def close(self) -> None:
        self._selector.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on a [`VirtualClock`][fluid.testing.VirtualClock].

    ``loop.time()`` is the clock's virtual time, and whenever every task is
    waiting the clock jumps to the next timer. Use the class itself as a loop
    factory: ``asyncio.Runner(loop_factory=VirtualTimeLoop)``; or, with
    pytest-asyncio, from a ``conftest.py``:

    ```python
    def pytest_asyncio_loop_factories(config, item):
        return {"virtual": fluid.testing.VirtualTimeLoop}
    ```

    Args:
        clock: the clock to run on; a new ``VirtualClock()`` by default.

    Example:
        ```python
        async def main() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(3600)
            print(loop.time())  # 3600.0, a few microseconds later

        with asyncio.Runner(loop_factory=fluid.testing.VirtualTimeLoop) as runner:
            runner.run(main())
        ```
    """

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self._virtual_clock = VirtualClock() if clock is None else clock
        super().__init__(_JumpingSelector(self._virtual_clock))

    @property
    def clock(self) -> VirtualClock:
        """The loop's clock."""
        return self._virtual_clock

    def time(self) -> float:
        """The virtual monotonic time."""
        return self._virtual_clock.time()

    def wall_time(self) -> float:
        """The virtual wall clock (fluid's cron and ``at=`` schedules read it)."""
        return self._virtual_clock.wall_time()


def current_clock() -> VirtualClock:
    """The clock of the running virtual-time loop.

    Raises:
        RuntimeError: no loop is running, or it is not a
            [`VirtualTimeLoop`][fluid.testing.VirtualTimeLoop].

    Example:
        ```python
        @fluid.testing.virtual_time
        async def test_nightly() -> None:
            clock = fluid.testing.current_clock()
            clock.jump(3600)
        ```
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise RuntimeError(f"the running loop {loop!r} is not a fluid.testing.VirtualTimeLoop")
    return loop.clock


def run(main: Coroutine[Any, Any, T], *, clock: VirtualClock | None = None) -> T:
    """Run a coroutine on virtual time, like ``asyncio.run``, and check nothing is left.

    Args:
        main: the coroutine to run.
        clock: the clock to run on; a new ``VirtualClock()`` by default.

    Returns:
        What ``main`` returned.

    Raises:
        AssertionError: ``main`` returned but left tasks running (they are
            cancelled first): in a test, a worker that was never stopped.

    Example:
        ```python
        async def main() -> None:
            async with fluid.ScheduledWorker(tick, interval=60):
                await asyncio.sleep(3600)  # sixty ticks, in milliseconds

        fluid.testing.run(main())
        ```
    """
    with asyncio.Runner(loop_factory=(clock or VirtualClock()).new_event_loop) as runner:
        return runner.run(_leaving_nothing(main))


async def _leaving_nothing(main: Coroutine[Any, Any, T]) -> T:
    result = await main
    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in left:
        task.cancel()
    if left:
        raise AssertionError(f"left {len(left)} task(s) running: {left[:3]}")
    return result


@overload
def virtual_time(fn: Callable[P, Coroutine[Any, Any, None]], /) -> Callable[P, None]: ...


@overload
def virtual_time(
    *, wall: datetime | float | None = None, autojump_threshold: float = 0.0
) -> Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, None]]: ...


def virtual_time(
    fn: Callable[P, Coroutine[Any, Any, None]] | None = None,
    /,
    *,
    wall: datetime | float | None = None,
    autojump_threshold: float = 0.0,
) -> Callable[P, None] | Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, None]]:
    """Make an ``async def`` test a plain function that runs on its own virtual clock.

    Each call runs in a fresh [`VirtualTimeLoop`][fluid.testing.VirtualTimeLoop]
    through [`run`][fluid.testing.run], so the test fails if it leaves a task
    running. Works with any test runner; pytest fixtures are passed through.

    Args:
        fn: the test.
        wall: the virtual wall-clock time the test starts at (see
            [`VirtualClock`][fluid.testing.VirtualClock]).
        autojump_threshold: as for ``VirtualClock``.

    Example:
        ```python
        @fluid.testing.virtual_time(wall=datetime(2024, 3, 31, tzinfo=UTC))
        async def test_polls_every_minute() -> None:
            calls = []

            async def poll() -> None:
                calls.append(fluid.testing.current_clock().time())

            async with fluid.ScheduledWorker(poll, interval=60):
                await asyncio.sleep(150)
            assert calls == [0.0, 60.0, 120.0]
        ```
    """
    threshold = _check_seconds("autojump_threshold", autojump_threshold)

    def decorate(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
        @functools.wraps(test)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            clock = VirtualClock(wall=wall, autojump_threshold=threshold)
            run(test(*args, **kwargs), clock=clock)

        return wrapper

    return decorate if fn is None else decorate(fn)
