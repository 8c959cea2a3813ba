"""Child processes of this machine, with their pipes served by the event loop.

The embedded node runs every command this way, and the daemon its fence commands.
:func:`spawn` starts the program through :mod:`subprocess` (which closes every other
descriptor in the child) on pipes of our own, and hands back their parent ends,
non-blocking; :func:`read_chunks`, :func:`write_all` and :func:`wait_exit` serve them
on whichever event loop runs (a pidfd tells when the child has exited).

Not the event loop's own subprocess support: uvloop (the daemon's loop) hands the child
extra copies of its output pipes, so a daemon the program starts, with its own output
sent elsewhere, would still hold them, and the run would not end when the program does
(sshd ends a command then, and so must the embedded node, whichever loop it runs on).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import anyio

__all__ = ["Child", "read_chunks", "spawn", "wait_exit", "write_all"]

_CHUNK = 65536


class Child:
    """A started program and the parent ends of its pipes (``stdin`` is ``None`` when
    it reads ``/dev/null``). Each end is closed once, by :meth:`close_fd` or
    :meth:`close`."""

    def __init__(
        self, process: subprocess.Popen[bytes], stdin: int | None, stdout: int, stderr: int
    ) -> None:
        self.process = process
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._open = {fd for fd in (stdin, stdout, stderr) if fd is not None}

    @property
    def pid(self) -> int:
        return self.process.pid

    def close_fd(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def close(self) -> None:
        for fd in list(self._open):
            self.close_fd(fd)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None = None,
    stdin: bool = False,
) -> Child:
    """Start ``argv`` in a session of its own; raises :class:`OSError` when it cannot
    be started (nothing is left open then)."""
    fds: list[int] = []
    try:
        in_r, in_w = os.pipe() if stdin else (subprocess.DEVNULL, -1)
        fds += [fd for fd in (in_r, in_w) if fd >= 0]
        out_r, out_w = os.pipe()
        fds += [out_r, out_w]
        err_r, err_w = os.pipe()
        fds += [err_r, err_w]
        process = subprocess.Popen(
            list(argv),
            stdin=in_r,
            stdout=out_w,
            stderr=err_w,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):
        if fd >= 0:
            os.close(fd)
    parent_ends = [fd for fd in (in_w, out_r, err_r) if fd >= 0]
    for fd in parent_ends:
        os.set_blocking(fd, False)
    return Child(process, in_w if stdin else None, out_r, err_r)


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """What the non-blocking pipe ``fd`` gives, chunk by chunk, until its end."""
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            return
        yield chunk


async def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to the non-blocking pipe ``fd``, waiting while it is full; raises
    :class:`BrokenPipeError` once the reader has gone."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await anyio.wait_writable(fd)
            continue
        view = view[written:]


async def wait_exit(process: subprocess.Popen[bytes]) -> int:
    """``process``'s exit status once it has exited (and been reaped); negative: killed
    by that signal."""
    pidfd = os.pidfd_open(process.pid)
    try:
        while (returncode := process.poll()) is None:
            await anyio.wait_readable(pidfd)
        return returncode
    finally:
        os.close(pidfd)
