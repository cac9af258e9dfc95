"""fedkd.secagg's modules import each other without a cycle (issue 29, item 6).

The walk reads each module's imports from its source: ``from P import x`` is an edge to the
package ``P`` (its ``__init__`` runs to provide ``x``) and to ``P.x`` when that is a module;
``import P.Q`` is an edge to ``P.Q``. So a module of the package that imports a sibling as
``from fedkd.secagg import sibling`` closes a cycle with the ``__init__`` that imports it (the
eight-module cycle of b3fdd78); siblings import each other by their full module path.
Imports inside functions and under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fedkd.secagg

PACKAGE = "fedkd.secagg"
ROOT = Path(fedkd.secagg.__file__).parent


def _module(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def _edges(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGE)}
    return found & modules


def _graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.glob("*.py"))
    modules = {_module(p) for p in paths}
    return {_module(p): _edges(p, modules) - {_module(p)} for p in paths}


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


def test_secagg_has_no_import_cycle() -> None:
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_walk_sees_a_cycle_when_there_is_one() -> None:
    graph = _graph()
    graph["fedkd.secagg.errors"] = {PACKAGE}  # errors importing the package would close one
    assert _cycle(graph) is not None


def test_the_public_api_holds_no_attack_harness() -> None:
    exported = set(fedkd.secagg.__all__)
    assert not exported & {"MaliciousServer", "run_secagg", "DriverResult", "simulate"}
    assert not any((ROOT / f"{name}.py").exists() for name in ("attacks", "leakage"))
