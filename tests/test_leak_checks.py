"""The leak checks of conftest.py catch what they are meant to catch."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (
            "async def test_leak():\n"
            "    asyncio.get_running_loop().create_task(asyncio.sleep(60))\n",
            "test left tasks running",
        ),
        (
            "def test_leak():\n"
            "    ev = threading.Event()\n"
            "    threading.Thread(target=ev.wait, args=(2.5,), daemon=True).start()\n",
            "test left threads running",
        ),
        (
            "def test_leak():\n"
            "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)'])\n",
            "test left child processes",
        ),
    ],
)
def test_leaks_fail_the_test(pytester: pytest.Pytester, body: str, complaint: str) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile("import asyncio, subprocess, sys, threading\n\n" + body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*{complaint}*"])
