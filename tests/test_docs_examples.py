"""Every complete example of README.md and docs/ runs and exits cleanly.

A block counts as complete when it calls ``asyncio.run(``. All examples start
at once (many of them sleep a little to show something happening), and each
test waits for its own. Examples that run until Ctrl-C get a SIGINT once they
printed their first line.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


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


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    folder = tmp_path_factory.mktemp("examples")
    procs = {}
    for i, (name, code) in enumerate(EXAMPLES.items()):
        script = folder / f"example_{i}.py"
        script.write_text(code)
        procs[name] = subprocess.Popen(
            [sys.executable, "-u", str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_there_are_examples_to_run() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs(name: str, running: dict[str, subprocess.Popen[str]]) -> None:
    proc = running[name]
    assert proc.stdout is not None
    output = ""
    if waits_for_ctrl_c(EXAMPLES[name]):
        output = proc.stdout.readline()  # it runs: now press Ctrl-C
        proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=20)
    output += rest
    assert proc.returncode == 0, output
