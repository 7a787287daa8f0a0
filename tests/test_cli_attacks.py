"""An adversarial user's review of ``fluid run`` and prefork (issue 14, "The fluid command").

Each defect found is a strict xfail naming it; the other tests pin what was
attacked and held. The targets live in a module written to a temporary
directory (``--app-dir``), so that each attack reads next to its target.
Real processes, output read with deadlines, short grace periods.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import fluid
from fluid import cli
from fluid.integrations import aiohttp as fluid_aiohttp
from fluid.integrations import starlette as fluid_starlette

from ._programs import ROOT, Program, descendants, wait_gone

TARGETS = textwrap.dedent(
    '''
    import asyncio, functools, os
    import fluid

    class Quick(fluid.Worker):
        async def run(self):
            print(f"quick ran (pid {os.getpid()})", flush=True)

    class Forever(fluid.Worker):
        """Runs until cancelled: a graceful stop does not end it."""
        async def on_startup(self):
            print(f"forever started (pid {os.getpid()})", flush=True)
        async def run(self):
            await asyncio.Event().wait()
        async def on_shutdown(self):
            print("forever on_shutdown", flush=True)

    class FailsStartup(fluid.Worker):
        async def on_startup(self):
            raise ValueError("boom in on_startup")
        async def run(self):
            pass

    class FailsRun(fluid.Worker):
        async def run(self):
            raise ValueError("boom in run")

    class ExitsSystem(fluid.Worker):
        async def run(self):
            raise SystemExit(3)

    class Interrupts(fluid.Worker):
        async def run(self):
            raise KeyboardInterrupt

    def once_then_forever(first):
        """The first child runs ``first``; a respawned one runs Forever (a marker file)."""
        marker = os.environ["ATTACK_MARKER"]
        if os.path.exists(marker):
            return Forever()
        open(marker, "w").close()
        return first()

    def fails_once():
        return once_then_forever(FailsRun)

    def system_exit_once():
        return once_then_forever(ExitsSystem)

    def interrupt_once():
        return once_then_forever(Interrupts)

    def build_defaults(x=1, *args, **kwargs):
        return Quick()

    def build_two(a, b):
        return Quick()

    def build_keyword_only(*, x):
        return Quick()

    class Factory:
        def __call__(self):
            return Quick()
        def method(self):
            return Quick()

    factory = Factory()
    filled = functools.partial(build_two, 1, 2)
    half_filled = functools.partial(build_two, 1)

    class WithArgument(fluid.Worker):
        def __init__(self, sock):
            super().__init__()
        async def run(self):
            pass

    async def tick():
        await asyncio.sleep(0)

    def ticker():
        """Stops gracefully: its function ends its current call and the worker ends."""
        return fluid.WorkerFunction(tick, heartbeat=0.05)

    class HungStart(fluid.Worker):
        async def on_startup(self):
            print(f"hung start (pid {os.getpid()})", flush=True)
            await asyncio.Event().wait()
        async def run(self):
            pass

    c_callable = getattr  # a builtin that needs arguments: no signature to read
    '''
)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``attack_targets.py``."""
    path = tmp_path_factory.mktemp("attack_app")
    (path / "attack_targets.py").write_text(TARGETS)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> dict[str, str]:
    """The environment of a target whose first child differs from its respawns."""
    return {"ATTACK_MARKER": str(tmp_path / "marker")}


async def fluid_run(
    app_dir: Path, target: str, *args: str, env: dict[str, str] | None = None
) -> Program:
    return await Program.fluid(
        "run", f"attack_targets:{target}", "--app-dir", str(app_dir), *args, env=env
    )


async def seen(program: Program, pattern: str, timeout: float = 10.0) -> re.Match[str]:
    """A line matching ``pattern``, already read or to come (children's lines interleave)."""
    for line in program.lines:
        match = re.search(pattern, line)
        if match:
            return match
    return await program.expect(pattern, timeout)


async def exit_status_and_output(app_dir: Path, target: str, *args: str) -> tuple[int, str]:
    async with await fluid_run(app_dir, target, *args) as program:
        status = await program.wait(timeout=15)
    return status, program.output


# ------------------------------------------------ targets that need arguments


def build_two(a: int, b: int) -> fluid.Worker:
    return fluid.Workers()


def build_keyword_only(*, x: int) -> fluid.Worker:
    return fluid.Workers()


def build_defaults(x: int = 1, *args: object, **kwargs: object) -> fluid.Worker:
    return fluid.Workers()


class Factory:
    def __call__(self) -> fluid.Worker:
        return fluid.Workers()

    def method(self) -> fluid.Worker:
        return fluid.Workers()


class WithArgument(fluid.Worker):
    def __init__(self, sock: object) -> None:
        super().__init__()

    async def run(self) -> None:
        pass


class WithDefaults(fluid.Worker):
    def __init__(self, sock: object = None) -> None:
        super().__init__()

    async def run(self) -> None:
        pass


def inject(build: Callable[[str], fluid.Worker]) -> Callable[[], fluid.Worker]:
    """A decorator that supplies the argument: the usual dependency-injection shape."""

    @functools.wraps(build)
    def wrapper() -> fluid.Worker:
        return build("injected connection")

    return wrapper


@inject
def build_injected(connection: str) -> fluid.Worker:
    return fluid.Workers()


factory = Factory()


@pytest.mark.parametrize(
    "target",
    [
        build_defaults,
        factory,
        factory.method,
        functools.partial(build_two, 1, 2),
        WithDefaults,
        fluid.Workers,
    ],
    ids=[
        "defaults-and-variadics",
        "callable-object",
        "bound-method",
        "filled-partial",
        "class-with-defaults",
        "worker-class",
    ],
)
def test_targets_callable_without_arguments_are_accepted(target: object) -> None:
    fluid.Prefork(target, processes=1)  # type: ignore[arg-type]
    fluid_starlette.lifespan(target)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "needed"),
    [
        (build_two, "(a, b)"),
        (build_keyword_only, "(x)"),
        (functools.partial(build_two, 1), "(b)"),
        (Factory.method, "(self)"),
        (WithArgument, "(sock)"),
    ],
    ids=["positional", "keyword-only", "half-filled-partial", "unbound-method", "class"],
)
def test_targets_that_need_arguments_raise_type_error_at_the_call(
    target: object, needed: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: fluid.run(target),  # type: ignore[arg-type]
        lambda: fluid.Prefork(target, processes=1),  # type: ignore[arg-type]
        lambda: fluid_starlette.lifespan(target),  # type: ignore[arg-type]
        lambda: fluid_aiohttp.cleanup_ctx(target),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match=re.escape(f"needs arguments {needed}")):
            call()


def test_a_decorator_that_supplies_the_arguments_is_not_refused() -> None:
    assert build_injected().worker_state is not None  # callable without arguments
    fluid.Prefork(build_injected, processes=1)


async def test_the_command_accepts_and_refuses_the_same_targets(app_dir: Path) -> None:
    accepted = ["build_defaults", "factory", "factory.method", "filled"]
    refused = {
        "build_keyword_only": "is a function that needs arguments (x)",
        "Factory.method": "is a function that needs arguments (self)",
        "half_filled": "is a function that needs arguments (b)",
        "WithArgument": "is a class that needs arguments (sock)",
    }
    results = await asyncio.gather(
        *(exit_status_and_output(app_dir, t, "--log-level", "warning") for t in accepted),
        *(exit_status_and_output(app_dir, t, "--processes", "2") for t in refused),
    )
    for target, (status, output) in zip(accepted, results, strict=False):
        assert status == 0, (target, output)
        assert "quick ran" in output, (target, output)
    for (target, words), (status, output) in zip(
        refused.items(), results[len(accepted) :], strict=True
    ):
        assert status == 2, output
        assert output == (
            f"fluid run: error: 'attack_targets:{target}' {words}: a target is a "
            "fluid.Worker or a function without arguments that returns one\n"
        )


async def test_a_c_callable_that_needs_arguments_exits_2_with_one_sentence(app_dir: Path) -> None:
    status, output = await exit_status_and_output(app_dir, "c_callable")
    assert "Traceback" not in output, output
    assert status == 2, output


# ------------------------------------------------------------------ --app-dir


async def test_app_dir_errors_name_the_directory(app_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    link = tmp_path / "link"
    link.symlink_to(app_dir)
    missing, a_file, not_found, via_link = await asyncio.gather(
        Program.fluid("run", "m:w", "--app-dir", "no/such/dir", cwd=tmp_path),
        Program.fluid("run", "m:w", "--app-dir", "a_file", cwd=tmp_path),
        Program.fluid("run", "no_such_module:w", "--app-dir", "link", cwd=tmp_path),
        Program.fluid(
            "run", "attack_targets:Quick", "--app-dir", "link", "--processes", "1", cwd=tmp_path
        ),
    )
    async with missing, a_file, not_found, via_link:
        statuses = [await p.wait(15) for p in (missing, a_file, not_found, via_link)]
    assert statuses == [2, 2, 2, 0], [p.output for p in (missing, a_file, not_found, via_link)]
    assert missing.output == "fluid run: error: --app-dir 'no/such/dir' does not exist\n"
    assert a_file.output == "fluid run: error: --app-dir 'a_file' is not a directory\n"
    assert not_found.output == (
        f"fluid run: error: module 'no_such_module' not found (is '{link}' the right directory?)\n"
    )
    assert "[child 1] quick ran" in via_link.output  # the children import from DIR too


async def test_app_dir_comes_first_even_when_already_on_the_path(tmp_path: Path) -> None:
    for name in ("first", "app"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shadowed.py").write_text(
            "import fluid\n\n"
            "class W(fluid.Worker):\n"
            "    async def run(self) -> None:\n"
            f"        print('imported from {name}', flush=True)\n"
        )
    pythonpath = os.pathsep.join([str(tmp_path / "first"), str(tmp_path / "app"), str(ROOT)])
    async with await Program.fluid(
        "run",
        "shadowed:W",
        "--app-dir",
        "app",
        "--log-level",
        "warning",
        cwd=tmp_path,
        env={"PYTHONPATH": pythonpath},
    ) as program:
        assert await program.wait(15) == 0, program.output
    assert "imported from app" in program.output, program.output


# ------------------------------------------------------- tracebacks logged once


async def test_a_childs_failing_run_logs_its_traceback_once(
    app_dir: Path, marker: dict[str, str]
) -> None:
    async with await fluid_run(
        app_dir, "fails_once", "--processes", "1", "--grace", "0.2", env=marker
    ) as program:
        await program.expect(
            r"child-1 respawned \(pid \d+\) after [\d.]+s: pid \d+ exited "
            r"after its worker raised ValueError: boom in run"
        )
        await seen(program, "forever started")
        program.send(signal.SIGTERM)
        await program.wait(15)
    assert program.output.count("Traceback") == 1, program.output
    assert program.output.count("[child 1] ValueError: boom in run\n") == 1, program.output


async def test_a_childs_failing_start_logs_its_traceback_once(app_dir: Path) -> None:
    status, output = await exit_status_and_output(app_dir, "FailsStartup", "--processes", "1")
    assert status == 1, output
    assert output.count("Traceback (most recent call last)") == 1, output


async def test_a_child_killed_by_sigkill_is_one_line_and_no_traceback(app_dir: Path) -> None:
    async with await fluid_run(app_dir, "Forever", "--processes", "1", "--grace", "0.2") as program:
        pid = int((await program.expect(r"forever started \(pid (\d+)\)"))[1])
        # killed once it runs: a kill during its start fails the master's start
        await program.expect("worker 'prefork' is running")
        os.kill(pid, signal.SIGKILL)
        await program.expect(rf"child-1 crashed: pid {pid} was killed by SIGKILL")
        await program.expect(
            rf"child-1 respawned \(pid \d+\) after [\d.]+s: pid {pid} was "
            "killed by SIGKILL"
        )
        program.send(signal.SIGTERM)
        await program.wait(15)
    assert "Traceback" not in program.output, program.output


@pytest.mark.parametrize("target", ["system_exit_once", "interrupt_once"])
async def test_a_childs_system_exit_is_a_crash_of_the_child_not_the_masters_exit(
    app_dir: Path, marker: dict[str, str], target: str
) -> None:
    async with await fluid_run(
        app_dir, target, "--processes", "1", "--grace", "0.2", env=marker
    ) as program:
        await program.expect(r"child-1 crashed")
        await program.expect(r"child-1 respawned", timeout=5)
        await seen(program, "forever started")
        program.send(signal.SIGTERM)
        assert await program.wait(15) in (0, 143), program.output


# ------------------------------------------------------------ prefork and exits


async def test_every_child_ending_cleanly_ends_the_master_with_0(app_dir: Path) -> None:
    status, output = await exit_status_and_output(app_dir, "Quick", "--processes", "2")
    assert status == 0, output
    assert output.count("not respawned, a clean end is not a crash") == 2, output
    assert "respawned (pid" not in output, output
    assert "crashed" not in output, output
    assert "every child ended by itself: stopping" in output


async def test_children_ending_cleanly_while_the_master_stops_are_not_respawned(
    app_dir: Path,
) -> None:
    async with await fluid_run(app_dir, "ticker", "--processes", "2", "--grace", "5") as program:
        await program.expect("is running")
        children = descendants(program.pid)
        program.send(signal.SIGTERM)
        assert await program.wait(15) == 0, program.output
    await wait_gone(children)
    for line in ("ended by itself", "respawned", "crashed", "did not stop within", "Traceback"):
        assert line not in program.output, program.output


async def test_the_stop_figures_are_those_of_the_grace_given_and_sigterm_twice_is_143(
    app_dir: Path,
) -> None:
    async with await fluid_run(app_dir, "Forever", "--processes", "2", "--grace", "5") as program:
        await program.expect("is running")
        program.send(signal.SIGTERM)
        await program.expect(r"stopping worker 'prefork' gracefully within 6\.5s")
        await program.expect(
            r"stopping 2 children: 5s each to stop gracefully, then SIGTERM, "
            r"then SIGKILL 0\.5s later \(6\.5s in all\)"
        )
        program.send(signal.SIGTERM)
        assert await program.wait(15) == 143, program.output
    assert program.output.count("forever on_shutdown") == 2, program.output


async def test_ctrl_c_twice_to_the_process_group_exits_130_with_no_orphan(app_dir: Path) -> None:
    # A terminal's Ctrl-C reaches the whole process group: the children too.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        "-m",
        "fluid",
        "run",
        "attack_targets:Forever",
        "--app-dir",
        str(app_dir),
        "--processes",
        "2",
        "--grace",
        "5",
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    async with Program(process) as program:
        await program.expect("is running")
        children = descendants(program.pid)
        os.killpg(program.pid, signal.SIGINT)
        await program.expect("received SIGINT: stopping worker 'prefork' gracefully")
        os.killpg(program.pid, signal.SIGINT)
        assert await program.wait(15) == 130, program.output
    await wait_gone(children)
    assert program.output.count("forever on_shutdown") == 2, program.output
    assert "crashed" not in program.output, program.output


async def test_children_forced_after_their_grace_exit_as_without_processes(
    app_dir: Path,
) -> None:

    async def stop(*processes: str) -> int:
        async with await fluid_run(app_dir, "Forever", "--grace", "0.2", *processes) as program:
            await program.expect("is running")
            program.send(signal.SIGTERM)
            return await program.wait(15)

    statuses = await asyncio.gather(stop(), stop("--processes", "1"))
    assert list(statuses) == [143, 143], statuses


async def test_a_child_hung_in_startup_is_stopped_on_the_announced_plan(app_dir: Path) -> None:
    async with await fluid_run(
        app_dir, "HungStart", "--processes", "1", "--grace", "0.2"
    ) as program:
        await program.expect("hung start")
        program.send(signal.SIGTERM)
        await program.expect(r"stopping 1 child: 0\.2s each to stop gracefully")
        await program.wait(15)
    assert "worker 'prefork' did not stop within" not in program.output, program.output


PREFORK_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    import fluid

    class Quick(fluid.Worker):
        async def run(self):
            pass

    class Crashes(fluid.Worker):
        async def run(self):
            os._exit(3)

    def mixed():
        return Quick() if fluid.prefork_child().id == 1 else Crashes()

    if __name__ == "__main__":
        logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
        master = fluid.Prefork(mixed, processes=2, backoff=fluid.Backoff(0.01, maximum=0.01))
        sys.exit(fluid.run(master))
    """
)


async def test_one_child_crash_looping_gives_up_after_its_own_five_restarts(
    tmp_path: Path,
) -> None:
    (tmp_path / "mixed.py").write_text(PREFORK_SCRIPT)
    async with await Program.start(
        "mixed.py", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}
    ) as program:
        assert await program.wait(15) == 1, program.output
    assert "child-1 ended by itself" in program.output  # the mixed case: sensible so far
    assert "TooManyRestarts" in program.output
    assert program.output.count("child-2 crashed") <= 6, program.output


def test_an_unexpanded_tilde_app_dir_is_named_as_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--app-dir=~/x` reaches the program unexpanded (the shell expands `~` only
    # at the start of a word): the sentence quotes it as typed, so it can be seen.
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert cli.main(["run", "m:w", "--app-dir=~/no_such_project_dir"]) == 2
    assert capsys.readouterr().err == (
        "fluid run: error: --app-dir '~/no_such_project_dir' does not exist\n"
    )
