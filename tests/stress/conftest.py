"""The stress scenarios' knobs and their report.

Each scenario runs for ``stress_seconds``: 0.3 s by default (``make test``),
``FLUID_STRESS_SECONDS`` when set (``make stress`` sets 20). Each one files
its books with the ``report`` fixture; the report is printed at the end of the
run and, when ``FLUID_STRESS_REPORT`` names a file, written there as JSON.
The suite-wide checks of ``tests/conftest.py`` (no task, thread or process
left) apply to every scenario.
"""

from __future__ import annotations

import json
import os
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
