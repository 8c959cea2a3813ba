"""Copying a directory of the master to a node over SFTP (``storage install``).

Nothing here touches a local file on the event loop: :func:`plan_tree` walks the tree in
a worker thread (its caller runs it there) and every file is read in a worker thread
too, so a stalled local file system cannot freeze the daemon; the caller bounds the
whole copy with a timeout.

What is copied: directories, regular files, and symbolic links to regular files (as the
file they point to). Anything else — a FIFO, a device, a socket, a dangling link, a link
to a directory — is refused by name before anything is sent: reading a FIFO blocks until
someone writes to it, and ``/dev/zero`` never ends. Modes are kept, except that group
and other write permission are dropped: provider scripts run as root on the nodes, so
only their owner may change them.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

from extjobs.errors import InputError

#: The largest file copied (a provider is a few scripts, not a payload).
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Permission bits never given to a copied file or directory: group and other write.
MASKED_MODE = 0o022


class TreePlan:
    """What a tree copy sends: directories (parents first) and files, as paths relative
    to the tree's top (``""`` is the top itself), with their modes."""

    def __init__(self) -> None:
        self.dirs: list[tuple[str, int]] = []
        self.files: list[tuple[str, str, int]] = []


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def plan_tree(local_dir: Path) -> TreePlan:
    """The plan of copying ``local_dir`` (blocking: run it in a worker thread).

    Raises :class:`InputError` naming every entry that cannot be copied (see the module
    docstring) and every file over :data:`MAX_FILE_BYTES`; nothing is copied then.
    """
    if not local_dir.is_dir():
        raise InputError(f"{local_dir} is not a directory on the master", field="source")
    plan = TreePlan()
    refused: list[str] = []
    plan.dirs.append(("", stat.S_IMODE(local_dir.stat().st_mode)))
    for root, dirnames, filenames in os.walk(local_dir):
        top = Path(root)
        rel_root = top.relative_to(local_dir).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        for name in sorted(dirnames):
            path = top / name
            if path.is_symlink():  # os.walk does not descend into links
                refused.append(f"{path} (a link to a directory)")
            else:
                plan.dirs.append((prefix + name, stat.S_IMODE(path.lstat().st_mode)))
        for name in sorted(filenames):
            path = top / name
            try:
                info = path.stat()  # follows a link to the file it points to
            except OSError as exc:
                refused.append(f"{path} ({exc.strerror or exc})")
                continue
            if not stat.S_ISREG(info.st_mode):
                refused.append(f"{path} ({_kind(info.st_mode)})")
            elif info.st_size > MAX_FILE_BYTES:
                refused.append(f"{path} ({info.st_size} bytes, over {MAX_FILE_BYTES})")
            else:
                plan.files.append((str(path), prefix + name, stat.S_IMODE(info.st_mode)))
    if refused:
        raise InputError(
            "only directories and regular files (or links to them) are copied; refused: "
            + "; ".join(refused),
            field="source",
            refused=refused,
        )
    return plan


def read_file(path: str) -> bytes:
    """The contents of a planned file, at most :data:`MAX_FILE_BYTES` (blocking)."""
    with open(path, "rb") as f:
        return f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]


async def copy_tree(
    sftp: asyncssh.SFTPClient,
    plan: TreePlan,
    remote_dir: str,
    read: Callable[[str], Awaitable[bytes]],
) -> None:
    """Copy what ``plan`` holds into ``remote_dir`` (created with its parents); ``read``
    returns a local file's contents without blocking the event loop.

    Raises ``asyncssh.SFTPError`` (translated by the caller). Not atomic."""
    await sftp.makedirs(remote_dir, exist_ok=True)
    for rel, _mode in plan.dirs:
        if rel:
            await sftp.makedirs(posixpath.join(remote_dir, rel), exist_ok=True)
    for local, rel, mode in plan.files:
        remote = posixpath.join(remote_dir, rel)
        data = await read(local)
        async with sftp.open(remote, "wb") as f:
            await f.write(data)
        await sftp.chmod(remote, mode & ~MASKED_MODE)
    # Directory modes last, deepest first: a read-only directory must not stop its own
    # contents from being written.
    for rel, mode in reversed(plan.dirs):
        path = posixpath.join(remote_dir, rel) if rel else remote_dir
        await sftp.chmod(path, mode & ~MASKED_MODE)
