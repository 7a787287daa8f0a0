"""The ``fluid`` command: ``fluid run module:attr`` as a real process, signals and exit status.

The programs run ``python -m fluid`` from the project's root; targets live in
``examples/`` and ``tests/_run_targets.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fluid import cli

from ._programs import Program


async def test_sigterm_stops_the_example_gracefully_with_exit_0_and_runs_its_hooks() -> None:
    async with await Program.fluid("run", "examples.pipeline:build") as program:
        await program.expect(r"\[status\] running .* handled [1-9]")  # it works
        program.send(signal.SIGTERM)
        assert await program.wait() == 0, program.output
    output = program.output
    assert "received SIGTERM: stopping worker 'pipeline' gracefully" in output
    assert "stopping: producer first" in output  # a lifecycle observer
    assert "pipeline on_shutdown: every worker stopped" in output  # on_shutdown ran
    assert "pipeline stopped: bye" in output  # after_shutdown too
    assert "exit status 0" in output
    assert "Traceback" not in output


async def test_a_second_sigint_forces_the_stop_with_exit_130() -> None:
    async with await Program.fluid("run", "tests._run_targets:Stubborn") as program:
        await program.expect("stubborn started")
        program.send(signal.SIGINT)
        await program.expect("received SIGINT: stopping worker 'stubborn' gracefully within 30")
        program.send(signal.SIGINT)
        assert await program.wait() == 130, program.output
    assert "received SIGINT again: forcing worker 'stubborn' to stop" in program.output
    assert "stubborn on_shutdown ran" in program.output  # even when forced


@pytest.mark.parametrize("option", ["--stopping-grace-period", "--grace"])
async def test_the_grace_period_running_out_forces_the_stop_with_128_plus_the_signal(
    option: str,
) -> None:
    async with await Program.fluid("run", "tests._run_targets:Stubborn", option, "0.2") as program:
        await program.expect("stubborn started")
        program.send(signal.SIGTERM)
        assert await program.wait() == 143, program.output
    assert "did not stop within 0.2s: forcing it to stop" in program.output
    assert "stubborn on_shutdown ran" in program.output


async def test_a_failing_worker_exits_1_with_its_traceback_logged_once() -> None:
    async with await Program.fluid("run", "tests._run_targets:Failing") as program:
        assert await program.wait() == 1, program.output
    assert program.output.count("Traceback") == 1, program.output  # it was there twice
    assert program.output.count("ValueError: boom from the failing worker\n") == 1
    assert (
        "worker 'failing' failed (ValueError: boom from the failing worker): exit status 1"
        in program.output
    )


async def test_a_worker_that_ends_on_its_own_exits_0() -> None:
    async with await Program.fluid(
        "run", "tests._run_targets:Quick", "--log-level", "WARNING"
    ) as program:
        assert await program.wait() == 0, program.output
    assert "quick ran on uvloop" in program.output  # uvloop when installed
    assert "is running" not in program.output  # an INFO line, hidden at WARNING


async def test_a_module_not_found_exits_2_with_a_readable_message() -> None:
    async with await Program.fluid("run", "no_such_package.workers:tree") as program:
        assert await program.wait() == 2, program.output
    assert "fluid run: error: module 'no_such_package.workers' not found" in program.output
    assert "Traceback" not in program.output


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]], ids=["run", "prefork"])
async def test_a_factory_that_needs_arguments_exits_2_with_one_sentence(
    processes: list[str],
) -> None:
    async with await Program.fluid(
        "run", "tests._run_targets:needs_arguments", *processes
    ) as program:
        assert await program.wait() == 2, program.output
    assert program.output == (
        "fluid run: error: 'tests._run_targets:needs_arguments' is a function that needs "
        "arguments (host, port): a target is a fluid.Worker or a function without arguments "
        "that returns one\n"
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests._run_targets:NeedsASocket", "is a class that needs arguments (sock)"),
        ("examples.pipeline:no_such_tree", "module 'examples.pipeline' has no attribute"),
        ("tests._run_targets:not_a_worker", "is 42, not a fluid.Worker nor a function"),
        ("tests._run_targets:returns_a_string", "returned 'not a worker', not a fluid.Worker"),
        ("examples.pipeline", "expected a target like 'package.module:attribute'"),
        ("tests.no_such_module:x", "module 'tests.no_such_module' not found"),
    ],
)
def test_bad_targets_exit_2_with_a_readable_message(
    target: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fluid run: error: ")
    assert message in err
    assert "Traceback" not in err


def test_a_module_that_fails_to_import_exits_2_and_shows_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "broken_app.py").write_text("import a_dependency_that_is_not_installed\n")
    assert cli.main(["run", "broken_app:tree", "--app-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "importing module 'broken_app' failed" in err
    assert "No module named 'a_dependency_that_is_not_installed'" in err
    assert "broken_app.py" in err  # the traceback says where


def test_the_app_dir_is_searched_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "my_app.py").write_text(
        "import fluid\n\n"
        "class Hello(fluid.Worker):\n"
        "    async def run(self) -> None:\n"
        "        print('hello from my_app')\n"
    )
    assert cli.main(["run", "my_app:Hello", "--app-dir", str(tmp_path), "--no-uvloop"]) == 0
    assert "hello from my_app" in capsys.readouterr().out


async def test_a_module_not_found_names_the_app_dir_it_was_looked_for_in(tmp_path: Path) -> None:
    async with await Program.fluid("run", "my_app:build", "--app-dir", str(tmp_path)) as program:
        assert await program.wait() == 2, program.output
    assert program.output == (
        f"fluid run: error: module 'my_app' not found (is {str(tmp_path)!r} the right directory?)\n"
    )


@pytest.mark.parametrize("kind", ["missing", "a file"])
async def test_an_app_dir_that_is_not_a_directory_exits_2_with_one_sentence(
    kind: str, tmp_path: Path
) -> None:
    app_dir = tmp_path / "app"
    if kind == "a file":
        app_dir.write_text("")
    async with await Program.fluid(
        "run", "examples.pipeline:build", "--app-dir", str(app_dir)
    ) as program:
        assert await program.wait() == 2, program.output
    what = "does not exist" if kind == "missing" else "is not a directory"
    assert program.output == f"fluid run: error: --app-dir {str(app_dir)!r} {what}\n"


LATE = """
import atexit, os, signal
import fluid

async def ticks():
    try:
        yield 1
        yield 2
    finally:  # closed with the loop, after the outcome was decided
        os.kill(os.getpid(), signal.SIGTERM)

class Quick(fluid.Worker):
    async def run(self) -> None:
        self.ticks = ticks()
        await anext(self.ticks)

# in the interpreter's exit, after fluid run returned
atexit.register(os.kill, os.getpid(), signal.SIGINT)
"""


def test_signals_after_the_outcome_do_not_change_the_exit_status(tmp_path: Path) -> None:
    (tmp_path / "late_app.py").write_text(LATE)
    done = subprocess.run(
        [sys.executable, "-m", "fluid", "run", "late_app:Quick", "--app-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,  # below the test's own timeout: a hang fails here, with its output
    )
    assert "exit status 0" in done.stderr
    assert done.returncode == 0, done.stderr  # not killed by the late SIGTERM or SIGINT


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],  # no target
        ["run", "examples.pipeline:build", "--stopping-grace-period", "-1"],
        ["run", "examples.pipeline:build", "--grace", "-1"],
        ["run", "examples.pipeline:build", "--processes", "0"],
        ["run", "examples.pipeline:build", "--log-level", "loud"],
        ["run", "examples.pipeline:build", "--processes", "2", "--bind", "8000"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        cli.main(argv)
    assert exc_info.value.code == 2
    assert "usage: fluid" in capsys.readouterr().err


def test_bind_without_processes_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "examples.pipeline:build", "--bind", "127.0.0.1:0"]) == 2
    assert "--bind needs --processes" in capsys.readouterr().err


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: fluid" in capsys.readouterr().err


def test_the_fluid_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "fluid"
    done = subprocess.run(
        [str(script), "run", "--help"], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "package.module:attribute" in done.stdout
    assert "--processes" in done.stdout
    assert "--stopping-grace-period SECONDS, --grace SECONDS" in done.stdout


def test_load_target_returns_the_attribute() -> None:
    from examples import pipeline

    assert cli.load_target("examples.pipeline:build") is pipeline.build
    with pytest.raises(cli.TargetError, match=r"has no attribute 'Pipeline\.nope'"):
        cli.load_target("examples.pipeline:Pipeline.nope")
