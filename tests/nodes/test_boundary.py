"""Only extjobs.nodes talks SSH: no other package imports asyncssh."""

from __future__ import annotations

import ast
from pathlib import Path

import extjobs

PACKAGE = Path(extjobs.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_asyncssh_is_imported_only_by_the_node_layer() -> None:
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if "asyncssh" in _imports(path) and path.relative_to(PACKAGE).parts[0] != "nodes"
    ]
    assert offenders == []


def test_node_layer_imports_only_model_and_errors() -> None:
    allowed = {"extjobs.model", "extjobs.errors", "extjobs.nodes"}
    upward = []
    for path in (PACKAGE / "nodes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("extjobs")
            ) and not any(node.module.startswith(prefix) for prefix in allowed):
                upward.append(f"{path.name}: {node.module}")
    assert upward == []
