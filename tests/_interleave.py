"""Randomized interleaving: an event loop that runs ready callbacks in a seeded random order.

A test that passes only because the tasks it starts happen to run in the
order they were created rests on an ordering assumption: under this loop it
fails, quickly and reproducibly (same seed, same choices; I/O and thread
timing aside).

What may be shuffled. asyncio documents that callbacks "are called in the
order in which they are registered" (``call_soon``), and real code relies on
it within one flow of control: a task that calls ``fut.set_result()`` then
``loop.call_soon(f)`` expects the waiter's wake-up before ``f``; a transport
calls ``connection_made`` before ``data_received``. So a plain shuffle of
the ready queue would break promises that correct code may rely on, and
report bugs that are not there. What no correct code may rely on is how
*independent* flows interleave: which of two tasks woken in the same turn
runs first, whether a wake-up coming from another task runs before or after
a timer that fell due. This loop keeps FIFO order per *source* and picks at
random which source runs next:

* a callback's source is the task that was running when it was registered
  (``call_soon`` from a task step, including futures' callbacks scheduled by
  ``set_result``); callbacks registered on the loop outside any task (from
  other plain callbacks) share one source; each thread using
  ``call_soon_threadsafe`` is a source; the loop's own I/O callbacks and the
  timers that fall due share another, in the order the loop queued them;
* each pop takes the oldest callback of a source chosen at random among the
  first ``WINDOW`` ready callbacks whose source has no older callback
  waiting. An older callback is never overtaken by a newer one of its own
  source, so per-source FIFO holds; a callback passed over stays at the
  front and runs in a later pop or turn (delaying is always allowed: another
  loop could be slower).

Threads: ``sys.setswitchinterval`` is set tiny while a shuffling loop is
open, so that thread races show up too.

Use it through ``tests/conftest.py``: every async test runs on it when
``FLUID_INTERLEAVE_SEED`` is set (``random`` for a fresh seed, shown in the
test ids), and the core modules run once more on it under fixed seeds in
every run.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SWITCH_INTERVAL", "WINDOW", "ShuffledReady", "ShufflingLoop", "shuffling_loop_factory"]

WINDOW = 16
"""How many ready callbacks, from the front, compete for the next pop."""
SWITCH_INTERVAL = 1e-5
"""The thread switch interval while a shuffling loop is open (CPython's default: 5e-3)."""

_OUTSIDE = "outside a task"
_LOOP = "the loop's own"  # I/O callbacks and timers that fell due, appended by _run_once


class ShuffledReady(collections.deque[asyncio.Handle]):
    """The loop's ready queue: ``popleft`` takes the next callback of a random source."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng
        self.sources: dict[asyncio.Handle, object] = {}
        self.shuffled = 0  # pops that did not take the front: the mode is doing something

    def popleft(self) -> asyncio.Handle:
        candidates: list[int] = []
        seen: set[object] = set()
        for index in range(min(WINDOW, len(self))):
            source = self.sources.get(self[index], _LOOP)
            if source not in seen:
                seen.add(source)
                candidates.append(index)
        index = self._rng.choice(candidates) if len(candidates) > 1 else 0
        if index == 0:
            handle = super().popleft()
        else:
            handle = self[index]
            del self[index]
            self.shuffled += 1
        self.sources.pop(handle, None)
        return handle

    def clear(self) -> None:
        super().clear()
        self.sources.clear()


class ShufflingLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, with its ready callbacks interleaved at random across sources.

    Example:
        ```python
        loop = ShufflingLoop(seed=7)
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
        ```
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self._ready: ShuffledReady = ShuffledReady(random.Random(seed))
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)

    @property
    def shuffled(self) -> int:
        """How many callbacks ran ahead of an older one (of another source)."""
        return self._ready.shuffled

    def _call_soon(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> asyncio.Handle:
        handle: asyncio.Handle = super()._call_soon(callback, args, context)  # type: ignore[misc]
        ident = threading.get_ident()
        source: object
        if ident != self._thread_id:  # type: ignore[attr-defined]  # another thread, or not running
            source = ("thread", ident)
        else:
            source = asyncio.current_task(self) or _OUTSIDE
        self._ready.sources[handle] = source
        return handle

    def close(self) -> None:
        if not self.is_closed():
            sys.setswitchinterval(self._switch_interval)
        super().close()


def shuffling_loop_factory(seed: int) -> Callable[[], ShufflingLoop]:
    """A loop factory for ``asyncio.Runner`` and pytest-asyncio: a new shuffling loop a call."""

    def factory() -> ShufflingLoop:
        return ShufflingLoop(seed)

    return factory
