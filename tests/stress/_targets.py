"""What the process-kill and signal-storm scenarios run in other processes.

The spawn start method imports these by name in pool processes and process
workers, and ``python -m fluid run tests.stress._targets:storm_tree`` imports
the storm's tree here: they must live at module level.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import fluid

# ---------------------------------------------- pool processes (test_process_kill)

Job = tuple[int, float, str]
"""A message of the pool scenario: ``(id, seconds of work, marker directory)``."""


def mark_start(directory: str, ident: int) -> None:
    """Append this process's pid to the marker of message ``ident``, in one write.

    A message that runs twice (it must not) leaves two lines.
    """
    fd = os.open(os.path.join(directory, str(ident)), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def read_marker(directory: str, ident: int) -> list[int]:
    """The pids that started message ``ident`` (empty before it started)."""
    try:
        with open(os.path.join(directory, str(ident))) as f:
            return [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []


def crunch(job: Job) -> int:
    """A pool handler that takes a little time; says which process ran it."""
    ident, seconds, directory = job
    mark_start(directory, ident)
    time.sleep(seconds)
    return os.getpid()


# ------------------------------------------ process workers (test_process_kill)


def stay_up(worker: fluid.ProcessWorker) -> None:
    """A process worker's target: sleep until the parent asks for a stop."""
    while worker.is_running():
        worker.wait_for_stop(3600)


# -------------------------------------------------- the storm (test_signal_storm)

BOOKS_ENV = "FLUID_STORM_BOOKS"
"""The file the storm's tree writes its books to, as JSON, in ``on_shutdown``."""
PIDS_ENV = "FLUID_STORM_PIDS"
"""A directory where each process of the storm's tree leaves a file named by its pid."""
SEED_ENV = "FLUID_STORM_SEED"
"""The seed of the storm's tree's own randomness (handler times)."""

READY = "storm: fluid's signal handlers are in place"
"""What the storm's tree prints from its ``on_startup``: ``fluid.run`` installs its
handlers before it starts the worker, so every signal sent after this line
reaches them."""
LINGER = 1.0
"""Seconds the storm's tree lingers in ``on_shutdown``: no graceful stop is quicker."""

FAIL_EVERY = 7
"""Messages whose id is 3 modulo this fail in the handler."""


def fails(ident: int) -> bool:
    """Whether the storm's handler fails message ``ident``."""
    return ident % FAIL_EVERY == 3


def leave_pid() -> None:
    """Leave a file named by this process's pid in the storm's pid directory."""
    directory = os.environ.get(PIDS_ENV)
    if directory:
        Path(directory, str(os.getpid())).touch()


def pinger_main(worker: fluid.ProcessWorker) -> None:
    """The storm's process worker: register its pid, wait for the stop."""
    leave_pid()
    stay_up(worker)


class StormBooks:
    """The storm tree's own account of every message, kept apart from the queue's."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.handled: list[int] = []
        self.failed: list[int] = []
        self.wrong_errors: list[str] = []
        self.on_error_calls = 0
        self.cancelled_put: list[int] = []

    def on_error(self, ident: int, error: Exception) -> None:
        self.on_error_calls += 1
        self.failed.append(ident)
        if not (isinstance(error, ValueError) and str(error) == f"message {ident} fails"):
            self.wrong_errors.append(f"{ident}: {type(error).__name__}: {error}")


class Producer(fluid.Worker):
    """Puts consecutive ids into the consumer's bounded queue, waiting for room."""

    def __init__(
        self, consumer: fluid.QueueConsumerWorker[int], books: StormBooks, rng: random.Random
    ) -> None:
        super().__init__("producer", stopping_grace_period=1.0)
        self.consumer = consumer
        self.books = books
        self.rng = rng

    async def run(self) -> None:
        ident = len(self.books.sent)
        while self.is_running():
            try:
                await self.consumer.put(ident)
            except asyncio.CancelledError:
                self.books.cancelled_put.append(ident)
                raise
            self.books.sent.append(ident)
            ident += 1
            if self.rng.random() < 0.2:
                await self.sleep(self.rng.uniform(0, 0.003))


class StormTree(fluid.Workers):
    """Consumer, process worker and producer; ``on_shutdown`` writes the books.

    ``on_startup`` says the signal handlers are ready (``READY``), and
    ``on_shutdown`` lingers ``LINGER`` seconds after writing its books when
    the stop was graceful, so that the storm knows from its own clock that a
    graceful stop cannot end sooner than ``LINGER`` after its first signal.
    """

    def __init__(self, books_path: str, seed: int) -> None:
        self.books_path = books_path
        self.books = books = StormBooks()
        rng = random.Random(seed)

        async def handle(ident: int) -> None:
            pause = rng.choice((0.0, 0.0, 0.0005, 0.002))
            await asyncio.sleep(pause)
            if fails(ident):
                raise ValueError(f"message {ident} fails")
            books.handled.append(ident)

        self.consumer = fluid.QueueConsumerWorker(
            handle,
            name="consumer",
            stopping_grace_period=3.0,
            on_error=books.on_error,
            maxsize=64,
            concurrency=2,
        )
        self.pinger = fluid.ProcessWorker(
            pinger_main, name="pinger", stopping_grace_period=2.0, kill_after=0.5
        )
        self.producer = Producer(self.consumer, books, rng)
        super().__init__(
            self.consumer, self.pinger, self.producer, name="storm", stopping_grace_period=5.0
        )

    async def on_startup(self) -> None:
        print(READY, flush=True)

    async def on_shutdown(self) -> None:
        self.write_books()
        children = (self.consumer, self.pinger, self.producer)
        if not any(w.worker_state is fluid.WorkerState.FORCE_STOPPED for w in children):
            # A graceful stop. (A child forced by its own grace period took
            # longer than LINGER already.) A forced stop does not linger.
            await asyncio.sleep(LINGER)

    def write_books(self) -> None:
        # No await here: a signal cancelling the tree again cannot cut it short.
        consumer = self.consumer
        before = consumer.queue_status()
        undelivered = consumer.take_undelivered()
        books = self.books
        figures = {
            "pid": os.getpid(),
            "consumer_state": consumer.worker_state.value,
            "producer_state": self.producer.worker_state.value,
            "pinger_state": self.pinger.worker_state.value,
            "pinger_pid": self.pinger.pid,
            "stats": before,
            "stats_after_take": consumer.queue_status(),
            "sent": books.sent,
            "handled": books.handled,
            "failed": books.failed,
            "wrong_errors": books.wrong_errors[:10],
            "on_error_calls": books.on_error_calls,
            "taken": undelivered,
            "cancelled_put": books.cancelled_put,
        }
        write_json(self.books_path, figures)


def write_json(path: str, figures: object) -> None:
    """Write ``figures`` to ``path`` whole: a reader never sees half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(figures, f)
    os.replace(tmp, path)


def storm_tree() -> fluid.Workers:
    """The target of ``fluid run``: the storm's tree, its books going to ``$FLUID_STORM_BOOKS``."""
    return StormTree(os.environ[BOOKS_ENV], int(os.environ.get(SEED_ENV, "0")))
