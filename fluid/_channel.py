"""Channel: the bounded, thread-safe message channel a queue consumer owns.

A channel holds the messages, the producers waiting for room, the consumer's
tasks waiting for a message, and the books. It has two states:

* **open**: from its creation until its consumer's run ends, and again from
  the consumer's next start. Producers that find it full may wait for room.
* **closed**: the consumer's run ended (or its ``startup()`` ended it without
  a run: a failed or forced ``on_startup()``); nothing takes messages until
  it is started again. A message that fits is still accepted (it waits for
  the next run, as documented for ``send`` on a stopped consumer), but a
  producer that would have to wait is refused with
  [`QueueClosed`][fluid.QueueClosed] at once, and the producers waiting when
  it closed are refused the same way: no producer ever waits for room that
  nobody will make.

Sending is lock-free when the channel is unbounded: appending to a
``collections.deque`` is atomic, and ``sent`` is an ``itertools.count``, whose
``next()`` is one C call (a read of ``sent`` takes a value too: see
``Channel.sent``). A send then only has to wake the consumer if it is
asleep: on the loop's own thread with ``future.set_result``, from another
thread with one ``call_soon_threadsafe`` (a flag makes a burst cost one). The
lost wake-up is closed by ordering: a reader publishes its waiter *before* it
looks at the buffer a last time, a sender appends *before* it looks for a
waiter; whatever the interleaving, one of them sees the other.

Admission to a bounded channel. Everything a producer decides is decided under
the channel's one lock: "is there room, and nobody ahead of me?", "then I
append", "else I join the line", "anybody who can come in now is let in"
(``_admit_locked``). The consumer's hot path takes a message without the lock
(``popleft`` is atomic) and then reads, also without the lock, whether
producers wait. That read cannot strand a producer:

* a producer that joins the line runs ``_admit_locked`` itself right after,
  under the lock: if the consumer took a message before that point, the
  producer sees the room and is admitted at once;
* otherwise the consumer's take comes after the producer joined the line, so
  its read of the line (program order: take, then read) sees the producer,
  and it admits it under the lock.

Either the producer sees the room or the consumer sees the producer (the
interpreter runs one thread's bytecode at a time, so the two threads' steps
form one order). Admission under the lock is idempotent, so both seeing each
other is harmless. Invariant, under the lock: producers wait only when the
buffer is full or an admitted coroutine is on its way (below).

Waiting producers are admitted in the order they came, and a newcomer never
overtakes them. A thread's message is appended by whoever admits it, so a
thread that times out either sent (it was admitted first) or did not, never
half. A coroutine (``put``) is only *woken*: it appends its own message when
it resumes, so a cancellation arriving in between (an ``asyncio.timeout``
expiring) sends nothing and passes its room on, as ``asyncio.Lock`` hands
itself over. Until it resumes it is *on its way*: it holds the room, nobody
is admitted behind it (its message would be overtaken), and a draining
consumer waits for it, so a ``put()`` admitted during a drain is handled by
that drain.

The books: ``sent = handled + failed + taken + size + in_flight``. The
channel counts ``sent`` (on append), ``started`` (a message taken by the
consumer), ``taken`` (``take_all``); the consumer that took a message books
its outcome in ``handled`` or ``failed``, or gives it back with ``put_back``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, Literal, Protocol, TypeAlias, TypeVar

from ._errors import QueueClosed, QueueFull
from ._waiting import release, wait_released

__all__ = ["EMPTY", "Channel", "Empty"]

_READING = threading.Lock()
"""Serialises the reads of every channel's ``sent`` (see ``Channel.sent``)."""

MessageT = TypeVar("MessageT")


class _Empty(enum.Enum):
    EMPTY = "EMPTY"


EMPTY: Final = _Empty.EMPTY
"""What ``Channel.take`` returns when there is no message (None is a message)."""

Empty: TypeAlias = Literal[_Empty.EMPTY]
"""The type of ``EMPTY``."""

_WAITING: Final = 0
_ADMITTED: Final = 1
_REFUSED: Final = 2


class Named(Protocol):
    """The channel's owner, named in error messages (it may be renamed by a tree)."""

    @property
    def worker_name(self) -> str: ...


class Channel(Generic[MessageT]):
    """A thread-safe channel of messages with one consuming side (documented-internal).

    Args:
        owner: whose queue it is, for error messages.
        maxsize: the most messages it holds; 0 for no limit.
        priority: a key of the message: lowest first, FIFO among equals.

    Example:
        ```python
        channel = Channel(consumer, maxsize=8)
        channel.open(asyncio.get_running_loop())
        channel.send("hello")
        assert channel.take() == "hello"
        ```
    """

    __slots__ = (
        "_append",
        "_buffer",
        "_count_sent",
        "_line",
        "_lock",
        "_loop",
        "_maxsize",
        "_on_its_way",
        "_open",
        "_owner",
        "_readers",
        "_reads",
        "_sent",
        "_thread_id",
        "_wake_pending",
        "failed",
        "handled",
        "started",
        "taken",
        "taking",
        "undelivered",
    )

    def __init__(
        self, owner: Named, maxsize: int = 0, priority: Callable[[MessageT], Any] | None = None
    ) -> None:
        self._owner = owner
        self._maxsize = maxsize
        self._buffer: deque[MessageT] | _Heap[MessageT] = (
            deque() if priority is None else _Heap(priority)
        )
        self._append = self._buffer.append  # one lookup less on the hot path
        self._lock = threading.Lock() if maxsize else None
        self._line: deque[_Producer[MessageT]] = deque()
        self._on_its_way: _Producer[MessageT] | None = None
        self._open = True
        self._readers: deque[asyncio.Future[None]] = deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._sent = itertools.count()
        self._count_sent = self._sent.__next__
        self._reads = 0  # values of _sent taken by the reads of sent
        # the consumer books outcomes: in flight = started - handled - failed
        self.started = self.handled = self.failed = self.taken = self.undelivered = 0
        self.taking = False
        """Whether the consumer takes messages now (running, or stopping with a drain to do).

        The consumer sets it; ``consume`` reads it before each message.
        """

    # ------------------------------------------------------------- figures

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def maxsize(self) -> int:
        """The most messages the channel holds (0: no limit)."""
        return self._maxsize

    @property
    def is_open(self) -> bool:
        """Whether producers may wait for room (the consumer runs or will)."""
        return self._open

    @property
    def sent(self) -> int:
        """Messages accepted, ever; safe from any thread."""
        # An itertools.count has no supported read but next(), which moves it
        # on: each read takes one value and books it in _reads, under a lock
        # that only readers take (a send never does; reads are rare figures).
        with _READING:
            reads = self._reads
            self._reads = reads + 1
            return self._count_sent() - reads

    @property
    def waiting(self) -> int:
        """Producers waiting for room, plus one admitted coroutine on its way."""
        return len(self._line) + (self._on_its_way is not None)

    @property
    def expecting(self) -> bool:
        """An admitted ``put()`` has yet to append its message."""
        return self._on_its_way is not None

    # ----------------------------------------------------------- producing

    def send(self, message: MessageT, timeout: float = 0.0) -> None:
        """Append ``message``, from any thread; a bounded channel may make it wait.

        Raises:
            QueueFull: full, and ``timeout`` is 0 or ran out.
            QueueClosed: full while closed: nobody will make room.
            RuntimeError: ``timeout`` on a thread running an event loop.
        """
        lock = self._lock
        if lock is None:
            self._append(message)
            self._count_sent()
        else:
            if timeout > 0 and asyncio._get_running_loop() is not None:
                raise RuntimeError(
                    f"send(timeout=...) to the bounded queue of worker "
                    f"{self._owner.worker_name!r} would block the event loop "
                    f"running in this thread: use await put()"
                )
            with lock:
                if self._line:
                    self._admit_locked()
                if self._line or self._on_its_way or len(self._buffer) >= self._maxsize:
                    producer = self._refuse_or_line_up(message, timeout)
                else:
                    self._buffer.append(message)
                    self._count_sent()
                    producer = None
            if producer is not None:
                self._wait_in_thread(producer, timeout)
        if self._readers:
            self._wake_reader()

    async def put(self, message: MessageT) -> None:
        """Append ``message``, waiting for room; cancelled, it sends nothing.

        Raises:
            QueueClosed: the channel is closed and full, or closed while waiting.
        """
        lock = self._lock
        if lock is None:
            self.send(message)
            return
        with lock:
            if self._line:
                self._admit_locked()
            if self._line or self._on_its_way or len(self._buffer) >= self._maxsize:
                if not self._open:
                    raise self._closed_error()
                producer = _Producer(message, asyncio.get_running_loop().create_future())
                self._line.append(producer)
                self._admit_locked()
            else:
                self._buffer.append(message)
                self._count_sent()
                producer = None
        if producer is not None:
            await self._wait_admitted(producer)
        if self._readers:
            self._wake_reader()

    def _refuse_or_line_up(self, message: MessageT, timeout: float) -> _Producer[MessageT]:
        if timeout <= 0:
            raise self._full_error()
        if not self._open:
            raise self._closed_error()
        producer = _Producer(message, None)
        self._line.append(producer)
        self._admit_locked()  # the consumer may have made room since we looked
        return producer

    def _wait_in_thread(self, producer: _Producer[MessageT], timeout: float) -> None:
        event = producer.event
        assert event is not None
        assert self._lock is not None
        event.wait(None if timeout >= threading.TIMEOUT_MAX else timeout)
        with self._lock:
            if producer.state == _WAITING:
                # room made by a take that has not admitted yet is room: look once more
                self._admit_locked()
            state = producer.state
            if state == _WAITING:
                self._line.remove(producer)
                raise QueueFull(
                    f"the queue of worker {self._owner.worker_name!r} stayed full for {timeout}s"
                )
        if state == _REFUSED:
            raise self._closed_error()

    async def _wait_admitted(self, producer: _Producer[MessageT]) -> None:
        assert producer.future is not None
        assert self._lock is not None
        try:
            await producer.future
        except asyncio.CancelledError:
            self._withdraw(producer)
            raise
        with self._lock:
            if producer.state == _REFUSED:
                raise self._closed_error()
            assert self._on_its_way is producer
            self._on_its_way = None
            self._buffer.append(producer.message)
            self._count_sent()
            self._admit_locked()  # whoever waited behind it; the caller wakes a reader

    def _withdraw(self, producer: _Producer[MessageT]) -> None:
        """A cancelled ``put()`` leaves the line, or passes the room it was given on."""
        assert self._lock is not None
        with self._lock:
            if producer.state == _WAITING:
                self._line.remove(producer)
                return
            if producer.state == _REFUSED:
                return
            assert self._on_its_way is producer
            self._on_its_way = None
            self._admit_locked()
        self._notify_readers(every=True)  # a draining consumer stops waiting for it

    def _admit_locked(self) -> bool:
        """Let producers in, in order, while there is room; True if messages came in.

        Called with the lock held. A thread's message goes in at once; a
        coroutine is woken and is on its way: nobody is admitted behind it
        until it appends or withdraws. A closed channel refuses whoever is
        left once no admitted coroutine is on its way.
        """
        line, buffer = self._line, self._buffer
        appended = False
        while line and self._on_its_way is None and len(buffer) < self._maxsize:
            producer = line.popleft()
            producer.state = _ADMITTED
            if producer.future is None:
                buffer.append(producer.message)
                self._count_sent()
                appended = True
            else:
                self._on_its_way = producer
            producer.signal()
        if line and not self._open and self._on_its_way is None:
            for producer in line:
                producer.state = _REFUSED
                producer.signal()
            line.clear()
        return appended

    def _admit(self) -> None:
        assert self._lock is not None
        with self._lock:
            appended = self._admit_locked()
        if appended and self._readers:
            self._wake_reader()

    def _full_error(self) -> QueueFull:
        name, size = self._owner.worker_name, len(self._buffer)
        if size >= self._maxsize:
            return QueueFull(f"the queue of worker {name!r} is full ({self._maxsize} messages)")
        return QueueFull(
            f"the queue of worker {name!r} is full ({size} of {self._maxsize} messages "
            f"queued, {self.waiting} producers admitted or waiting ahead)"
        )

    def _closed_error(self) -> QueueClosed:
        return QueueClosed(
            f"the queue of worker {self._owner.worker_name!r} is full "
            f"({self._maxsize} messages) and its consumer is stopped: "
            f"no room is made until it starts again"
        )

    # ----------------------------------------------------------- consuming

    def take(self) -> MessageT | Empty:
        """The next message, counted in flight, or ``EMPTY`` (on the consumer's loop)."""
        buffer = self._buffer
        if not buffer:
            return EMPTY
        message = buffer.popleft()
        self.started += 1
        if self._line:  # read after the take: see the module docstring
            self._admit()
        return message

    async def consume(
        self,
        handler: Callable[[MessageT], Awaitable[object]],
        on_failure: Callable[[MessageT, Exception], Awaitable[None]],
        wait: Callable[[], Awaitable[bool]],
    ) -> None:
        """The consumer's loop (hot path): take, hand to ``handler``, book the outcome.

        While ``taking``, each message is counted in flight, then handled or
        failed (``on_failure`` is awaited with the error); a cancelled handler
        gives its message back, first in the queue. Out of messages, or not
        taking, ``await wait()`` says whether to go on: the consumer decides
        when a drain is over. Written out here, not through ``take()``,
        because a call per message is a fifth of the cost of a message.
        """
        buffer = self._buffer
        while True:
            if buffer and self.taking:
                message = buffer.popleft()
                self.started += 1
                if self._line:  # read after the take: see the module docstring
                    self._admit()
                try:
                    await handler(message)
                except asyncio.CancelledError:
                    buffer.appendleft(message)
                    self.started -= 1
                    raise
                except Exception as exc:
                    self.failed += 1  # before on_failure runs: no longer in flight
                    await on_failure(message, exc)
                else:
                    self.handled += 1
            elif not await wait():
                return

    def put_back(self, message: MessageT) -> None:
        """Give back a message taken and not handled: it goes first again."""
        self._buffer.appendleft(message)
        self.started -= 1

    def take_all(self) -> list[MessageT]:
        """Remove and return every message, counted as taken; room is made."""
        buffer = self._buffer
        taken = [buffer.popleft() for _ in range(len(buffer))]
        self.taken += len(taken)
        if self._line:
            self._admit()
        return taken

    async def wait(self, timeout: float | None = None) -> None:
        """Wait for a message, ``wake_readers()`` or ``timeout``; the caller looks again."""
        waiter = asyncio.get_running_loop().create_future()
        readers = self._readers
        readers.append(waiter)
        if self._buffer:  # a sender may have appended before it saw the waiter
            readers.remove(waiter)
            return
        try:
            await wait_released(waiter, timeout)
        finally:
            if not waiter.done() or (readers and waiter in readers):
                readers.remove(waiter)

    def wake_readers(self) -> None:
        """Wake every reader (on the consumer's loop): a stop was requested."""
        self._wake_readers(every=True)

    def _wake_reader(self) -> None:
        """Wake one reader for a message just appended, from any thread."""
        if threading.get_ident() == self._thread_id:
            readers = self._readers
            while readers:
                reader = readers.popleft()
                # release() written out: this runs once per message sent on the
                # loop's thread, and it must know whether it woke somebody.
                if not reader.done():  # a reader cancelled meanwhile is skipped
                    reader.set_result(None)
                    return
        elif not self._wake_pending:
            self._wake_pending = True
            loop = self._loop
            assert loop is not None
            loop.call_soon_threadsafe(self._wake_readers)

    def _notify_readers(self, every: bool) -> None:
        if not self._readers:
            return
        if threading.get_ident() == self._thread_id:
            self._wake_readers(every)
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
                self._loop.call_soon_threadsafe(self._wake_readers, every)

    def _wake_readers(self, every: bool = False) -> None:
        """Wake one reader per message (all of them with ``every``), on the loop."""
        self._wake_pending = False
        readers = self._readers
        wake = len(readers) if every else len(self._buffer)
        while readers and wake > 0:
            reader = readers.popleft()
            if not reader.done():  # release() written out: it counts whom it woke
                reader.set_result(None)
                wake -= 1

    # ------------------------------------------------------------ open/close

    def open(self, loop: asyncio.AbstractEventLoop, *, taking: bool = True) -> None:
        """The consumer starts on ``loop`` (called on it): producers may wait again.

        ``taking`` is whether its run takes messages: the consumer derives it
        from its state, so that a stop requested before the run started (one
        that does not drain) is not undone by the opening.
        """
        self._loop = loop
        self._thread_id = threading.get_ident()
        self.undelivered = 0
        self.taking = taking
        if self._lock is None:
            self._open = True
            return
        with self._lock:
            self._open = True

    def close(self) -> int:
        """The consumer's run ended: refuse the waiting producers; return what is left.

        A producer admitted just before (a ``put()`` on its way) still
        appends; whoever does not fit is refused with ``QueueClosed``.
        """
        self.taking = False
        if self._lock is None:
            self._open = False
        else:
            with self._lock:
                self._open = False
                self._admit_locked()
        self.undelivered = len(self._buffer)
        return self.undelivered


class _Producer(Generic[MessageT]):
    """A producer in line for room: a thread (an event) or a coroutine (a future).

    ``state`` is written under the channel's lock only; the event or future
    only wakes the producer, which then reads its state under the lock.
    """

    __slots__ = ("event", "future", "message", "state")

    def __init__(self, message: MessageT, future: asyncio.Future[None] | None) -> None:
        self.message = message
        self.future = future
        self.event = threading.Event() if future is None else None
        self.state = _WAITING

    def signal(self) -> None:
        """Wake the producer, from any thread."""
        if self.event is not None:
            self.event.set()
            return
        future = self.future
        assert future is not None
        loop = future.get_loop()
        if asyncio._get_running_loop() is loop:
            release(future)
        else:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(release, future)


class _Heap(Generic[MessageT]):
    """Messages ordered by ``key(message)``, lowest first, first in first out among equals.

    A heap, unlike a deque, is not thread-safe: its own lock guards it, and it
    offers the four operations the channel uses (``append``, ``popleft``,
    ``appendleft``, ``len``), so both kinds of buffer run through one path.
    """

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
