"""Killing what a crashed master left running on a node.

Every remote command runs as the leader of its own session and process group, whose id
the engine journals while the command runs. After a crash the new master kills such a
command — its session, its group and their descendants, ``setsid`` children included
(:mod:`extjobs.nodes.killtree`) — but only if the leader still runs the step's program,
so that a process id reused since then on the node is left alone. A command whose leader
has exited is not touched, even if children of it still run.
"""

from __future__ import annotations

from extjobs.model.remote import DEFAULT_PATH, RemoteCommand
from extjobs.nodes.killtree import KILL_TREE

#: Kill the command whose session is $1 if its leader still runs $2 (guards against a
#: reused pid); prints ``killed`` when it did.
KILL_IF_OURS = (
    '[ -r "/proc/$1/cmdline" ] || exit 0\n'
    'tr "\\000" " " <"/proc/$1/cmdline" | grep -qF -- "$2" || exit 0\n'
    + KILL_TREE
    + 'kill_tree "$1"\n'
)


def kill_if_ours_command(pgid: int, program: str, timeout: float) -> RemoteCommand:
    """The command that kills the command whose session is ``pgid`` if its leader runs
    ``program``; it prints ``killed`` when it did."""
    return RemoteCommand(
        argv=("/bin/sh", "-c", KILL_IF_OURS, "sh", str(pgid), program),
        env={"PATH": DEFAULT_PATH},
        timeout=timeout,
    )
