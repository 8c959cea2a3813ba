"""The one-way layering of DESIGN §2, enforced by walking every module's imports; and no
import cycle inside a layer (a cycle between layers needs an upward import)."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "extjobs"

# Each layer may import itself and the layers listed for it (all below it).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "nodes": {"model", "errors"},
    "extstorage": {"model", "errors"},
    "hypervisors": {"model", "errors", "extstorage"},
    # LUs describe steps; they never reach a node themselves (no nodes, no SQL).
    "lus": {"model", "errors", "extstorage", "hypervisors"},
    # Durable state: the store port and its backends (no engine, no nodes).
    "store": {"model", "errors"},
    "engine": {"model", "errors", "extstorage", "hypervisors", "lus", "nodes", "store"},
    "api": {"model", "errors", "engine", "lus"},
    "daemon": {"model", "errors", "engine", "lus", "nodes", "api", "store"},
    "cli": {"model", "errors", "api", "daemon", "nodes", "cli", "testing"},
    # The test kit: a leaf that may use every layer; only the CLI (the demo) imports it.
    "testing": {
        "model",
        "errors",
        "nodes",
        "extstorage",
        "hypervisors",
        "lus",
        "store",
        "engine",
        "api",
        "daemon",
    },
    "__main__": {"cli"},
    "__init__": set(),
}
THIRD_PARTY_ONLY_IN = {
    "asyncssh": {"nodes"},
    "sqlite3": {"store"},
    "psycopg": {"store", "testing"},
    "uvicorn": {"daemon"},
    "starlette": {"api"},
    "httpx": {"api"},
    "click": {"cli"},
    # Metrics are collected in the engine and exposed by the API (and its own listener).
    "prometheus_client": {"engine", "api", "daemon"},
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


MODULES = sorted(PKG.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = ("extjobs", *path.relative_to(PKG).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(p): p for p in MODULES}


def _package_of(name: str) -> str:
    """The package a module's relative imports start from."""
    return name if NAMES[name].name == "__init__.py" else name.rpartition(".")[0]


def imported(stmt: ast.Import | ast.ImportFrom, name: str) -> list[str]:
    """The absolute names one import statement in module ``name`` brings in: relative
    imports resolved, and ``from P import M`` as ``P.M`` when M is one of our modules."""
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names]
    if stmt.level:
        base = _package_of(name)
        for _ in range(stmt.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{stmt.module}" if stmt.module else base
    else:
        source = stmt.module or ""
    return [
        f"{source}.{alias.name}" if f"{source}.{alias.name}" in NAMES else source
        for alias in stmt.names
    ]


def imports(path: Path) -> list[str]:
    """Every name ``path`` imports, type-only imports included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.extend(imported(node, name))
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    layer = layer_of(path)
    allowed = ALLOWED[layer] | {layer}
    for name in imports(path):
        top = name.split(".")[0]
        if top == "extjobs":
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else "__init__"
            assert target in allowed or target == "__init__", (
                f"{path.relative_to(PKG)} ({layer}) imports {name} ({target}): upward or sideways"
            )
        elif top in THIRD_PARTY_ONLY_IN:
            assert layer in THIRD_PARTY_ONLY_IN[top], (
                f"{path.relative_to(PKG)} ({layer}) imports {top}, reserved for "
                f"{', '.join(sorted(THIRD_PARTY_ONLY_IN[top]))}"
            )


def test_every_layer_is_known() -> None:
    assert {layer_of(p) for p in MODULES} <= set(ALLOWED)


# -- import cycles ------------------------------------------------------------------------
#
# The graph has one vertex per module of the package and an edge for every import that
# runs when the module (or one of its functions) runs: ``import extjobs.a.b``,
# ``from extjobs.a import b`` (to ``extjobs.a.b`` when that is a module, else to the
# package ``extjobs.a``) and relative imports. Imports under ``if TYPE_CHECKING:`` are
# for the type checker only and do not count.


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``nodes`` that can run, skipping TYPE_CHECKING blocks."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_imports(node.orelse)
        else:
            yield from _runtime_imports(ast.iter_child_nodes(node))


def import_edges(name: str) -> dict[str, int]:
    """The package's modules that module ``name`` imports at run time → first line."""
    tree = ast.parse(NAMES[name].read_text(), filename=str(NAMES[name]))
    edges: dict[str, int] = {}
    for stmt in _runtime_imports(tree.body):
        for target in imported(stmt, name):
            if target in NAMES and target != name:
                edges.setdefault(target, stmt.lineno)
    return edges


GRAPH = {name: import_edges(name) for name in NAMES}


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_through(start: str, graph: dict[str, dict[str, int]], members: set[str]) -> str:
    """A shortest import cycle from ``start`` back to it, with the importing lines."""
    paths = {w: [start, w] for w in graph[start] if w in members}
    queue = list(paths)
    while start not in paths:
        v = queue.pop(0)
        for w in graph[v]:
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    path = paths[start]
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(path))
        + f" -> {start}"
    )


LAYERS = sorted({layer_of(p) for p in MODULES})


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_cycle_inside_a_layer(layer: str) -> None:
    inside = {n for n, p in NAMES.items() if layer_of(p) == layer}
    graph = {n: {w: line for w, line in GRAPH[n].items() if w in inside} for n in inside}
    cycles = [cycle_through(c[0], graph, set(c)) for c in strongly_connected(graph)]
    assert not cycles, "import cycle(s):\n" + "\n".join(cycles)


def test_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}}
    (component,) = strongly_connected(graph)
    assert component == ["a", "b", "c"]
    assert cycle_through("a", graph, set(component)) == (
        "a (line 3) -> b (line 5) -> c (line 7) -> a"
    )


def test_runtime_edges_skip_type_checking_and_resolve_relative_imports() -> None:
    tree = ast.parse(
        "if TYPE_CHECKING:\n    import a\nelse:\n    import b\ndef f():\n    import c\n"
    )
    assert [alias.name for s in _runtime_imports(tree.body) for alias in s.names] == ["b", "c"]
    relative = ast.parse("from . import output\nfrom ..model.opcodes import OpCode\n").body
    assert [imported(s, "extjobs.cli.main") for s in relative if isinstance(s, ast.ImportFrom)] == [
        ["extjobs.cli.output"],
        ["extjobs.model.opcodes"],
    ]
