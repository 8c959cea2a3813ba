"""Copying a directory of the master to a node over SFTP, modes kept.

:func:`plan_tree` walks the local tree (blocking: run it in a worker thread);
:func:`copy_tree` sends it through an open SFTP client: directories first, parents
before children, then the files with their modes, then the directory modes.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

import asyncssh


class TreePlan:
    """What a tree copy sends: directories (parents first) and files,
    as paths relative to the tree's top (``""`` is the top itself)."""

    def __init__(self) -> None:
        self.dirs: list[tuple[str, int]] = []
        self.files: list[tuple[str, str]] = []


def plan_tree(local_dir: Path) -> TreePlan:
    if not local_dir.is_dir():
        raise NotADirectoryError(str(local_dir))
    plan = TreePlan()
    plan.dirs.append(("", stat.S_IMODE(local_dir.stat().st_mode)))
    for root, dirnames, filenames in os.walk(local_dir):
        top = Path(root)
        rel_root = top.relative_to(local_dir).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        for name in sorted(dirnames):
            path = top / name
            if path.is_symlink():  # os.walk does not descend; copy the link itself
                plan.files.append((str(path), prefix + name))
            else:
                plan.dirs.append((prefix + name, stat.S_IMODE(path.stat().st_mode)))
        plan.files.extend((str(top / name), prefix + name) for name in sorted(filenames))
    return plan


async def copy_tree(sftp: asyncssh.SFTPClient, plan: TreePlan, remote_dir: str) -> None:
    """Copy what ``plan`` holds into ``remote_dir`` (created with its parents).

    Raises ``asyncssh.SFTPError`` (translated by the caller). Not atomic."""
    await sftp.makedirs(remote_dir, exist_ok=True)
    for rel, _mode in plan.dirs:
        if rel:
            await sftp.makedirs(posixpath.join(remote_dir, rel), exist_ok=True)
    for local, rel in plan.files:
        await sftp.put(local, posixpath.join(remote_dir, rel), preserve=True)
    # Directory modes last, deepest first: a read-only directory must not stop its own
    # contents from being written.
    for rel, mode in reversed(plan.dirs):
        await sftp.chmod(posixpath.join(remote_dir, rel) if rel else remote_dir, mode)
