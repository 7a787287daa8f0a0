"""The example of `make run` works and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_pipeline_runs_and_stops_cleanly_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLES / "pipeline.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # wait for real work, then stop it
            seen.append(line)
            if "[status]" in line and "handled" in line and "audit" in "".join(seen):
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    output = "".join(seen) + out
    assert proc.returncode == 0, output
    assert "stopping: producer first" in output
    assert "pipeline stopped: bye" in output
    assert "Traceback" not in output
