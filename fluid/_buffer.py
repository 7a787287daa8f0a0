"""The message stores behind a queue consumer.

A FIFO queue is a plain ``collections.deque``: append and popleft are atomic,
so senders in any thread need no lock. A priority queue is a heap, which is
not: ``PriorityBuffer`` guards it with a lock and offers the same four
operations the consumer loop uses (``append``, ``popleft``, ``appendleft``,
``len``), so both kinds run through one code path.

A producer waiting for room in a bounded queue is a ``WaitingPut``: a future
for a coroutine, a ``threading.Event`` for a thread. The consumer admits them
in order, under the queue's lock, as it takes messages.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PriorityBuffer", "WaitingPut"]

MessageT = TypeVar("MessageT")


class PriorityBuffer(Generic[MessageT]):
    """Messages ordered by ``key(message)``, lowest first, first in first out among equals."""

    __slots__ = ("_heap", "_key", "_lock", "_order")

    def __init__(self, key: Callable[[MessageT], Any]) -> None:
        self._key = key
        self._heap: list[tuple[Any, int, MessageT]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._heap)

    def append(self, message: MessageT) -> None:
        """Add a message behind those of equal priority."""
        entry = (self._key(message), next(self._order), message)
        with self._lock:
            heapq.heappush(self._heap, entry)

    def appendleft(self, message: MessageT) -> None:
        """Put a message back in front of those of equal priority."""
        entry = (self._key(message), -next(self._order), message)
        with self._lock:
            heapq.heappush(self._heap, entry)

    def popleft(self) -> MessageT:
        """Remove and return the message of lowest priority (IndexError if empty)."""
        with self._lock:
            return heapq.heappop(self._heap)[2]


class WaitingPut(Generic[MessageT]):
    """A producer waiting for room: an async one (future) or a thread (event).

    A thread's message is appended when it is admitted. An async producer is
    only woken: it appends its own message when it resumes, so that a
    cancellation arriving in between leaves nothing queued (as
    ``asyncio.Lock`` hands itself over). Until then it keeps its place at the
    head of the waiting producers, and so the room it was given.
    """

    __slots__ = ("admitted", "event", "future", "message")

    def __init__(self, message: MessageT, future: asyncio.Future[None] | None) -> None:
        self.message = message
        self.future = future
        self.event = threading.Event() if future is None else None
        self.admitted = False

    def admit(self) -> None:
        """Tell a waiting thread its message is in."""
        assert self.event is not None
        self.admitted = True
        self.event.set()

    def wake(self) -> None:
        """Tell an async producer there is room (from any thread)."""
        future = self.future
        assert future is not None
        loop = future.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if not future.done():
                future.set_result(None)
        else:
            loop.call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
