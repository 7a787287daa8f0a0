"""The stress scenarios' knobs and their report.

Each scenario runs for ``stress_seconds``: 0.3 s by default (``make test``),
``FLUID_STRESS_SECONDS`` when set (``make stress`` sets 20), and draws its
random choices from ``stress_seed``: ``FLUID_STRESS_SEED`` replays a run's
choices (not its timing), else a fresh seed is reported. Each one files
its books with the ``report`` fixture; the report is printed at the end of the
run and, when ``FLUID_STRESS_REPORT`` names a file, written there as JSON.
The suite-wide checks of ``tests/conftest.py`` (no task, thread or process
left) apply to every scenario.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable

import pytest

DEFAULT_SECONDS = 0.3

Report = Callable[..., None]
"""``report(**figures)``: file the figures of the scenario that runs now."""

_reports: dict[str, dict[str, object]] = {}


@pytest.fixture
def stress_seconds() -> float:
    """How long a scenario injects faults: 0.3 s, or ``FLUID_STRESS_SECONDS``."""
    value = os.environ.get("FLUID_STRESS_SECONDS", "")
    return float(value) if value else DEFAULT_SECONDS


@pytest.fixture
def stress_seed(report: Report) -> int:
    """The scenario's seed: ``FLUID_STRESS_SEED`` to replay a run, else a fresh one, reported."""
    value = os.environ.get("FLUID_STRESS_SEED", "")
    seed = int(value) if value else random.SystemRandom().randrange(2**32)
    report(seed=seed)
    print(f"seed={seed}")
    return seed


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """File figures (sent, handled, failed, crashes...) under the scenario's name."""
    figures = _reports.setdefault(request.node.nodeid.split("::", 1)[-1], {})

    def file(**values: object) -> None:
        figures.update(values)

    return file


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _reports:
        return
    terminalreporter.section("stress report")
    for name, figures in _reports.items():
        line = ", ".join(f"{key}={value}" for key, value in figures.items())
        terminalreporter.write_line(f"{name}: {line}")
    path = os.environ.get("FLUID_STRESS_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_reports, f, indent=2)
        terminalreporter.write_line(f"written to {path}")
