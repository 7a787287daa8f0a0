"""A module whose extra is not installed says which extra in one sentence.

The optional dependencies are hidden from the import system (``sys.modules``
entries set to None, as if not installed) and the module is imported afresh.
"""

from __future__ import annotations

import importlib
import sys

import pytest

CASES = {
    "fluid.redis": (("redis", "redis.asyncio"), "pip install 'fluid-workers[redis]'"),
    "fluid.integrations.starlette": (
        ("starlette", "starlette.requests", "starlette.responses", "starlette.routing"),
        "pip install 'fluid-workers[starlette]'",
    ),
    "fluid.integrations.aiohttp": (
        ("aiohttp", "aiohttp.web"),
        "pip install 'fluid-workers[aiohttp]'",
    ),
}


@pytest.mark.parametrize("module", sorted(CASES))
def test_a_module_without_its_extra_names_the_extra(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden, advice = CASES[module]
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as caught:
        importlib.import_module(module)
    message = str(caught.value)
    assert advice in message
    assert "\n" not in message
    assert not isinstance(caught.value, ModuleNotFoundError)


@pytest.mark.parametrize("module", sorted(CASES))
def test_a_module_with_its_extra_imports(module: str) -> None:
    assert importlib.import_module(module).__name__ == module
