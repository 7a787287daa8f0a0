"""Fault injection: storms of SIGINT and SIGTERM at ``python -m fluid run``.

Each storm starts ``python -m fluid run tests.stress._targets:storm_tree``: a
tree of a consumer (bounded queue, loop handler, some messages failing), a
process worker and a producer that fills the queue. The tree's
``on_shutdown`` writes the consumer's ``queue_stats()`` and the tree's own
account of every message id to a JSON file. Then the scenario sends a burst
of signals at random: during startup or once running, back to back, a few
milliseconds apart, or spread over the grace period.

Checked after each storm, from the program's log and books:

* it exits, within a bound;
* its exit status follows fluid's rules (``_runner.py``): 0 after a graceful
  stop; after a forced stop ``128 + N``, N being the signal that forced it
  (the second signal), or the one that asked for the stop when its grace
  period ran out. Before fluid installed its handlers, Python's own rules
  apply: killed by the signal, or for SIGINT a KeyboardInterrupt (exit 1 while
  Python starts, 130 once ``asyncio.Runner`` runs). Once fluid decided the
  exit status, later signals must not change it: the runner ignores them
  until its loop is closed and the ``fluid`` command from then on. Killed
  while fluid's handlers were installed is never right;
* once the tree started, ``on_shutdown`` ran and the books balance by id:
  every message sent is handled, failed (each one reported to ``on_error``)
  or left undelivered and taken back, exactly once, and ``queue_stats()``
  agrees: ``sent = handled + failed + taken + size + in_flight``;
* no process of the program's tree is left: the process worker and every
  other descendant seen while it ran are gone.

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

from .._programs import Program, children_of, wait_gone
from . import _targets as targets
from .conftest import Report

EXIT_WITHIN = 15.0
"""Seconds a program gets to exit after its start (its grace is at most 5 s)."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_LOG = re.compile(
    r"received (?P<first>SIG\w+): stopping worker 'storm' gracefully"
    r"|received (?P<forcing>SIG\w+) again: forcing worker 'storm' to stop"
    r"|received (?P<again>SIG\w+) again: cancelling worker 'storm' again"
    r"|worker 'storm' (?P<grace>did not stop within)"
    r"|worker 'storm' (?:stopped|was forced to stop|failed|was cancelled|failed to start)"
    r": exit status (?P<decision>\d+)"
    r"|(?P<interrupted>interrupted): exit status (?P<interrupted_status>\d+)"
)


def descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (Linux: from /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    figures: dict[str, Any] = json.loads(path.read_text())
    return figures


@dataclass
class Storm:
    """One program and the signals sent to it; what it did."""

    number: int
    when: str = ""  # "startup" or "running"
    grace: float | None = None
    uvloop: bool = True
    sent: list[str] = field(default_factory=list)
    status: int | None = None
    outcome: str = ""
    overridden: str = ""  # "decided->exited" when a late signal changed the exit status
    books: dict[str, Any] | None = None
    pids: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    output: str = ""

    def describe(self) -> str:
        tail = "\n".join(self.output.splitlines()[-40:])
        return (
            f"storm {self.number} ({self.when}, grace={self.grace}, uvloop={self.uvloop}) "
            f"sent {' '.join(self.sent)} -> exit {self.status} ({self.outcome}):\n  "
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


def prepare(directory: Path) -> None:
    (directory / "pids").mkdir(parents=True)


async def run_storm(directory: Path, storm: Storm, rng: random.Random) -> None:
    prepare(directory)
    storm.when = rng.choice(("startup", "running", "running"))
    storm.grace = rng.choice((None, 0.05, 0.2, 1.0))
    storm.uvloop = rng.random() < 0.7
    grace = 5.0 if storm.grace is None else storm.grace
    program = await start_program(directory, storm, rng.randrange(2**32))
    async with program:
        watcher = asyncio.create_task(watch_descendants(program, storm.pids))
        reader: asyncio.Task[int] | None = None
        try:
            if storm.when == "startup":
                reader = asyncio.create_task(program.wait(EXIT_WITHIN))
                await asyncio.sleep(rng.uniform(0, 0.4))  # somewhere in its start
            else:
                await program.expect("worker 'storm' is running")
                reader = asyncio.create_task(program.wait(EXIT_WITHIN))
                await asyncio.sleep(rng.uniform(0, 0.3))  # messages flow meanwhile
            for _ in range(rng.choice((1, 1, 2, 3, 4, 8, 20))):
                sig = rng.choice(_SIGNALS)
                if program.send(sig):
                    storm.sent.append(sig.name)
                pace = rng.random()
                if pace < 0.4:
                    await asyncio.sleep(0)  # back to back
                elif pace < 0.8:
                    await asyncio.sleep(rng.uniform(0, 0.01))
                else:
                    await asyncio.sleep(rng.uniform(0, min(grace, 1.0) * 1.5))
            storm.status = await reader
        finally:
            storm.output = program.output
            for task in (watcher, reader):
                if task is not None and not task.done():  # the storm itself failed
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    storm.pids |= {int(name) for name in os.listdir(directory / "pids")}
    storm.books = read_json(directory / "books.json")
    check_exit(storm)
    if storm.books is not None:
        check_books(storm, storm.books)
    try:
        await wait_gone(storm.pids, timeout=5.0)
    except AssertionError as exc:
        storm.problems.append(f"left behind: {exc}")


def check_exit(storm: Storm) -> None:
    """The exit status against fluid's rules, read from what the runner logged."""
    problems = storm.problems
    first = forced_by = decision = None
    received = 0
    interrupted = by_grace = False
    for match in _LOG.finditer(storm.output):
        if match["first"]:
            first = match["first"]
            received += 1
        elif match["forcing"] or match["again"]:
            received += 1
            if forced_by is None and match["forcing"]:
                forced_by = match["forcing"]
        elif match["grace"]:
            if forced_by is None:
                forced_by, by_grace = first, True
        elif match["decision"] is not None:
            decision = int(match["decision"])
        elif match["interrupted"]:
            interrupted = True
    status = storm.status
    assert status is not None
    killed_by = signal.Signals(-status).name if -status in _SIGNALS else None
    sigint_sent = "SIGINT" in storm.sent
    if received == 0 and decision is None:
        # No signal reached fluid's handlers: Python or asyncio.Runner had it.
        if killed_by is not None and killed_by in storm.sent:
            storm.outcome = f"killed by {killed_by} before fluid's handlers"
        elif interrupted and status == 130 and sigint_sent:
            storm.outcome = "SIGINT before fluid's handlers: asyncio.Runner, 130"
        elif status == 1 and "KeyboardInterrupt" in storm.output and sigint_sent:
            storm.outcome = "SIGINT while Python was starting"
        else:
            problems.append(f"exit status {status}, yet fluid handled no signal")
        return
    if decision is None:
        problems.append(f"fluid handled {received} signals but gave no exit status (exit {status})")
        return
    expected = 0 if forced_by is None else 128 + signal.Signals[forced_by]
    if decision != expected:
        reason = "a graceful stop" if forced_by is None else f"a stop forced by {forced_by}"
        if by_grace:
            reason = f"the grace period after {forced_by} ran out"
        problems.append(
            f"exit status {decision} after {reason}: the rules say {expected} "
            f"(signals handled: {received})"
        )
    if status == decision:
        storm.outcome = (
            "graceful"
            if forced_by is None
            else f"forced: grace over after {forced_by}"
            if by_grace
            else f"forced by {forced_by}"
        )
    elif killed_by is not None and killed_by in storm.sent:
        storm.overridden = f"{decision}->{status}"
        problems.append(f"decided exit status {decision}, then killed by a late {killed_by}")
    elif interrupted and status == 130 and sigint_sent:
        storm.overridden = f"{decision}->{status}"
        problems.append(f"decided exit status {decision}, then a late SIGINT made it 130")
    else:
        problems.append(f"runner logged exit status {decision} but the process exited {status}")
    if storm.books is None:
        problems.append("the tree started but its on_shutdown did not write its books")


def check_books(storm: Storm, books: dict[str, Any]) -> None:
    """Every message id accounted for, exactly once, in agreement with queue_stats()."""
    problems = storm.problems
    stats, after = books["stats"], books["stats_after_take"]
    sent, handled, failed, taken = books["sent"], books["handled"], books["failed"], books["taken"]
    balance = stats["handled"] + stats["failed"] + stats["taken"] + stats["size"]
    if stats["sent"] != balance + stats["in_flight"]:
        problems.append(f"queue_stats() does not balance: {stats}")
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
        problems.append(f"queue_stats() {stats} vs {len(handled)} handled, {len(failed)} failed")
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
        exit_codes=dict(sorted(Counter(str(s.status) for s in storms).items())),
        outcomes=dict(Counter(s.outcome for s in storms)),
        late_signal_overrides=dict(Counter(s.overridden for s in storms if s.overridden)),
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
