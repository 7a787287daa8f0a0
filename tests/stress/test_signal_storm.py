"""Fault injection: storms of SIGINT and SIGTERM at ``python -m fluid run``.

Each storm starts ``python -m fluid run tests.stress._targets:storm_tree``: a
tree of a consumer (bounded queue, loop handler, some messages failing), a
process worker and a producer that fills the queue. The tree's
``on_startup`` prints ``READY`` (``fluid.run`` installs its signal handlers
before it starts the worker); its ``on_shutdown`` writes the consumer's
``queue_status()`` and the tree's own account of every message id to a JSON
file, then lingers ``LINGER`` seconds. Once the program said it is ready,
the scenario sends a burst of signals: at once (the tree still starting) or
once running, back to back, a few milliseconds apart, or spread over the
grace period. Storm 0 is always two signals back to back while running.

The expected outcome is derived from what the test sent and when, never from
what the program says it received. Each signal is sent only once the one
before was delivered (no longer pending in /proc: two of a kind are never
merged), and the test notes when it saw it delivered. Then, by fluid's rules
(``_runner.py``), with ``t1`` the first signal's send time, ``g`` the grace
period and ``d2`` the second signal's delivery:

* exit 0 (graceful) is possible only if the graceful stop, which lingers,
  could end before the second signal was handled and before the grace period
  ran out: ``g > LINGER`` and not ``d2 + MARGIN < t1 + LINGER``; it then
  exited no sooner than ``t1 + LINGER``;
* ``128 + first`` (the grace period ran out) only if not
  ``d2 + MARGIN < t1 + g``; no sooner than ``t1 + g``;
* ``128 + second`` (forced by the second signal) only if there was one.

``MARGIN`` is how long a delivered signal may wait for the program's loop.
Anything else (killed by a signal, 1, 130 from a late SIGINT) is wrong, and
so is a status other than the one the runner logged (a late signal must not
change a decided outcome). A storm that tested nothing (the program never
said it was ready, or ended before the first signal) fails.

Checked besides, after each storm: it exits within a bound; ``on_shutdown``
ran and the books balance by id: every message sent is handled, failed (each
one reported to ``on_error``) or left undelivered and taken back, exactly
once, and ``queue_status()`` agrees: ``sent = handled + failed + taken + size
+ in_flight``; no process of the program's tree is left: the process worker
and every other descendant seen while it ran are gone.

``FLUID_STRESS_SEED`` replays a run's random choices (not its timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._programs import Program, descendants, pending_signals, wait_gone
from . import _targets as targets
from .conftest import Report

EXIT_WITHIN = 15.0
"""Seconds a program gets to exit after its start (its grace is at most 5 s)."""
MARGIN = 0.5
"""Seconds a delivered signal may wait until the program's loop runs fluid's handler."""
DELIVERED_WITHIN = 5.0
"""Seconds a signal may stay pending in a live program."""
LINGER = targets.LINGER
GRACES = (None, 0.05, 0.2, 2.0)
"""The storms' ``--grace`` (None: the tree's own, 5 s)."""
TREE_GRACE = 5.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_DECISION = re.compile(
    r"worker 'storm' (?:stopped|was forced to stop|failed|was cancelled|failed to start)"
    r": exit status (?P<status>\d+)"
)


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    figures: dict[str, Any] = json.loads(path.read_text())
    return figures


@dataclass
class Sent:
    """A signal the test sent, and when (the test's loop clock)."""

    signal: signal.Signals
    at: float
    delivered: float | None  # when the test saw it no longer pending; None: the program ended


@dataclass
class Storm:
    """One program and the signals sent to it; what it did."""

    number: int
    when: str = ""  # "startup" or "running"
    grace: float | None = None
    uvloop: bool = True
    sent: list[Sent] = field(default_factory=list)
    exited_at: float | None = None
    status: int | None = None
    expected: dict[int, str] = field(default_factory=dict)  # allowed exit status: why
    outcome: str = ""
    books: dict[str, Any] | None = None
    pids: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    output: str = ""

    def describe(self) -> str:
        tail = "\n".join(self.output.splitlines()[-40:])
        sent = " ".join(
            f"{s.signal.name}@{s.at - self.sent[0].at:.3f}"
            f"(delivered {'-' if s.delivered is None else f'{s.delivered - s.at:.3f}'})"
            for s in self.sent
        )
        return (
            f"storm {self.number} ({self.when}, grace={self.grace}, uvloop={self.uvloop}) "
            f"sent {sent} -> exit {self.status}, expected one of {self.expected}:\n  "
            + "\n  ".join(self.problems)
            + f"\n--- output (end) ---\n{tail}"
        )


async def start_program(directory: Path, storm: Storm, seed: int) -> Program:
    env = {
        targets.BOOKS_ENV: str(directory / "books.json"),
        targets.PIDS_ENV: str(directory / "pids"),
        targets.SEED_ENV: str(seed),
    }
    args = [
        "run",
        "tests.stress._targets:storm_tree",
        "--uvloop" if storm.uvloop else "--no-uvloop",
    ]
    if storm.grace is not None:
        args += ["--grace", str(storm.grace)]
    return await Program.fluid(*args, env=env)


async def watch_descendants(program: Program, pids: set[int]) -> None:
    """Note every process below the program while it runs (the injection's observer)."""
    while program.process.returncode is None:
        pids |= descendants(program.pid)
        await asyncio.sleep(0.005)


async def send(program: Program, sig: signal.Signals) -> Sent | None:
    """Send ``sig`` and wait until it is delivered; None if the program had ended.

    Waiting for the delivery before the next send keeps two of a kind from
    being merged into one.
    """
    loop = asyncio.get_running_loop()
    bit = 1 << (sig - 1)
    at = loop.time()
    if not program.send(sig):
        return None
    while True:
        mask = pending_signals(program.pid)
        if mask is None:
            return Sent(sig, at, None)
        if not mask & bit:
            return Sent(sig, at, loop.time())
        if loop.time() - at > DELIVERED_WITHIN:
            raise AssertionError(f"{sig.name} still pending {DELIVERED_WITHIN}s after it was sent")
        await asyncio.sleep(0.0005)


def prepare(directory: Path) -> None:
    (directory / "pids").mkdir(parents=True)


async def run_storm(directory: Path, storm: Storm, rng: random.Random) -> None:
    prepare(directory)
    loop = asyncio.get_running_loop()
    if storm.number == 0:  # decisive: the second signal must force the stop
        storm.when, storm.grace, storm.uvloop, count = "running", None, rng.random() < 0.5, 2
    else:
        storm.when = rng.choice(("startup", "running", "running"))
        storm.grace = rng.choice(GRACES)
        storm.uvloop = rng.random() < 0.7
        count = rng.choice((1, 1, 2, 3, 4, 8, 20))
    grace = TREE_GRACE if storm.grace is None else storm.grace
    program = await start_program(directory, storm, rng.randrange(2**32))
    async with program:
        watcher = asyncio.create_task(watch_descendants(program, storm.pids))
        reader: asyncio.Task[int] | None = None
        try:
            await program.expect(re.escape(targets.READY), timeout=EXIT_WITHIN)
            if storm.when == "startup":
                await asyncio.sleep(rng.uniform(0, 0.05))  # the tree is starting its children
            else:
                await program.expect("worker 'storm' is running")
                await asyncio.sleep(rng.uniform(0, 0.3))  # messages flow meanwhile
            reader = asyncio.create_task(program.wait(EXIT_WITHIN))
            for _ in range(count):
                sent = await send(program, rng.choice(_SIGNALS))
                if sent is None:
                    break
                storm.sent.append(sent)
                pace = 0.0 if storm.number == 0 else rng.random()
                if pace < 0.4:
                    await asyncio.sleep(0)  # back to back
                elif pace < 0.8:
                    await asyncio.sleep(rng.uniform(0, 0.01))
                else:
                    await asyncio.sleep(rng.uniform(0, min(grace, 1.0) * 1.5))
            storm.status = await reader
            storm.exited_at = loop.time()
        except AssertionError as exc:  # no ready line, a signal never delivered, no exit
            storm.problems.append(str(exc).split("\n", 1)[0])
        finally:
            storm.output = program.output
            for task in (watcher, reader):
                if task is not None and not task.done():  # the storm itself failed
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, AssertionError):
                        await task
    storm.pids |= {int(name) for name in os.listdir(directory / "pids")}
    storm.books = read_json(directory / "books.json")
    if storm.status is not None:
        check_exit(storm, grace)
    if storm.books is not None:
        check_books(storm, storm.books)
    try:
        await wait_gone(storm.pids, timeout=5.0)
    except AssertionError as exc:
        storm.problems.append(f"left behind: {exc}")


def expected_outcomes(sent: list[Sent], grace: float) -> dict[int, str]:
    """The exit statuses fluid's rules allow for these signals (see the module docstring)."""
    first = sent[0]
    second = sent[1] if len(sent) > 1 else None

    def handled_before(deadline: float) -> bool:
        """The second signal certainly reached fluid's handler before ``deadline``."""
        return (
            second is not None
            and second.delivered is not None
            and second.delivered + MARGIN < deadline
        )

    allowed: dict[int, str] = {}
    if second is not None:
        allowed[128 + second.signal] = f"forced by the second signal, {second.signal.name}"
    if not handled_before(first.at + grace):
        allowed.setdefault(128 + first.signal, f"grace over after {first.signal.name}")
    if grace > LINGER and not handled_before(first.at + LINGER):
        allowed[0] = "graceful"
    return allowed


def check_exit(storm: Storm, grace: float) -> None:
    """The exit status against what was sent, and when."""
    problems = storm.problems
    status, exited_at = storm.status, storm.exited_at
    assert status is not None
    assert exited_at is not None
    if not storm.sent:
        problems.append("the storm tested nothing: the program ended before the first signal")
        return
    storm.expected = expected_outcomes(storm.sent, grace)
    storm.outcome = storm.expected.get(status, "")
    first = storm.sent[0]
    if status not in storm.expected:
        problems.append(f"exit status {status}: the rules allow only {storm.expected}")
    elif status == 0 and exited_at < first.at + LINGER:
        problems.append(f"a graceful stop ended {exited_at - first.at:.3f}s after the first signal")
    elif storm.outcome.startswith("grace over") and exited_at < first.at + grace:
        problems.append(f"the grace of {grace}s ran out in {exited_at - first.at:.3f}s")
    decisions = [int(m["status"]) for m in _DECISION.finditer(storm.output)]
    if decisions != [status]:
        problems.append(f"the runner logged exit statuses {decisions}, the process exited {status}")
    if storm.books is None:
        problems.append("the tree started but its on_shutdown did not write its books")


def check_books(storm: Storm, books: dict[str, Any]) -> None:
    """Every message id accounted for, exactly once, in agreement with queue_status()."""
    problems = storm.problems
    stats, after = books["stats"], books["stats_after_take"]
    sent, handled, failed, taken = books["sent"], books["handled"], books["failed"], books["taken"]
    balance = stats["handled"] + stats["failed"] + stats["taken"] + stats["size"]
    if stats["sent"] != balance + stats["in_flight"]:
        problems.append(f"queue_status() does not balance: {stats}")
    if stats["in_flight"] or stats["taken"]:
        problems.append(f"in flight or taken after the stop: {stats}")
    if books["consumer_state"] in ("stopped", "force_stopped"):
        if stats["undelivered"] != stats["size"]:
            problems.append(f"undelivered is not what is left: {stats}")
    elif books["consumer_state"] != "init":
        problems.append(f"consumer still {books['consumer_state']} in on_shutdown")
    if books["consumer_state"] == "stopped" and stats["size"]:
        problems.append(f"a graceful stop did not drain the queue: {stats}")
    if sent != list(range(len(sent))):
        problems.append("the producer's ids are not consecutive")
    if stats["sent"] != len(sent):
        problems.append(
            f"queue counts {stats['sent']} sent, the producer {len(sent)} "
            f"(put() cancelled for {books['cancelled_put']})"
        )
    if stats["handled"] != len(handled) or stats["failed"] != len(failed):
        problems.append(f"queue_status() {stats} vs {len(handled)} handled, {len(failed)} failed")
    if books["on_error_calls"] != len(failed) or books["wrong_errors"]:
        problems.append(f"on_error: {books['on_error_calls']} calls, {books['wrong_errors']}")
    if len(taken) != stats["size"] or after["taken"] != stats["size"] or after["size"]:
        problems.append(f"take_undelivered() gave {len(taken)}: {stats} then {after}")
    if after["sent"] != stats["sent"]:
        problems.append(f"sent moved while the tree stopped: {stats} then {after}")
    outcomes = Counter(handled) + Counter(failed) + Counter(taken)
    if outcomes != Counter(sent):
        lost = sorted(set(sent) - set(outcomes))[:10]
        twice = sorted(i for i, n in outcomes.items() if n > 1)[:10]
        extra = sorted(set(outcomes) - set(sent))[:10]
        problems.append(f"ids lost {lost}, counted twice {twice}, never sent {extra}")
    if any(not targets.fails(i) for i in failed) or any(targets.fails(i) for i in handled):
        problems.append("a message failed that should not, or the other way round")
    for worker in ("producer", "pinger"):
        if books[f"{worker}_state"] not in ("init", "stopped", "force_stopped"):
            problems.append(f"{worker} still {books[f'{worker}_state']} in on_shutdown")
    if books["pinger_pid"] is not None:
        storm.pids.add(books["pinger_pid"])


async def test_signal_storms_at_the_runner(
    tmp_path: Path, stress_seconds: float, stress_seed: int, report: Report
) -> None:
    seed = stress_seed
    rng = random.Random(seed)
    report(seconds=stress_seconds)
    loop = asyncio.get_running_loop()
    started = loop.time()
    storms: list[Storm] = []
    while not storms or loop.time() - started < stress_seconds:
        storm = Storm(len(storms))
        storms.append(storm)
        await run_storm(tmp_path / f"storm-{storm.number}", storm, rng)
    duration = loop.time() - started

    books = [s.books for s in storms if s.books is not None]
    report(
        storms=len(storms),
        signals=sum(len(s.sent) for s in storms),
        decisive=sum(len(s.expected) == 1 for s in storms),
        exit_codes=dict(sorted(Counter(str(s.status) for s in storms).items())),
        outcomes=dict(Counter(s.outcome for s in storms)),
        sent=sum(b["stats"]["sent"] for b in books),
        handled=sum(b["stats"]["handled"] for b in books),
        failed=sum(b["stats"]["failed"] for b in books),
        undelivered=sum(b["stats"]["undelivered"] for b in books),
        processes_checked=sum(len(s.pids) for s in storms),
        duration=round(duration, 2),
    )
    failing = [s.describe() for s in storms if s.problems]
    assert not failing, f"seed={seed}: {len(failing)} of {len(storms)} storms:\n" + "\n\n".join(
        failing
    )
