"""Every complete example of README.md and docs/ runs, exits cleanly and prints what its page says.

A block counts as complete when it calls ``asyncio.run(``. Examples that run
until Ctrl-C get a SIGINT once they printed their first line.

What a page says an example prints, the convention: a ``print(...)``
statement followed by a comment, ``print(x)  # 10 6 4``, promises that the
call prints exactly the comment's text (each time it runs; at least once),
``...`` standing for any text: ``# runs: 3, failures: 0, ...``. A comment
that is a remark rather than the output (``# type: ignore``, or one listed
in ``REMARKS`` until the page is rewritten) is not checked. The examples are
run with each such ``print`` replaced by one that also records what it
printed.

Only the examples of the selected tests run, ``CONCURRENCY`` at a time, all
within the first test's setup (so that no process outlives a test), each
within ``EACH_WITHIN`` seconds and all within ``ALL_WITHIN``: an example
that hangs fails its own test, never the run.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
CONCURRENCY = 6
EACH_WITHIN = 20.0
"""Seconds an example may run (including a wait for its first line before Ctrl-C)."""
ALL_WITHIN = 90.0
"""Seconds the selected examples may take in all: the rest are reported, not run."""

# Well above ALL_WITHIN: the first test's setup runs every selected example.
pytestmark = pytest.mark.timeout(ALL_WITHIN + 30)

REMARKS: set[tuple[str, str]] = set()
"""Comments after a ``print`` that describe the output instead of showing it.

Rewrite them to the convention (or move the remark to a line of its own)
and remove them from here; a remark that no longer exists fails the suite.
"""
_NOT_OUTPUT = ("type:", "noqa")

_RECORDER = """
def __doc_print__(_n, *args, **kwargs):
    import builtins, io, json, os
    text = io.StringIO()
    builtins.print(*args, **{**kwargs, "file": text})
    builtins.print(*args, **kwargs)
    with open(os.environ["FLUID_DOC_PRINTS"], "a") as f:
        f.write(json.dumps([_n, text.getvalue()]) + "\\n")
"""


def examples() -> dict[str, str]:
    found = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, code in enumerate(BLOCK.findall(page.read_text())):
            if "asyncio.run(" in code:
                found[f"{page.relative_to(ROOT)}#{i}"] = code
    return found


EXAMPLES = examples()


def waits_for_ctrl_c(code: str) -> bool:
    return "add_signal_handler" in code or "Ctrl-C" in code


def promised_prints(code: str) -> dict[int, str]:
    """The line numbers (0-based) of the ``print`` statements with a comment: the comment."""
    promised = {}
    lines = code.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type != tokenize.COMMENT:
            continue
        row = token.start[0] - 1
        if not lines[row].lstrip().startswith("print("):
            continue
        text = token.string[1:].strip()
        if not text.startswith(_NOT_OUTPUT):
            promised[row] = text
    return promised


def instrumented(code: str, promised: dict[int, str]) -> str:
    """The example, its promised ``print`` calls recording what they print."""
    lines = code.splitlines()
    for row in promised:
        lines[row] = lines[row].replace("print(", f"__doc_print__({row}, ", 1)
    future = [i for i, line in enumerate(lines) if line.startswith("from __future__")]
    at = future[-1] + 1 if future else 0
    return "\n".join([*lines[:at], _RECORDER, *lines[at:]]) + "\n"


def matches(promise: str, printed: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in promise.split("..."))
    return re.fullmatch(pattern, printed.rstrip("\n"), re.DOTALL) is not None


@dataclass
class Run:
    """One example's run: its process while it runs, then what it did."""

    name: str
    script: Path
    ctrl_c: bool
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    interrupted: bool = False
    status: int | None = None
    problem: str = ""
    output: str = ""
    prints: list[tuple[int, str]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.script.with_suffix(".out")

    @property
    def printed(self) -> Path:
        return self.script.with_suffix(".prints")

    def start(self) -> None:
        with self.out.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-u", str(self.script)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "FLUID_DOC_PRINTS": str(self.printed)},
            )
        self.started = time.monotonic()

    def poll(self) -> bool:
        """Move the run on; True once it ended."""
        process = self.process
        assert process is not None
        if process.poll() is not None:
            self.status = process.returncode
            return True
        if self.ctrl_c and not self.interrupted and b"\n" in self.out.read_bytes():
            process.send_signal(signal.SIGINT)  # it runs: now press Ctrl-C
            self.interrupted = True
        if time.monotonic() - self.started > EACH_WITHIN:
            process.kill()
            process.wait(10)
            self.problem = f"still running after {EACH_WITHIN}s: killed"
            return True
        return False

    def collect(self) -> None:
        self.output = self.out.read_text(errors="replace")
        if self.printed.exists():
            for line in self.printed.read_text().splitlines():
                row, text = json.loads(line)
                self.prints.append((row, text))


def run_all(runs: list[Run]) -> None:
    """Run the examples, ``CONCURRENCY`` at a time, all of them within ``ALL_WITHIN``."""
    pending, running = list(runs), list[Run]()
    deadline = time.monotonic() + ALL_WITHIN
    try:
        while pending or running:
            while pending and len(running) < CONCURRENCY and time.monotonic() < deadline:
                run = pending.pop(0)
                run.start()
                running.append(run)
            if not running:
                break
            for run in [r for r in running if r.poll()]:
                running.remove(run)
                run.collect()
            time.sleep(0.01)
    finally:
        for run in running:  # an error here: nothing is left running
            assert run.process is not None
            run.process.kill()
            run.process.wait(10)
    for run in pending:
        run.problem = f"not run: the examples selected took more than {ALL_WITHIN}s in all"


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    selected: list[str] = []  # the examples of the tests this run selected, in their order
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if isinstance(item, pytest.Function) and item.module is request.module and callspec:
            selected.append(callspec.params["name"])
    folder = tmp_path_factory.mktemp("examples")
    runs = []
    for i, name in enumerate(selected):
        code = EXAMPLES[name]
        script = folder / f"example_{i}.py"
        script.write_text(instrumented(code, promised_prints(code)))
        runs.append(Run(name, script, waits_for_ctrl_c(code)))
    run_all(runs)
    return {run.name: run for run in runs}


def test_there_are_examples_to_run() -> None:
    assert len(EXAMPLES) >= 10


def test_every_remark_still_exists() -> None:
    found = {
        (name, text) for name, code in EXAMPLES.items() for text in promised_prints(code).values()
    }
    assert REMARKS - found == set(), "rewritten remarks: remove them from REMARKS"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs_and_prints_what_the_page_says(name: str, results: dict[str, Run]) -> None:
    run = results[name]
    assert not run.problem, f"{run.problem}\n{run.output}"
    assert run.status == 0, run.output
    # an example that shows an error catches it and prints it: a logged
    # traceback reads as if the example were broken
    assert "Traceback" not in run.output, run.output
    promised = promised_prints(EXAMPLES[name])
    lines = EXAMPLES[name].splitlines()
    wrong = []
    for row, promise in promised.items():
        if (name, promise) in REMARKS:
            continue
        printed = [text for r, text in run.prints if r == row]
        if not printed:
            wrong.append(f"{lines[row].strip()!r} never printed")
        wrong += [
            f"{lines[row].strip()!r} printed {text.rstrip()!r}"
            for text in printed
            if not matches(promise, text)
        ]
    assert not wrong, "\n".join(wrong) + f"\n--- output ---\n{run.output}"
