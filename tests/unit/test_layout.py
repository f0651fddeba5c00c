"""The import graph of ``orchestrator/``: no cycles, and the pure input core stays pure.

Every ``import``/``from … import`` of every module counts, wherever it is written: at the top,
under ``if TYPE_CHECKING:``, or inside a function body. A deferred import only hides a cycle
from the interpreter, not from the reader (both modules still need each other), so it is no
excuse here.

An edge goes from a module to the module it names: ``from orchestrator.daemon import collect``
is an edge to ``orchestrator.daemon.collect`` (a submodule), ``from orchestrator.config import
Config`` one to ``orchestrator.config`` (the package). Parent packages that Python initialises
on the way are not edges: a package's ``__init__`` importing its own submodules is the normal
layout, not a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import orchestrator

PACKAGE = Path(orchestrator.__file__).resolve().parent

ALLOWED_CYCLES: tuple[frozenset[str], ...] = ()
"""Known cycles, each as the set of modules it may run through; keep this empty."""


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name``, or its longest prefix that is a module of the package (None: not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported(module: str, path: Path, modules: Mapping[str, Path]) -> Iterator[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                target = _known(f"{source}.{alias.name}", modules) or _known(source, modules)
                if target:
                    yield target


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (itself excluded)."""
    modules = module_files()
    return {
        name: {target for target in imported(name, path, modules) if target != name}
        for name, path in modules.items()
    }


def strongly_connected(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def a_cycle(component: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle through ``component``, as ``[a, b, ..., a]`` (a shortest one from its first
    module, found breadth-first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in {component}")  # a component always has one


def reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or not."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def test_the_graph_sees_every_kind_of_import() -> None:
    """Relative, TYPE_CHECKING and function-body imports all make edges."""
    graph = import_graph()
    assert "orchestrator.config._read" in graph["orchestrator.config._load"]
    assert "orchestrator.service.http" in graph["orchestrator.daemon.app"]  # TYPE_CHECKING
    assert "orchestrator.inputs._scan" in graph["orchestrator.inputs"]
    assert len(graph) > 50


def test_relative_imports_resolve(tmp_path: Path) -> None:
    """``from . import x`` and ``from ..y import z`` name the right modules."""
    path = tmp_path / "mod.py"
    path.write_text("from . import sibling\nfrom ..other import thing\nfrom .sub import *\n")
    modules = dict.fromkeys(
        ("pkg", "pkg.inner", "pkg.inner.sibling", "pkg.other", "pkg.inner.sub"), path
    )
    assert set(imported("pkg.inner.mod", path, modules)) == {
        "pkg.inner.sibling",
        "pkg.other",
        "pkg.inner.sub",
    }


def test_no_import_cycles() -> None:
    """No two modules of the package import each other, directly or through others."""
    graph = import_graph()
    unexpected = [
        " -> ".join(a_cycle(component, graph))
        for component in strongly_connected(graph)
        if not any(component <= allowed for allowed in ALLOWED_CYCLES)
    ]
    assert not unexpected, "import cycles:\n  " + "\n  ".join(unexpected)


def test_cycle_detection_finds_and_prints_a_cycle() -> None:
    """A small graph with one cycle gives that cycle, and nothing for the acyclic rest."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    (component,) = strongly_connected(graph)
    assert component == {"a", "b", "c"}
    assert a_cycle(component, graph) == ["a", "b", "c", "a"]


def test_the_input_core_imports_no_io() -> None:
    """orchestrator.inputs (the pure core) reaches neither providers, the ledger nor the daemon."""
    graph = import_graph()
    for name in [
        m for m in graph if m == "orchestrator.inputs" or m.startswith("orchestrator.inputs.")
    ]:
        bad = {
            m
            for m in reachable(graph, name)
            if m.startswith(
                ("orchestrator.providers", "orchestrator.ledger", "orchestrator.daemon")
            )
        }
        assert not bad, f"{name} imports {sorted(bad)}"
