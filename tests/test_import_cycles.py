"""fedkd's modules import each other without a cycle (issue 29, item 6).

The walk reads each module's imports from its source with :mod:`ast`, so it sees what the
interpreter would run on import without running it:

- ``import a.b.c`` is an edge to ``a.b.c``;
- ``from P import x`` (relative ones resolved first) is an edge to the package ``P`` (its
  ``__init__`` runs to provide ``x``) and to ``P.x`` when that is a module;
- importing ``a.b.c`` also runs the ``__init__`` of each package above it, so those are edges too,
  except the importer's own enclosing packages (already running when it runs: Python's implicit
  parent import, which every submodule has and which is no design cycle).

Two walks. What runs when a module is imported (``test_fedkd_has_no_import_cycle``): imports
inside functions and under ``if TYPE_CHECKING:`` do not count. And every import statement,
deferred ones included (``..._even_through_deferred_imports``): a function-level import is the
established way to keep PyTorch and Ray off a light path, not a way to hide two modules that
need each other (``fl/config.py``'s preflight loaded ``fl/data.py``, which reads the config;
``fl/resume.py`` took the ``Federation`` of the ``fl/rounds.py`` that calls it). In
``fedkd.secagg`` a module that imported a sibling as ``from fedkd.secagg import sibling`` closed
an eight-module cycle with the ``__init__`` that imports it (b3fdd78).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import fedkd.secagg

ROOT = Path(fedkd.__file__).parent
MAX_FUNCTION_LINES = 80


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str = "fedkd") -> dict[str, Path]:
    found = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    return {m: p for m, p in found.items() if m == package or m.startswith(package + ".")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, everywhere: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``tree`` that run on import (every one when ``everywhere``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not everywhere and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif not everywhere and isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(ast.Module(body=node.orelse, type_ignores=[]), everywhere)
        else:
            yield from _imports(node, everywhere)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _edges(module: str, path: Path, modules: set[str], everywhere: bool) -> set[str]:
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text()), everywhere):
        if isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names}
        else:
            source = node.module or ""
            if node.level:  # relative: ``from ..x import y`` in package ``a.b.c`` is ``a.b.x``
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            targets = {source} | {f"{source}.{alias.name}" for alias in node.names}
        for target in targets:
            found.add(target)
            found |= set(_ancestors(target)) - set(_ancestors(module))
    return (found & modules) - {module}


def _graph(package: str = "fedkd", everywhere: bool = False) -> dict[str, set[str]]:
    paths = _modules(package)
    return {m: _edges(m, p, set(paths), everywhere) for m, p in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if colour.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in colour:
                found = visit(nxt)
                if found:
                    return found
        colour[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


def test_fedkd_has_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_fedkd_has_no_import_cycle_even_through_deferred_imports() -> None:
    cycle = _cycle(_graph(everywhere=True))
    assert cycle is None, "import cycle (counting every import): " + " -> ".join(cycle or [])


def test_the_walk_resolves_imports() -> None:
    graph = _graph()
    assert len(graph) > 100, "the walk found too few modules"
    # Relative and absolute, ``from package import submodule`` and the packages it runs.
    assert {"fedkd.secagg.errors", "fedkd.secagg.config"} <= graph["fedkd.secagg.server"]
    assert "fedkd._lazy" in graph["fedkd.models"]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    path = tmp_path / "walked.py"
    path.write_text(
        "from . import keys\nfrom ..data import splits\nfrom ..secagg.wire import Stage\n"
    )
    modules = set(_graph())
    edges = _edges("fedkd.fl.walked", path, modules, everywhere=False)
    assert edges == {
        "fedkd.fl",  # ``from P import x`` runs P's ``__init__`` for ``x``
        "fedkd.fl.keys",
        "fedkd.data",
        "fedkd.data.splits",
        "fedkd.secagg",
        "fedkd.secagg.wire",
    }


def test_the_walk_sees_a_cycle_when_there_is_one() -> None:
    graph = _graph()
    graph["fedkd.secagg.errors"] = {"fedkd.secagg"}  # errors importing the package would close one
    assert _cycle(graph) is not None


def test_function_imports_and_type_checking_do_not_count_by_default() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import fedkd.fl.config\n"
        "else:\n    import fedkd.fl.data\n"
        "def f():\n    import fedkd.fl.rounds\n"
        "class C:\n    import fedkd.fl.journal\n"
    )
    tree = ast.parse(source)
    lazy = {a.name for node in _imports(tree, everywhere=False) for a in node.names}
    strict = {a.name for node in _imports(tree, everywhere=True) for a in node.names}
    assert lazy == {"TYPE_CHECKING", "fedkd.fl.data", "fedkd.fl.journal"}
    assert strict == lazy | {"fedkd.fl.config", "fedkd.fl.rounds"}


def test_the_secagg_public_api_holds_no_attack_harness() -> None:
    exported = set(fedkd.secagg.__all__)
    assert not exported & {"MaliciousServer", "run_secagg", "DriverResult", "simulate"}
    secagg = ROOT / "secagg"
    assert not any((secagg / f"{name}.py").exists() for name in ("attacks", "leakage"))


def _long_functions() -> list[str]:
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{module}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_fedkd_is_over_80_lines() -> None:
    """Counted from ``def`` to the last line, docstring included (decorators excluded)."""
    assert _long_functions() == []
