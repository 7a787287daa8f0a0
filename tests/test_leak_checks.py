"""The leak checks of conftest.py catch what they are meant to catch."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SETTLE = "SETTLE_SECONDS = 5.0"
# The checks, with a shorter wait for leftovers: each leak below outlives it.
CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
CONFTEST = CONFTEST.replace(SETTLE, "SETTLE_SECONDS = 0.5")

# A child that starts a grandchild and exits at once: the grandchild is
# re-parented, and no longer a child of anything in the test process.
ORPHAN = (
    "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(2)'])"
)


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
            "    threading.Thread(target=ev.wait, args=(2,), daemon=True).start()\n",
            "test left threads running",
        ),
        (
            "def test_leak():\n"
            "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(2)'])\n",
            "test left child processes",
        ),
        (
            "def test_leak():\n"
            f"    subprocess.run([sys.executable, '-c', {ORPHAN!r}], check=True)\n",
            "test left child processes",
        ),
    ],
    ids=["task", "thread", "child", "orphaned-grandchild"],
)
def test_leaks_fail_the_test(pytester: pytest.Pytester, body: str, complaint: str) -> None:
    assert SETTLE in (Path(__file__).parent / "conftest.py").read_text()
    pytester.makeconftest(CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile("import asyncio, subprocess, sys, threading\n\n" + body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*{complaint}*"])
    # The leftovers outlive that run and are re-parented to this process (a
    # subreaper): this test's own check waits for them to end.
