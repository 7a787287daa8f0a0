"""The example of `make run` works and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"
WITHIN = 20.0
"""Seconds for the pipeline to show real work, then again to stop (generous: a busy machine)."""


def real_work(output: str) -> bool:
    return "[status]" in output and "handled" in output and "audit" in output


def test_pipeline_runs_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(EXAMPLES / "pipeline.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + WITHIN
        while not real_work(log.read_text()) and proc.poll() is None:  # wait for real work
            assert time.monotonic() < deadline, f"no work within {WITHIN}s:\n{log.read_text()}"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        proc.wait(WITHIN)
    finally:
        proc.kill()
        proc.wait(10)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "stopping: producer first" in output
    assert "pipeline stopped: bye" in output
    assert "Traceback" not in output


def test_stream_group_runs_three_consumers_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """`make streams`: its own redis-server, orders spread over three children, a clean stop."""
    log = tmp_path / "streams.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(EXAMPLES / "stream_group.py")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def children_billing() -> set[str]:
        return {line.split("]")[0] for line in log.read_text().splitlines() if "billed" in line}

    try:
        deadline = time.monotonic() + WITHIN
        while len(children_billing()) < 2 and proc.poll() is None:  # Redis spread the orders
            assert time.monotonic() < deadline, f"no work within {WITHIN}s:\n{log.read_text()}"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        proc.wait(WITHIN)
    finally:
        proc.kill()
        proc.wait(10)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    server_pid = int(output.split("(pid ")[1].split(")")[0])
    try:  # the example stopped its server
        os.kill(server_pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"redis-server {server_pid} still runs")
