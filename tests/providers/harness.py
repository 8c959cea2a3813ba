"""Run a shipped provider's scripts exactly as a node would: clean env, cwd, no stdin."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs

from extjobs.extstorage.env import Volume, build_command
from extjobs.extstorage.names import Action
from extjobs.model.remote import DEFAULT_PATH

REPO = Path(__file__).resolve().parents[2]
PROVIDERS = REPO / "providers"


def install(root: Path, provider: str, node_id: str) -> Path:
    """Copy ``providers/<provider>`` into ``root/<node_id>/`` as that node's install."""
    target = root / node_id / provider
    shutil.copytree(PROVIDERS / provider, target)
    (target / "node-id").write_text(f"{node_id}\n")
    return target


def run(
    provider_dir: Path, action: Action, volume: Volume, **changes: Any
) -> subprocess.CompletedProcess[str]:
    """Run one action with exactly the environment :func:`build_command` produces."""
    if changes:
        volume = attrs.evolve(volume, **changes)
    cmd = build_command(str(provider_dir), action, volume, path_env=DEFAULT_PATH, timeout=60)
    return subprocess.run(
        cmd.argv,
        env=cmd.env_dict,
        cwd=cmd.cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=cmd.timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert success and return stdout."""
    assert result.returncode == 0, (result.args, result.returncode, result.stderr)
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Assert failure with ``message`` in stderr."""
    assert result.returncode != 0, (result.args, result.stdout)
    assert message in result.stderr, result.stderr
