"""The exec request sent to a node for one :class:`RemoteCommand`. Pure, no I/O.

sshd hands an exec request to the login shell of the remote user as ``SHELL -c LINE``
and runs it in a new session, so that shell is the leader of a fresh process group
whose id is its PID. :func:`shell_line` builds ``LINE`` so that

1. the shell first prints ``extjobs-pgid <PID>`` on stdout (the runner strips that line
   and keeps the number, to kill the command on timeout or cancel with :func:`kill_line`:
   its session, its group and their descendants, see :mod:`extjobs.nodes.killtree`);
2. it changes to ``cwd`` (exit status 127 when that fails);
3. it replaces itself, keeping the PID and so the group, with
   ``env -i -- K=V ... ARGV...``: the program starts with *exactly* ``cmd.env`` as its
   environment, and nothing from the SSH session leaks into it.

Every word is quoted with :func:`shlex.quote`, so values containing ``$(...)``,
backticks, quotes, ``;``, spaces, newlines or non-ASCII text reach the program
byte-identical and are never interpreted by the shell. ``env`` itself only treats the
leading ``NAME=VALUE`` words as assignments; the first word without ``=`` is the program.

A program that is itself a shell script may see a few variables its own shell adds
(``PWD`` for dash and bash); that is the script's shell, not the exec request.
"""

from __future__ import annotations

import re
import shlex

from extjobs.model.remote import RemoteCommand
from extjobs.nodes.killtree import KILL_TREE

PGID_MARKER = "extjobs-pgid"

_ENV_NAME = re.compile(r"[^=\0]+")
_MARKER_LINE = re.compile(rf"^{PGID_MARKER} ([0-9]+)\r?$")
_KILL_SCRIPT = KILL_TREE + 'kill_tree "$1"\n'


def shell_line(cmd: RemoteCommand) -> str:
    """The POSIX shell command line that runs ``cmd`` on a node.

    Raises :class:`ValueError` for commands no exec request can express exactly: an
    empty ``argv``, NUL bytes anywhere, an environment name that is empty or contains
    ``=``, or a program name containing ``=`` (``env`` would take it for an assignment).
    """
    if not cmd.argv:
        raise ValueError("a remote command needs at least a program name")
    if "=" in cmd.argv[0]:
        raise ValueError(f"program name {cmd.argv[0]!r} must not contain '='")
    for word in cmd.argv:
        if "\0" in word:
            raise ValueError(f"argument {word!r} contains a NUL byte")
    for name, value in cmd.env:
        if _ENV_NAME.fullmatch(name) is None:
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\0" in value:
            raise ValueError(f"value of {name} contains a NUL byte")
    if cmd.cwd is not None and "\0" in cmd.cwd:
        raise ValueError(f"working directory {cmd.cwd!r} contains a NUL byte")

    parts = [f"printf '{PGID_MARKER} %s\\n' \"$$\""]
    if cmd.cwd is not None:
        parts.append(f"cd -- {shlex.quote(cmd.cwd)} || exit 127")
    words = ["exec", "env", "-i", "--"]
    words += [shlex.quote(f"{name}={value}") for name, value in cmd.env]
    words += [shlex.quote(word) for word in cmd.argv]
    parts.append(" ".join(words))
    return "; ".join(parts)


def parse_pgid(first_line: str | bytes) -> int | None:
    """The process-group id announced by a marker line, or ``None`` if it is not one.

    Accepts the line with or without its trailing newline.
    """
    if isinstance(first_line, bytes):
        try:
            first_line = first_line.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _MARKER_LINE.match(first_line.rstrip("\n"))
    if match is None:
        return None
    pgid = int(match.group(1))
    # 0 and 1 would make `kill -- -PGID` hit the caller's own group or everything.
    return pgid if pgid > 1 else None


def kill_line(pgid: int) -> str:
    """A shell command that SIGKILLs the command whose session (and process group) is
    ``pgid``, with every descendant (:mod:`extjobs.nodes.killtree`); it exits 0, silent
    on stderr, even when nothing is left.

    Runs the walk under ``/bin/sh`` whatever the login shell (dash and bash alike).
    """
    if pgid <= 1:
        raise ValueError(f"refusing to kill process group {pgid}")
    return f"/bin/sh -c {shlex.quote(_KILL_SCRIPT)} sh {int(pgid)}"
