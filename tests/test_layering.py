"""The package's structure, as ARCHITECTURE.md states it, checked against the code.

* No module imports another module's private name.
* No module writes a private field of another object (``obj._x = ...``):
  an object's fields are written by its own class's code.
* A module reads another module's private fields only where ARCHITECTURE.md
  names the exception and why (its table "Private names across modules"),
  and every exception named there is still in use.
* ARCHITECTURE.md states the true size of every module past 400 lines.
* The imports form no cycle, deferred ones (into a function) included:
  a deferred import hides a cycle, it does not remove it. Imports for type
  checking only are not counted.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "fluid"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
_ROW = re.compile(r"^\|\s*`(?P<module>[\w/.]+\.py)`\s*\|(?P<names>[^|]*)\|")


def modules() -> Iterator[Path]:
    yield from sorted(PACKAGE.rglob("*.py"))


def own_names(tree: ast.Module) -> set[str]:
    """The names a module defines: its functions, classes, self.<fields> and slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                slots = isinstance(target, ast.Name) and target.id == "__slots__"
                if slots and isinstance(node.value, ast.Tuple | ast.List):
                    names |= {
                        e.value
                        for e in node.value.elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    }
    return names


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def is_own_object(node: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: the code of the object's own class."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def foreign_private_reads() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in modules():
        tree = ast.parse(path.read_text())
        own = own_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not is_private(node.attr):
                continue
            if is_own_object(node.value) or node.attr in own:
                continue
            found.setdefault(path.relative_to(PACKAGE).as_posix(), set()).add(node.attr)
    return found


def named_exceptions() -> dict[str, set[str]]:
    text = ARCHITECTURE.read_text()
    section = text.split("## Private names across modules", 1)[1].split("\n## ", 1)[0]
    named: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            names = set(re.findall(r"`(\w+)`", match["names"]))
            named.setdefault(match["module"], set()).update(names)
    return named


def test_no_module_imports_a_private_name_of_another() -> None:
    bad = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                bad += [
                    f"{path.name}:{node.lineno} {a.name}" for a in node.names if is_private(a.name)
                ]
    assert not bad


def test_no_module_writes_a_private_field_of_another_object() -> None:
    bad = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or isinstance(node.ctx, ast.Load):
                continue
            if is_private(node.attr) and not is_own_object(node.value):
                bad.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not bad


def test_private_reads_across_modules_are_the_exceptions_architecture_names() -> None:
    found, named = foreign_private_reads(), named_exceptions()
    assert named, "ARCHITECTURE.md lost its table of exceptions"
    unnamed = {
        m: sorted(n - named.get(m, set())) for m, n in found.items() if n - named.get(m, set())
    }
    assert not unnamed, f"not named in ARCHITECTURE.md: {unnamed}"
    stale = {
        m: sorted(n - found.get(m, set())) for m, n in named.items() if n - found.get(m, set())
    }
    assert not stale, f"named in ARCHITECTURE.md but no longer read: {stale}"


def runtime_imports(path: Path) -> set[Path]:
    """The package's modules ``path`` imports, at load time or deferred into a function.

    Imports for type checking only are left out: they never run.
    """
    imported: set[Path] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                if node.module:
                    targets = [base.joinpath(*node.module.split("."))]
                else:  # from . import submodule
                    targets = [base / alias.name for alias in node.names]
                for target in targets:
                    package = target.is_dir()
                    imported.add(target / "__init__.py" if package else target.with_suffix(".py"))
            else:
                for block in ("body", "orelse", "finalbody"):
                    inner = getattr(node, block, [])
                    if isinstance(inner, list):
                        visit(inner)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return imported


def test_the_imports_form_no_cycle() -> None:
    graph = {path: runtime_imports(path) for path in modules()}
    done: set[Path] = set()

    def walk(path: Path, chain: list[Path]) -> None:
        for target in graph.get(path, set()):
            assert target not in chain, " -> ".join(p.name for p in [*chain, target])
            if target not in done:
                walk(target, [*chain, target])
        done.add(path)

    for path in graph:
        walk(path, [path])


# ------------------------------------------------------------- module sizes

_SIZE_ROW = re.compile(
    r"^\|\s*`(?P<module>\w+\.py)`\s*\|\s*(?P<lines>\d+)\s*\|\s*(?P<code>\d+)%\s*\|"
)
BIG = 400


def code_share(path: Path) -> tuple[int, float]:
    """Lines of a module, and the share of them that hold code (not docstrings)."""
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Constant):
            continue
        if isinstance(node.value.value, str) and node.end_lineno is not None:
            docstrings.update(range(node.lineno, node.end_lineno + 1))
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip and token.type != tokenize.ENDMARKER:
            code.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    lines = len(source.splitlines())
    return lines, len(code) / lines


def test_architecture_states_the_true_size_of_every_big_module() -> None:
    section = ARCHITECTURE.read_text().split("## Module sizes", 1)[1].split("\n## ", 1)[0]
    stated: dict[str, tuple[int, int]] = {}
    for line in section.splitlines():
        match = _SIZE_ROW.match(line)
        if match:
            stated[match["module"]] = (int(match["lines"]), int(match["code"]))
    measured = {path.name: code_share(path) for path in modules() if path.parent == PACKAGE}
    big = {name for name, (lines, _) in measured.items() if lines >= BIG}
    assert big <= set(stated), f"past {BIG} lines, not in ARCHITECTURE.md: {big - set(stated)}"
    for name, (lines, code) in stated.items():
        true_lines, true_share = measured[name]
        assert abs(true_lines - lines) <= 0.1 * true_lines, (name, lines, true_lines)
        assert abs(100 * true_share - code) <= 5, (name, code, round(100 * true_share))
