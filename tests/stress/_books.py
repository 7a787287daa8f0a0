"""Independent books for the stress scenarios: where every message went, exactly once.

A scenario numbers its messages with a ``Stream`` per producer (and per
consumer it feeds), records each send as accepted or refused, and each
outcome as the consumer's handlers see it: handled, failed (with the reports
the failure made: ``on_error`` calls, log records, crashes) or taken back.
``Ledger.check`` then compares these books with the consumer's own
``queue_status()``, message by message.

A refusal is not taken on trust. For a bounded queue (``Ledger.watch``)
each producer takes a ``Probe`` of the queue before a send that may be
refused; ``Stream.refused`` then checks the refusal against it: a timed wait
lasted its timeout, and the queue had no room for it. fluid refuses a send
only when the queue is full, or while an ``await put()`` admitted before it
has not yet resumed to append its message ("on its way": nobody overtakes
it, whatever room there is). Checked soundly from outside, without locks:
the queue cannot have held more at the refusal than ``size`` at the probe
plus every message accepted (``sent``) or put back by a forced stop since;
and a ``put()`` on its way at the refusal has ended (appended, or cancelled)
two loop turns later. So each refusal is checked on the loop two turns
after it: if that sum is below ``maxsize`` and no ``put()`` to the queue
ended since the probe (``Stream.put_ended``), the refusal was made with room.

States are bytes in bytearrays (three
per message), so a 20 s run of a million messages stays small; each stream is
appended to by its one producer only, and outcomes are set under a lock,
from the loop or from handler threads.

Also here: ``Injected``, the error a scenario raises on purpose (numbered, so
that a report of it can be matched to its injection without keeping it),
``Crashy``, a worker that crashes on demand, a capture of the ``fluid``
logger that keeps no traceback, producer threads and the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import fluid
from fluid import QueueStatus

__all__ = [
    "BookedDispatcher",
    "Crashy",
    "Injected",
    "Ledger",
    "Lifecycle",
    "LogTally",
    "Logged",
    "Probe",
    "Seen",
    "Stream",
    "Threads",
    "balance",
    "fluid_log",
    "most_refusals",
    "serials",
]

_SEQ_BITS = 32
_SEQ_MASK = (1 << _SEQ_BITS) - 1
PENDING, ACCEPTED, REFUSED = 1, 2, 3
HANDLED, FAILED, TAKEN = 1, 2, 3
_OUTCOME = {0: "unsettled", HANDLED: "handled", FAILED: "failed", TAKEN: "taken"}
_SENT = {0: "unknown", PENDING: "pending", ACCEPTED: "accepted", REFUSED: "refused"}


def balance(books: QueueStatus) -> int:
    """What the books say went somewhere; equals ``sent`` when nothing vanished."""
    return books["handled"] + books["failed"] + books["taken"] + books["size"] + books["in_flight"]


def most_refusals(accepted: int, producers: int, seconds: float, min_wait: float) -> int:
    """The most refusals producers paced by their refusals can meet in ``seconds``.

    A paced producer, once refused, waits at least ``min_wait`` on its next
    send (``send(timeout=...)`` or a ``put()`` with a deadline, each checked
    by its probe, give or take ``TIMER_SLACK``). So each refusal either
    follows an accepted send or the producer's start (at most ``accepted +
    producers`` of those), or follows a refusal and lasted ``min_wait``: at
    most ``seconds / min_wait`` per producer.
    """
    return accepted + producers + int(producers * seconds / (min_wait - TIMER_SLACK))


_serial = itertools.count(1)


class Injected(Exception):
    """An error raised on purpose; ``serial`` tells injections apart."""

    def __init__(self, where: str, message_id: int = -1) -> None:
        self.serial = next(_serial)
        self.where = where
        self.message_id = message_id
        super().__init__(f"injected #{self.serial} in {where}")


def serials(error: BaseException | None) -> tuple[int, ...]:
    """The serials of the injected errors in ``error`` (leaves of a group included)."""
    if isinstance(error, Injected):
        return (error.serial,)
    if isinstance(error, BaseExceptionGroup):
        return tuple(s for leaf in error.exceptions for s in serials(leaf))
    return ()


class Probe(NamedTuple):
    """The queue as a producer saw it just before a send that may be refused."""

    requeued: int
    puts: int
    sent: int
    size: int
    at: float  # time.monotonic()


TIMER_SLACK = 0.0001
"""How much earlier than its timeout a timed wait may end (clock rounding)."""


class Room:
    """Checks each refusal of one bounded queue against a ``Probe``; see the module docstring."""

    def __init__(
        self, consumer: fluid.QueueConsumer[Any], ledger: Ledger, requeued: Callable[[], int]
    ) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._requeued = requeued
        self._loop = asyncio.get_running_loop()  # made on the loop's thread
        self._loop_thread = threading.get_ident()
        self._puts = 0
        self._puts_lock = threading.Lock()  # bumped and read from several threads
        self.pending = 0  # refusals whose check is due on the loop
        self.checked = 0
        self.unsure = 0  # checked refusals that a put() on its way may explain

    @property
    def puts(self) -> int:
        """How many ``put()`` calls to the queue ended (returned or raised)."""
        with self._puts_lock:
            return self._puts

    def put_ended(self) -> None:
        with self._puts_lock:
            self._puts += 1

    def probe(self) -> Probe:
        # sent before size: a message appended in between counts twice (in
        # size and in the sent that follows), never zero times
        requeued, puts = self._requeued(), self.puts
        sent = self._consumer.sent
        return Probe(requeued, puts, sent, self._consumer.queue_size(), time.monotonic())

    def check(self, message_id: int, probe: Probe, timeout: float) -> None:
        elapsed = time.monotonic() - probe.at
        if timeout > 0 and elapsed < timeout - TIMER_SLACK:
            self._ledger.problem(
                f"message {message_id} refused after {elapsed:.5f}s of a {timeout}s wait"
            )
        self.pending += 1  # under the GIL, and only the loop decrements it
        check = functools.partial(self._check_room, message_id, probe, timeout, elapsed)
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(_after_turns, self._loop, 2, check)
        else:
            self._loop.call_soon_threadsafe(_after_turns, self._loop, 2, check)

    def _check_room(self, message_id: int, probe: Probe, timeout: float, elapsed: float) -> None:
        self.pending -= 1
        self.checked += 1
        sent, requeued = self._consumer.sent, self._requeued()
        if self.puts != probe.puts:
            self.unsure += 1
            return  # a put() may have been on its way: room or not, a refusal is right
        # +1: a send holding the queue's lock may have appended and not yet counted
        accepted, back = sent - probe.sent, requeued - probe.requeued
        most = probe.size + accepted + back + 1
        maxsize = self._consumer.maxsize
        if most < maxsize:
            self._ledger.problem(
                f"message {message_id} refused with room: the queue held at most {most} "
                f"of {maxsize} (size {probe.size} before the send; since then {accepted} "
                f"accepted, {back} put back, no put() ended; "
                f"wait {elapsed:.4f}s, timeout {timeout}s)"
            )

    async def settled(self) -> None:
        """Wait until every refusal was checked (the checks run on the loop, a little later)."""
        for _ in range(10_000):
            if not self.pending:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{self.pending} refusals never checked")


def _after_turns(loop: asyncio.AbstractEventLoop, turns: int, then: Callable[[], None]) -> None:
    """Call ``then`` on ``loop`` ``turns`` loop iterations from now."""
    if turns:
        loop.call_soon(_after_turns, loop, turns - 1, then)
    else:
        then()


class Stream:
    """Fresh message ids for one producer; it alone calls these methods."""

    __slots__ = ("_base", "_outcome", "_reports", "_room", "_sent")

    def __init__(self, index: int, ledger: Ledger) -> None:
        self._base = index << _SEQ_BITS
        self._sent = ledger._sent[index]
        self._outcome = ledger._outcome[index]
        self._reports = ledger._reports[index]
        self._room = ledger._room

    def probe(self) -> Probe | None:
        """Look at the queue before a send that may be refused (None: not watched)."""
        return None if self._room is None else self._room.probe()

    def new_id(self) -> int:
        """A new message id, pending until ``accepted`` or ``refused``."""
        seq = len(self._sent)
        self._outcome.append(0)  # before the send: a handler may settle it at once
        self._reports.append(0)
        self._sent.append(PENDING)
        return self._base | seq

    def accepted(self, message_id: int) -> None:
        """The send of ``message_id`` returned: the message is queued."""
        self._sent[message_id & _SEQ_MASK] = ACCEPTED

    def refused(self, message_id: int, probe: Probe | None = None, timeout: float = 0.0) -> None:
        """The send raised (``QueueFull``) or was cancelled: the message is not queued.

        With the ``probe`` taken before the send, check that the queue had
        no room and that a wait of ``timeout`` seconds (0: none) lasted as
        long. A producer cancelled from outside (the scenario ending) is no refusal
        of the queue's: it gives no probe.
        """
        self._sent[message_id & _SEQ_MASK] = REFUSED
        if probe is not None and self._room is not None:
            self._room.check(message_id, probe, timeout)

    def put_ended(self) -> None:
        """An ``await put()`` to the watched queue ended, however (call it in a ``finally``)."""
        if self._room is not None:
            self._room.put_ended()

    def figures(self) -> tuple[int, int]:
        """How many of this producer's sends were accepted, and how many refused."""
        return self._sent.count(ACCEPTED), self._sent.count(REFUSED)


class Ledger:
    """One consumer's books, kept by the scenario; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._sent: list[bytearray] = []
        self._outcome: list[bytearray] = []
        self._reports: list[bytearray] = []
        self._lock = threading.Lock()
        self._room: Room | None = None
        self.problems: list[str] = []

    def watch(
        self, consumer: fluid.QueueConsumer[Any], *, requeued: Callable[[], int] = lambda: 0
    ) -> None:
        """Check every refusal of ``consumer``'s bounded queue (on its loop, before streams).

        Args:
            consumer: the consumer whose queue the streams send to.
            requeued: how many messages forced stops have put back so far.
        """
        assert consumer.maxsize, "an unbounded queue never refuses"
        assert not self._sent, "watch the queue before making streams"
        self._room = Room(consumer, self, requeued)

    async def settled(self) -> None:
        """Wait until every refusal was checked: before ``check``."""
        if self._room is not None:
            await self._room.settled()

    @property
    def refusals_checked(self) -> int:
        """How many refusals were checked for room (not explained by a ``put()`` on its way)."""
        return 0 if self._room is None else self._room.checked - self._room.unsure

    def stream(self) -> Stream:
        """A new stream of ids, for one producer."""
        with self._lock:
            index = len(self._sent)
            for states in (self._sent, self._outcome, self._reports):
                states.append(bytearray())
        return Stream(index, self)

    def handled(self, message_id: int) -> None:
        """A handler returned for ``message_id``."""
        self._settle(message_id, HANDLED)

    def failed(self, message_id: int) -> None:
        """A handler raised for ``message_id``: the consumer counts it failed."""
        self._settle(message_id, FAILED)

    def taken(self, message_id: int) -> None:
        """``take_undelivered()`` gave ``message_id`` back."""
        self._settle(message_id, TAKEN)

    def reported(self, message_id: int) -> None:
        """The failure of ``message_id`` reached the error policy (callback, log, crash)."""
        index, seq = message_id >> _SEQ_BITS, message_id & _SEQ_MASK
        with self._lock:
            reports = self._reports[index]
            reports[seq] = min(255, reports[seq] + 1)

    def problem(self, text: str) -> None:
        """Note something wrong seen while running; ``check`` fails with it."""
        self.problems.append(f"{self.name}: {text}")

    def _settle(self, message_id: int, outcome: int) -> None:
        index, seq = message_id >> _SEQ_BITS, message_id & _SEQ_MASK
        with self._lock:
            outcomes = self._outcome[index]
            before = outcomes[seq]
            if before == 0:
                outcomes[seq] = outcome
                return
        self.problem(f"message {message_id} {_OUTCOME[outcome]}, already {_OUTCOME[before]}")

    def tally(self) -> dict[str, int]:
        """The figures of these books: sent (accepted), refused, handled, failed, taken."""
        combos = self._combos()
        return {
            "sent": sum(n for (s, _, _), n in combos.items() if s == ACCEPTED),
            "refused": sum(n for (s, _, _), n in combos.items() if s == REFUSED),
            "handled": sum(n for (_, o, _), n in combos.items() if o == HANDLED),
            "failed": sum(n for (_, o, _), n in combos.items() if o == FAILED),
            "taken": sum(n for (_, o, _), n in combos.items() if o == TAKEN),
        }

    def check(self, books: QueueStatus) -> dict[str, int]:
        """Check every message against ``books``; return the figures (``tally()``).

        Settle everything first (drain, or ``take_undelivered()``): nothing
        may be queued or in flight. Each message must be refused and never
        seen again, or accepted and then handled, failed with exactly one
        report, or taken, exactly once; the consumer's figures must agree.
        """
        assert self._room is None or not self._room.pending, "await settled() before check()"
        valid = {(ACCEPTED, HANDLED, 0), (ACCEPTED, FAILED, 1), (ACCEPTED, TAKEN, 0)}
        valid.add((REFUSED, 0, 0))
        wrong = [self._describe(combo) for combo in self._combos() if combo not in valid]
        figures = self.tally()
        theirs = {
            "sent": books["sent"],
            "handled": books["handled"],
            "failed": books["failed"],
            "taken": books["taken"],
        }
        mine = {key: figures[key] for key in theirs}
        errors = [*self.problems, *wrong]
        if theirs != mine:
            errors.append(f"{self.name}: queue_status() {theirs} != my books {mine}")
        if books["size"] or books["in_flight"] or balance(books) != books["sent"]:
            errors.append(f"{self.name}: not settled or not balanced: {books}")
        assert not errors, "\n".join(errors[:20])
        return figures

    def _combos(self) -> Counter[tuple[int, int, int]]:
        combos: Counter[tuple[int, int, int]] = Counter()
        for sent, outcome, reports in zip(self._sent, self._outcome, self._reports, strict=True):
            combos.update(zip(sent, outcome, reports, strict=True))
        return combos

    def _describe(self, combo: tuple[int, int, int]) -> str:
        ids = [
            (index << _SEQ_BITS) | seq
            for index, (sent, outcome, reports) in enumerate(
                zip(self._sent, self._outcome, self._reports, strict=True)
            )
            for seq, found in enumerate(zip(sent, outcome, reports, strict=True))
            if found == combo
        ]
        sent, outcome, reports = combo
        return (
            f"{self.name}: {len(ids)} messages {_SENT[sent]}, then {_OUTCOME[outcome]} "
            f"with {reports} reports, e.g. {ids[:5]}"
        )


class Crashy(fluid.Worker):
    """A worker that runs until told to crash (or end), and can be armed to fail a start.

    ``fired`` lists the serials of the injected errors it raised, from ``run``
    or from ``on_startup``.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name, stopping_grace_period=5.0)
        self.fired: list[int] = []
        self.fail_next_start: Injected | None = None
        self._end: asyncio.Future[Injected | None] | None = None

    async def on_startup(self) -> None:
        error, self.fail_next_start = self.fail_next_start, None
        if error is not None:
            self.fired.append(error.serial)
            raise error
        self._end = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        end = self._end
        assert end is not None
        stop = asyncio.ensure_future(self.sleep(3600))  # ends at once on a stop request
        try:
            await asyncio.wait((end, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        error = end.result() if end.done() else None
        if error is not None:
            self.fired.append(error.serial)
            raise error

    def can_end(self) -> bool:
        """True while running and not yet told to end."""
        return self.is_running() and self._end is not None and not self._end.done()

    def crash(self, error: Injected) -> None:
        """End ``run`` with ``error`` (call it while ``can_end()``)."""
        assert self._end is not None
        self._end.set_result(error)

    def finish(self) -> None:
        """End ``run`` cleanly (call it while ``can_end()``)."""
        assert self._end is not None
        self._end.set_result(None)


class Seen(NamedTuple):
    """A lifecycle transition, without the error's traceback."""

    kind: str
    error: str | None  # the error's type name
    serials: tuple[int, ...]  # of the injected errors in it (or in its cause)
    restarts: int
    gave_up_on: str | None  # for TooManyRestarts: the child it names
    order: int = 0  # its place among all the transitions the observer saw


class Lifecycle:
    """An observer keeping each worker's lifecycle transitions; ``check`` checks their order.

    Add it to the root of a tree: it sees every transition below. Per worker
    the transitions must read ``started [restarted] [stopping] (stopped | force_stopped
    | crashed)``, over and over, or a lone ``crashed`` (a start that failed).
    """

    def __init__(self) -> None:
        self.events: dict[fluid.Worker, list[Seen]] = {}
        self.count = 0  # transitions seen so far, of every worker

    def __call__(self, transition: fluid.Transition) -> None:
        error = transition.error
        found = serials(error) or serials(error.__cause__ if error else None)
        gave_up_on = error.worker_name if isinstance(error, fluid.TooManyRestarts) else None
        name = None if error is None else type(error).__name__
        self.count += 1
        seen = Seen(transition.kind, name, found, transition.restarts, gave_up_on, self.count)
        self.events.setdefault(transition.worker, []).append(seen)

    def of(self, worker: fluid.Worker, kind: str) -> list[Seen]:
        """The transitions of one kind of ``worker``."""
        return [e for e in self.events.get(worker, ()) if e.kind == kind]

    def check(self) -> list[str]:
        """What is out of order, per worker (empty if nothing is)."""
        problems: list[str] = []
        for worker, events in self.events.items():
            state, restarts = "idle", 0
            for index, event in enumerate(events):
                previous = events[index - 1].kind if index else None
                ok = {
                    "started": state == "idle",
                    "restarted": previous == "started",
                    "stopping": state == "running",
                    "crashed": True,
                }.get(event.kind, state != "idle")
                if event.kind == "restarted":
                    restarts += 1
                    ok = ok and event.restarts == restarts
                if not ok:
                    kinds = [e.kind for e in events[max(0, index - 4) : index + 1]]
                    problems.append(f"{worker.worker_path}: {kinds}")
                    break
                if event.kind == "started":
                    state = "running"
                elif event.kind == "stopping":
                    state = "stopping"
                elif event.kind != "restarted":
                    state = "idle"
            if restarts != worker.restarts:
                problems.append(
                    f"{worker.worker_path}: {restarts} restarted events, restarts={worker.restarts}"
                )
        return problems


class Logged(NamedTuple):
    """A record of the ``fluid`` logger, without its traceback."""

    level: int
    msg: str
    args: tuple[object, ...]
    error: str | None
    serials: tuple[int, ...]


class LogTally(logging.Handler):
    """Keeps what ``fluid`` logged at WARNING and above (see ``fluid_log``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[Logged] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        args = record.args if isinstance(record.args, tuple) else ()
        name = None if error is None else type(error).__name__
        self.records.append(Logged(record.levelno, str(record.msg), args, name, serials(error)))

    def count(self, msg: str) -> int:
        """How many records had this message template."""
        return sum(1 for r in self.records if r.msg == msg)

    def templates(self) -> set[str]:
        """The distinct message templates logged."""
        return {r.msg for r in self.records}


@contextlib.contextmanager
def fluid_log() -> Iterator[LogTally]:
    """Capture the ``fluid`` logger's warnings and errors, and keep them from pytest.

    A 20 s run logs a failure per failed message: pytest's own capture would
    format (and keep) every traceback.
    """
    logger = logging.getLogger("fluid")
    tally = LogTally()
    propagate = logger.propagate
    logger.addHandler(tally)
    logger.propagate = False
    try:
        yield tally
    finally:
        logger.propagate = propagate
        logger.removeHandler(tally)


class Threads:
    """Producer threads the loop can wait for without blocking (and without an executor).

    ``target(index)`` runs in thread ``index``; ``join`` waits for all of
    them and raises the first error one raised. Stop them first (an event
    they watch), then ``await join()``, also in a ``finally``.
    """

    def __init__(self, count: int, target: Callable[[int], None], name: str = "producer") -> None:
        self._target = target
        self._errors: list[BaseException] = []
        self._done: list[asyncio.Future[None]] = []
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        """Start every thread."""
        loop = asyncio.get_running_loop()
        for thread in self._threads:
            done: asyncio.Future[None] = loop.create_future()
            self._done.append(done)
            thread.start()

    async def join(self) -> None:
        """Wait for every started thread to end; raise the first error one raised."""
        await asyncio.gather(*self._done)
        for thread in self._threads[: len(self._done)]:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def _run(self, index: int) -> None:
        done = self._done[index]
        try:
            self._target(index)
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            done.get_loop().call_soon_threadsafe(_resolve, done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


MessageT = TypeVar("MessageT")


class BookedDispatcher(fluid.AsyncDispatcher[MessageT]):
    """An AsyncDispatcher that books each message as handled or failed, as its consumer sees it."""

    def __init__(
        self,
        ledger: Ledger,
        message_type: Callable[[MessageT], str],
        message_id: Callable[[MessageT], int],
        *,
        concurrent: bool = False,
    ) -> None:
        super().__init__(message_type=message_type, concurrent=concurrent)
        self.ledger = ledger
        self._message_id = message_id

    async def dispatch(self, message: MessageT) -> int:
        try:
            count = await super().dispatch(message)
        except Exception:
            self.ledger.failed(self._message_id(message))
            raise
        self.ledger.handled(self._message_id(message))
        return count
