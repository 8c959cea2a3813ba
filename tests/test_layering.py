"""The one-way layering of DESIGN §2, enforced by walking every module's imports."""

from __future__ import annotations

import ast
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
    "engine": {"model", "errors", "extstorage", "hypervisors", "lus", "nodes"},
    "api": {"model", "errors", "engine", "lus"},
    "daemon": {"model", "errors", "engine", "lus", "nodes", "api"},
    "cli": {"model", "errors", "api", "daemon", "nodes", "cli", "testing"},
    # The test kit: a leaf that may use every layer; only the CLI (the demo) imports it.
    "testing": {
        "model",
        "errors",
        "nodes",
        "extstorage",
        "hypervisors",
        "lus",
        "engine",
        "api",
        "daemon",
    },
    "__main__": {"cli"},
    "__init__": set(),
}
THIRD_PARTY_ONLY_IN = {
    "asyncssh": {"nodes"},
    "sqlite3": {"engine"},
    "uvicorn": {"daemon"},
    "starlette": {"api"},
    "httpx": {"api"},
    "click": {"cli"},
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


MODULES = sorted(PKG.rglob("*.py"))


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
