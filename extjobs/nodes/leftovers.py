"""Killing what a crashed master left running on a node.

Every remote command runs as the leader of its own process group, whose id the engine
journals while the command runs. After a crash the new master kills such a group — but
only if its leader still runs the step's program, so that a process id reused since then
on the node is left alone.
"""

from __future__ import annotations

from extjobs.model.remote import DEFAULT_PATH, RemoteCommand

#: Kill process group $1 if its leader still runs $2 (guards against a reused pid).
KILL_IF_OURS = (
    '[ -r "/proc/$1/cmdline" ] || exit 0; '
    'tr "\\000" " " <"/proc/$1/cmdline" | grep -qF -- "$2" || exit 0; '
    'kill -s KILL -- "-$1" 2>/dev/null && echo killed; exit 0'
)


def kill_if_ours_command(pgid: int, program: str, timeout: float) -> RemoteCommand:
    """The command that kills group ``pgid`` if its leader runs ``program``; it prints
    ``killed`` when it did."""
    return RemoteCommand(
        argv=("/bin/sh", "-c", KILL_IF_OURS, "sh", str(pgid), program),
        env={"PATH": DEFAULT_PATH},
        timeout=timeout,
    )
