"""The distribution: its runtime dependencies are the ones fluid imports, its extras name the rest.

A dependency nothing imports costs every user an install for nothing (anyio
was one); an import of a package that is not a dependency breaks a fresh
install. The check reads pyproject.toml and every ``import`` statement of the
package, deferred ones included.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

IMPORT_NAME = {"redis": "redis", "starlette": "starlette", "aiohttp": "aiohttp"}
"""Distribution name → the top-level module it installs, where the two differ or matter."""

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _distribution(requirement: str) -> str:
    match = _REQUIREMENT.match(requirement)
    assert match, requirement
    return match[1].lower().replace("_", "-")


def _top_level_imports(root: Path) -> dict[str, set[Path]]:
    """Each top-level module imported anywhere under ``root``, with the files importing it."""
    found: dict[str, set[Path]] = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(path.relative_to(ROOT))
    return found


IMPORTS = _top_level_imports(ROOT / "fluid")


def test_the_distribution_is_not_named_like_the_unrelated_fluid_package() -> None:
    # "fluid" on the package index is an unrelated 2006 package with a
    # top-level module of the same name: pip install -U fluid would replace us
    assert PROJECT["name"] == "fluid-workers"
    assert "fluid = " in (ROOT / "pyproject.toml").read_text()  # the command keeps its name


@pytest.mark.parametrize("requirement", PROJECT["dependencies"])
def test_every_runtime_dependency_is_imported_by_fluid(requirement: str) -> None:
    name = _distribution(requirement).replace("-", "_")
    assert name in IMPORTS, f"{requirement!r} is a runtime dependency that nothing in fluid imports"


def test_every_third_party_import_is_a_dependency_or_an_extra() -> None:
    declared = {_distribution(r).replace("-", "_") for r in PROJECT["dependencies"]}
    extras = PROJECT["optional-dependencies"]
    for extra in ("redis", "starlette", "aiohttp"):
        declared |= {_distribution(r).replace("-", "_") for r in extras[extra]}
    third_party = {
        name
        for name in IMPORTS
        # _typeshed: the type checker's own, imported under TYPE_CHECKING only
        if name not in sys.stdlib_module_names and name not in {"fluid", "__future__", "_typeshed"}
    }
    assert sorted(third_party - declared) == []


@pytest.mark.parametrize("extra", ["redis", "starlette", "aiohttp"])
def test_each_extra_is_what_its_integration_imports(extra: str) -> None:
    # the module needing an extra imports it, and says which extra in its error
    (requirement,) = PROJECT["optional-dependencies"][extra]
    module = IMPORT_NAME[_distribution(requirement)]
    importers = IMPORTS.get(module, set())
    assert importers, f"the extra {extra!r} installs {module}, which nothing in fluid imports"
    sentence = f"pip install 'fluid-workers[{extra}]'"
    assert any(sentence in (ROOT / path).read_text() for path in importers), (
        f"no module importing {module} names {sentence!r}"
    )


def test_anyio_is_for_the_tests_only() -> None:
    # FastAPI and Starlette bring it; tests/test_anyio.py runs fluid under it
    assert "anyio" not in IMPORTS
    assert any(_distribution(r) == "anyio" for r in PROJECT["optional-dependencies"]["dev"])
