"""Targets: one module loads and checks them for the CLI, ``fluid.run`` and ``Prefork``.

``fluid/_target.py`` is the one place; these tests hold that the three callers
use it (same errors, same words), that its errors sit in the ``FluidError``
hierarchy without losing their builtin base, and that the import cycle
between the command line and prefork is gone.
"""

from __future__ import annotations

import ast
import gc
import inspect
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import fluid
from fluid import _errors, _target, cli

from ._run_targets import NeedsASocket, Quick, needs_arguments

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fluid"


def module_level_factory() -> fluid.Worker:
    return Quick()


# ------------------------------------------------------------------ errors


def test_target_error_is_a_fluid_error_and_a_value_error() -> None:
    assert issubclass(_errors.TargetError, _errors.FluidError)
    assert issubclass(_errors.TargetError, ValueError)
    with pytest.raises(fluid.FluidError):
        _target.load_target("no colon")
    with pytest.raises(ValueError, match="expected a target like"):
        _target.load_target("no colon")


def test_not_a_worker_is_a_fluid_error_and_a_type_error() -> None:
    assert issubclass(_errors.NotAWorker, _errors.FluidError)
    assert issubclass(_errors.NotAWorker, TypeError)
    with pytest.raises(fluid.FluidError):
        _target.build_worker(lambda: 42)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match=r"returned 42, not a fluid\.Worker"):
        _target.build_worker(lambda: 42)  # type: ignore[arg-type, return-value]


def test_the_earlier_import_paths_give_the_same_objects() -> None:
    assert cli.TargetError is _errors.TargetError
    assert cli.load_target is _target.load_target
    assert fluid.NotAWorker is _errors.NotAWorker
    assert fluid.TargetError is _errors.TargetError
    assert {"TargetError", "load_target"} <= set(cli.__all__)


def test_the_errors_are_drawn_in_the_hierarchy() -> None:
    doc = _errors.__doc__ or ""
    for name in ("TargetError", "NotAWorker"):
        assert f"── {name} " in doc
        assert name in _errors.__all__
        assert "Example" in (getattr(_errors, name).__doc__ or "")


# ----------------------------------------------------------- load_target


def test_load_target_returns_the_attribute_dotted_or_not() -> None:
    from examples import pipeline

    assert _target.load_target("examples.pipeline:build") is pipeline.build
    assert _target.load_target("tests._run_targets:Quick") is Quick


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.pipeline", "expected a target like 'package.module:attribute'"),
        (":build", "expected a target like"),
        ("examples.pipeline:", "expected a target like"),
        ("no_such_package.workers:tree", "module 'no_such_package.workers' not found"),
        ("examples.pipeline:Pipeline.nope", r"has no attribute 'Pipeline\.nope'"),
        ("tests._run_targets:not_a_worker", "is 42, not a fluid.Worker nor a function"),
    ],
)
def test_load_target_says_why_it_cannot(spec: str, message: str) -> None:
    with pytest.raises(_errors.TargetError, match=message):
        _target.load_target(spec)


def test_a_module_that_fails_to_import_is_a_target_error_with_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fails_on_import.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.delitem(sys.modules, "fails_on_import", raising=False)
    with pytest.raises(_errors.TargetError, match="importing module 'fails_on_import' failed") as e:
        _target.load_target("fails_on_import:tree")
    assert isinstance(e.value.__cause__, RuntimeError)
    assert "RuntimeError: no config" in str(e.value)  # its traceback, in the message


# ---------------------------------------------------------- build_worker


def test_build_worker_returns_a_worker_or_what_the_factory_built() -> None:
    worker = Quick()
    assert _target.build_worker(worker) is worker
    assert isinstance(_target.build_worker(module_level_factory), Quick)


def test_an_async_factory_is_refused_and_its_coroutine_closed() -> None:
    made: list[Coroutine[Any, Any, fluid.Worker]] = []

    async def factory() -> fluid.Worker:
        return Quick()

    def recording() -> fluid.Worker:
        coro = factory()
        made.append(coro)
        return coro  # type: ignore[return-value]

    with pytest.raises(_errors.NotAWorker, match="returned a coroutine"):
        _target.build_worker(recording)
    (coro,) = made
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"
    gc.collect()


# ------------------------------------------------------------- the checks


@pytest.mark.parametrize("target", [Quick(), module_level_factory, Quick])
def test_check_target_takes_a_worker_or_a_callable(target: object) -> None:
    _target.check_target(target)


def test_check_target_refuses_anything_else() -> None:
    with pytest.raises(TypeError, match=r"expected a fluid\.Worker or a function returning one"):
        _target.check_target(42)


def test_check_sendable_target_takes_a_spec_or_a_picklable_factory() -> None:
    _target.check_sendable_target("examples.pipeline:build")  # shape only: not imported
    _target.check_sendable_target("not_imported.at_all:build")
    _target.check_sendable_target(module_level_factory)
    assert pickle.loads(pickle.dumps(module_level_factory)) is module_level_factory


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (Quick(), TypeError, "a Worker cannot be sent to child processes"),
        (lambda: Quick(), TypeError, "cannot be sent to child processes"),
        (42, TypeError, "a function returning a Worker"),
        ("no_colon", _errors.TargetError, "expected a target like"),
    ],
)
def test_check_sendable_target_refuses_what_cannot_reach_a_child(
    target: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        _target.check_sendable_target(target)


def test_the_cli_run_and_prefork_refuse_a_malformed_spec_with_the_same_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = "expected a target like 'package.module:attribute', got 'examples.pipeline'"
    assert cli.main(["run", "examples.pipeline"]) == 2
    assert words in capsys.readouterr().err
    with pytest.raises(_errors.TargetError) as from_prefork:
        fluid.Prefork("examples.pipeline", processes=1)
    assert words in str(from_prefork.value)
    with pytest.raises(ValueError, match=words):  # still a ValueError, as before
        fluid.Prefork("examples.pipeline", processes=1)


# ------------------------------------------------- callables that need arguments


def with_defaults(host: str = "localhost", *args: object, **kwargs: object) -> fluid.Worker:
    return Quick()


@pytest.mark.parametrize("target", [with_defaults, Quick, fluid.Workers, module_level_factory])
def test_a_callable_without_required_arguments_is_a_target(target: object) -> None:
    _target.check_target(target)
    _target.check_sendable_target(target)


@pytest.mark.parametrize(
    ("target", "spec", "message"),
    [
        (
            needs_arguments,
            "tests._run_targets:needs_arguments",
            r"a function that needs arguments \(host, port\)",
        ),
        (NeedsASocket, "tests._run_targets:NeedsASocket", r"a class that needs arguments \(sock\)"),
    ],
)
def test_a_callable_that_needs_arguments_is_refused_by_every_caller_naming_them(
    target: object, spec: str, message: str
) -> None:
    # Before, it was accepted and failed when called: a TypeError from the
    # runner (exit 1 with a traceback), from a prefork child, from a web app.
    with pytest.raises(TypeError, match=message):
        _target.check_target(target)
    with pytest.raises(TypeError, match=message):
        _target.check_sendable_target(target)
    with pytest.raises(TypeError, match=message):
        fluid.run(target)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=message):
        fluid.Prefork(target, processes=1)  # type: ignore[arg-type]
    with pytest.raises(_errors.TargetError, match=f"'{spec}' is {message}"):
        _target.load_target(spec)


@pytest.mark.parametrize("integration", ["starlette", "aiohttp"])
def test_the_web_integrations_refuse_a_factory_that_needs_arguments(integration: str) -> None:
    pytest.importorskip(integration)
    if integration == "starlette":
        from fluid.integrations.starlette import lifespan

        with pytest.raises(TypeError, match=r"needs arguments \(host, port\)"):
            lifespan(needs_arguments)  # type: ignore[arg-type]
    else:
        from fluid.integrations.aiohttp import cleanup_ctx

        with pytest.raises(TypeError, match=r"needs arguments \(host, port\)"):
            cleanup_ctx(needs_arguments)  # type: ignore[arg-type]


# ------------------------------------------------------------ no import cycle


def _imports_of(path: Path) -> set[str]:
    """The fluid modules ``path`` imports, anywhere in it (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and path.parent == PACKAGE:  # from .x import y
                found.add(node.module or "")
                if node.module is None:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("fluid."):
                found.add(node.module.removeprefix("fluid."))
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("fluid.")
                for alias in node.names
                if alias.name.startswith("fluid.")
            )
    return found


def test_only_the_entry_point_imports_the_command_line_module() -> None:
    importers = sorted(path.name for path in PACKAGE.glob("*.py") if "cli" in _imports_of(path))
    assert importers == ["__main__.py"]


def test_target_imports_neither_the_runner_nor_prefork_nor_the_cli() -> None:
    assert _imports_of(PACKAGE / "_target.py").isdisjoint({"cli", "_prefork", "_runner"})


LOAD_IN_A_CHILD = textwrap.dedent(
    """
    import sys
    from fluid import _prefork

    assert "fluid.cli" not in sys.modules, "importing prefork loaded the cli"
    # what a prefork child does with a spec: load it, build the worker
    entry = _prefork._ChildEntry("tests._run_targets:Quick", 1, 1, ())
    worker = entry()
    assert type(worker).__name__ == "Quick", worker
    assert "fluid.cli" not in sys.modules, "loading a spec in a child loaded the cli"
    print("ok")
    """
)


def test_a_prefork_child_loads_its_spec_without_the_command_line_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_CHILD],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
