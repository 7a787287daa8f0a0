"""The public API: every name exported once, documented, reachable from the earlier paths.

`fluid/__init__.py` is the front door. These tests keep it honest: what
``__all__`` lists exists, is listed once, has a docstring with an example and
a place in docs/; the import paths of aio-fluid still give the same objects;
the method names users know from aio-fluid are still there; and ``import
fluid`` stays light.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fluid

DOCS = Path(__file__).resolve().parent.parent / "docs"

# Docstrings still missing an ``Example:`` section. Each entry is a known gap,
# marked as a strict xfail: once the docstring gains its example the test
# passes, xfail_strict turns that into a failure, and the entry must go.
MISSING_EXAMPLE: dict[str, str] = {}


def _docs_text() -> str:
    pages = sorted(DOCS.rglob("*.md"))
    assert pages, f"no documentation pages under {DOCS}"
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def _needs_docstring(obj: object) -> bool:
    """Classes and functions carry a docstring; constants and type aliases cannot."""
    return inspect.isclass(obj) or inspect.isfunction(obj)


def _own_docstring(obj: object) -> str:
    """The docstring of ``obj`` itself, never one inherited from a base class."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) else ""


# ------------------------------------------------------------------ __all__


def test_every_name_in_all_exists() -> None:
    missing = [name for name in fluid.__all__ if not hasattr(fluid, name)]
    assert not missing, f"fluid.__all__ lists names fluid does not define: {missing}"


def test_every_name_in_all_is_listed_once() -> None:
    duplicates = sorted({name for name in fluid.__all__ if fluid.__all__.count(name) > 1})
    assert not duplicates, f"fluid.__all__ lists these more than once: {duplicates}"


def test_every_public_object_of_fluid_is_in_all() -> None:
    defined = {
        name
        for name, value in vars(fluid).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name != "annotations"  # from __future__ import annotations
    }
    unlisted = sorted(defined - set(fluid.__all__))
    assert not unlisted, f"public names of fluid missing from fluid.__all__: {unlisted}"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(reason=MISSING_EXAMPLE[name], strict=True)
            if name in MISSING_EXAMPLE
            else (),
        )
        for name in fluid.__all__
        if _needs_docstring(getattr(fluid, name, None))
    ],
)
def test_classes_and_functions_have_a_docstring_with_an_example(name: str) -> None:
    doc = _own_docstring(getattr(fluid, name))
    assert doc.strip(), f"fluid.{name} has no docstring"
    assert "Example" in doc, f"the docstring of fluid.{name} has no Example section"


def test_constants_and_type_aliases_are_documented() -> None:
    text = _docs_text()
    undocumented = [
        name
        for name in fluid.__all__
        if not _needs_docstring(getattr(fluid, name, None))
        and not re.search(rf"\b{re.escape(name)}\b", text)
    ]
    assert not undocumented, f"not mentioned anywhere in docs/: {undocumented}"


# --------------------------------------------------------------------- docs/


def test_every_public_name_appears_in_the_docs() -> None:
    text = _docs_text()
    absent = [
        name
        for name in fluid.__all__
        if f"::: fluid.{name}" not in text and not re.search(rf"\b{re.escape(name)}\b", text)
    ]
    assert not absent, f"public names that no page of docs/ mentions: {absent}"


def test_every_public_name_has_one_api_reference_entry() -> None:
    text = _docs_text()
    blocks = re.findall(r"^::: fluid\.(\w+)\s*$", text, flags=re.MULTILINE)
    missing = sorted(set(fluid.__all__) - set(blocks))
    repeated = sorted({name for name in blocks if blocks.count(name) > 1})
    assert not missing, f"no `::: fluid.Name` block in docs/ for: {missing}"
    assert not repeated, f"rendered more than once in docs/ (duplicate anchors): {repeated}"


# ------------------------------------------------------ earlier import paths

EARLIER_PATHS: dict[str, tuple[str, ...]] = {
    "fluid.utils.worker": (
        "WorkerState",
        "Worker",
        "WorkerFunction",
        "QueueConsumer",
        "QueueConsumerWorker",
        "AsyncConsumer",
        "Workers",
        "MessageProducer",
        "STOPPING_GRACE_PERIOD",
    ),
    "fluid.utils.dispatcher": ("Event", "Dispatcher", "AsyncDispatcher"),
    "fluid.utils.errors": ("WorkerStartError",),
}


def test_earlier_import_statements_work() -> None:
    from fluid.utils.dispatcher import AsyncDispatcher, Dispatcher, Event
    from fluid.utils.errors import WorkerStartError
    from fluid.utils.worker import (
        STOPPING_GRACE_PERIOD,
        AsyncConsumer,
        MessageProducer,
        QueueConsumer,
        QueueConsumerWorker,
        Worker,
        WorkerFunction,
        Workers,
        WorkerState,
    )

    assert WorkerState is fluid.WorkerState
    assert Worker is fluid.Worker
    assert WorkerFunction is fluid.WorkerFunction
    assert QueueConsumer is fluid.QueueConsumer
    assert QueueConsumerWorker is fluid.QueueConsumerWorker
    assert AsyncConsumer is fluid.AsyncConsumer
    assert Workers is fluid.Workers
    assert MessageProducer is fluid.MessageProducer
    assert STOPPING_GRACE_PERIOD is fluid.STOPPING_GRACE_PERIOD
    assert Event is fluid.Event
    assert Dispatcher is fluid.Dispatcher
    assert AsyncDispatcher is fluid.AsyncDispatcher
    assert WorkerStartError is fluid.WorkerStartError


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in EARLIER_PATHS.items() for name in names],
)
def test_earlier_import_path_gives_the_same_object(module: str, name: str) -> None:
    old = getattr(importlib.import_module(module), name)
    assert old is getattr(fluid, name)


AIO_FLUID_ONLY = {
    "fluid.utils.worker": {"HasWorkers", "MessageType", "T", "logger"},
    "fluid.utils.dispatcher": {"MessageType", "MessageHandlerType"},
    "fluid.utils.errors": {"FluidValueError", "ValidationError", "FlamegraphError"},
}
"""aio-fluid's names that live at its paths only (tests/test_aio_fluid_compat.py holds them)."""


@pytest.mark.parametrize("module", sorted(EARLIER_PATHS))
def test_earlier_modules_export_only_public_names_of_fluid(module: str) -> None:
    exported: list[str] = importlib.import_module(module).__all__
    assert set(exported) <= set(fluid.__all__) | AIO_FLUID_ONLY[module]
    assert set(EARLIER_PATHS[module]) <= set(exported)


# ------------------------------------------------------- seed method names

ASYNC, SYNC, PROPERTY = "async method", "method", "property"

SEED_MEMBERS: list[tuple[type, str, str]] = [
    (fluid.Worker, "startup", ASYNC),
    (fluid.Worker, "shutdown", ASYNC),
    (fluid.Worker, "gracefully_stop", SYNC),
    (fluid.Worker, "wait_for_shutdown", ASYNC),
    (fluid.Worker, "is_running", SYNC),
    (fluid.Worker, "is_stopping", SYNC),
    (fluid.Worker, "is_stopped", SYNC),
    (fluid.Worker, "has_started", SYNC),
    (fluid.Worker, "status", ASYNC),
    (fluid.Worker, "on_startup", ASYNC),
    (fluid.Worker, "on_shutdown", ASYNC),
    (fluid.Worker, "after_shutdown", SYNC),
    (fluid.Worker, "workers", SYNC),
    (fluid.Worker, "num_workers", PROPERTY),
    (fluid.Worker, "worker_name", PROPERTY),
    (fluid.Worker, "worker_state", PROPERTY),
    (fluid.Worker, "stopping_grace_period", PROPERTY),
    (fluid.Worker, "run", ASYNC),
    (fluid.QueueConsumer, "send", SYNC),
    (fluid.QueueConsumer, "get_message", ASYNC),
    (fluid.QueueConsumer, "queue_size", SYNC),
    (fluid.Workers, "add_workers", SYNC),
    (fluid.Dispatcher, "register_handler", SYNC),
    (fluid.Dispatcher, "dispatch", SYNC),
    (fluid.AsyncDispatcher, "register_handler", SYNC),
    (fluid.AsyncDispatcher, "dispatch", ASYNC),
    (fluid.WorkerFunction, "heartbeat", PROPERTY),
    (fluid.Workers, "heartbeat", PROPERTY),
]


@pytest.mark.parametrize(
    ("cls", "name", "kind"),
    SEED_MEMBERS,
    ids=[f"{cls.__name__}.{name}" for cls, name, _ in SEED_MEMBERS],
)
def test_seed_member_exists(cls: type, name: str, kind: str) -> None:
    member = inspect.getattr_static(cls, name, None)
    assert member is not None, f"{cls.__name__} has no {name}"
    if kind == PROPERTY:
        assert isinstance(member, property), f"{cls.__name__}.{name} is not a property"
    elif kind == ASYNC:
        assert inspect.iscoroutinefunction(member), f"{cls.__name__}.{name} is not async"
    else:
        assert callable(member), f"{cls.__name__}.{name} is not a method"
        assert not inspect.iscoroutinefunction(member), f"{cls.__name__}.{name} is async"


# ------------------------------------------------------------ import weight

# Modules that `import fluid` must not pull in: heavy or optional dependencies
# (loaded on demand by whatever needs them) and the process machinery.
FORBIDDEN_AT_IMPORT = (
    "pydantic",
    "numpy",
    "uvloop",
    "anyio",
    "multiprocessing",
    "concurrent.futures.process",
    "starlette",
    "fastapi",
    "aiohttp",
)


def test_import_fluid_is_light() -> None:
    code = "import sys, fluid; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    loaded = set(result.stdout.split())
    assert "fluid" in loaded
    heavy = sorted(
        module
        for module in loaded
        if any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN_AT_IMPORT)
    )
    assert not heavy, f"`import fluid` imported {heavy}"


# ------------------------------------------------- docs/api/index.md, the table

API_TABLE = DOCS / "api" / "index.md"
_ROW = re.compile(r"^\| `(?P<name>\w+)` \|(?P<rest>.*)\|$", flags=re.MULTILINE)
_LINK = re.compile(r"\[[^\]]*\]\((?P<page>[^)#]+)(?:#[\w-]+)?\)")


def _table_sections() -> tuple[str, str, str]:
    """The table of exported names, the table of earlier names, the moved names."""
    text = API_TABLE.read_text()
    exported, rest = text.split("## Earlier names", 1)
    earlier, moved = rest.split("Moved out of the front door", 1)
    return exported, earlier, moved


def test_the_api_table_lists_every_exported_name_once_and_nothing_else() -> None:
    exported, _, _ = _table_sections()
    rows = [match["name"] for match in _ROW.finditer(exported)]
    repeated = sorted({name for name in rows if rows.count(name) > 1})
    assert not repeated, f"listed twice in docs/api/index.md: {repeated}"
    assert sorted(set(fluid.__all__) - set(rows)) == [], "exported but not in the table"
    assert sorted(set(rows) - set(fluid.__all__)) == [], "in the table but not exported"


def test_each_row_of_the_api_table_links_the_page_that_renders_the_name() -> None:
    exported, _, _ = _table_sections()
    for match in _ROW.finditer(exported):
        link = _LINK.search(match["rest"])
        assert link is not None, f"no reference link in the row of {match['name']}"
        page = (API_TABLE.parent / link["page"]).resolve()
        assert f"::: fluid.{match['name']}\n" in page.read_text(), (match["name"], page.name)


def test_the_api_table_lists_the_earlier_and_moved_names_as_the_package_serves_them() -> None:
    _, earlier, moved = _table_sections()
    pairs = dict(re.findall(r"^\| `(\w+)` \| `([\w.]+)` \|$", earlier, flags=re.MULTILINE))
    assert pairs == fluid._EARLIER_NAMES
    homes = dict(re.findall(r"^\| `(\w+)` \| `([\w.]+)` \|$", moved, flags=re.MULTILINE))
    assert homes == fluid._MOVED
    for old, new in pairs.items():
        assert getattr(fluid, old) is getattr(fluid, new)
        assert old not in fluid.__all__
        assert old not in dir(fluid)


def test_a_moved_name_still_works_with_a_warning_naming_its_home() -> None:
    from fluid import utils

    with pytest.warns(DeprecationWarning, match=r"moved to fluid\.utils\.set_uvloop_if_available"):
        moved = fluid.set_uvloop_if_available
    assert moved is utils.set_uvloop_if_available
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        fluid.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_every_test_the_guarantees_page_cites_exists() -> None:
    """A promise names the tests that hold it: a renamed or removed test must not hide."""
    root = Path(__file__).parent.parent
    page = (root / "docs" / "guarantees.md").read_text()
    defined = {
        match
        for path in (root / "tests").rglob("test_*.py")
        for match in re.findall(r"def (test_\w+)", path.read_text())
    }
    files = {path.stem for path in (root / "tests").rglob("test_*.py")}
    cited = set(re.findall(r"`(test_\w+)`", page))  # a function, or a file of tests
    assert cited, "the page cites no test"
    assert not cited - defined - files, f"cited but not found: {sorted(cited - defined - files)}"
