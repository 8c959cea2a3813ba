"""What the engine asks of a node, and what comes back. Pure data, no I/O.

The node layer (``extjobs.nodes``) turns a :class:`RemoteCommand` into an SSH exec
request; nothing above it knows about SSH.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from extjobs.errors import InputError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The longest command (argv, environment and working directory) sent to a node.
MAX_COMMAND_BYTES = 65536


@attrs.frozen
class Endpoint:
    """How to reach one node over SSH.

    ``host_key`` is the pinned public key in OpenSSH format (``ssh-ed25519 AAAA…``);
    ``None`` only while a node is being added and its key fetched for pinning.
    """

    name: str
    host: str
    port: int = 22
    user: str = "root"
    host_key: str | None = None


def _freeze_env(value: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(dict(value).items()))


@attrs.frozen
class RemoteCommand:
    """A program to run on a node with exactly this environment.

    ``argv[0]`` is run with ``env`` as its *whole* environment (nothing inherited from
    the SSH session), in ``cwd`` when given. Values are passed verbatim: the node layer
    quotes them so that no shell ever interprets them. ``stdin`` is fed and closed.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_freeze_env)
    cwd: str | None = None
    timeout: float = 60.0
    stdin: bytes = b""

    def __attrs_post_init__(self) -> None:
        size = sum(len(a) for a in self.argv) + sum(len(k) + len(v) + 1 for k, v in self.env)
        size += len(self.cwd or "")
        if size > MAX_COMMAND_BYTES:
            # One exec request carries the whole line, and the remote shell gets it as one
            # argument (MAX_ARG_STRLEN, 128 KiB on Linux): past that the node refuses the
            # channel, or the connection that every job to this node shares breaks.
            raise InputError(
                f"command {self.argv[0][:80]!r} with its environment is {size} characters, "
                f"at most {MAX_COMMAND_BYTES} are allowed",
                field="command",
            )

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


def dropped_marker(count: int) -> str:
    """What stands between the kept head and tail of capped output."""
    return f"\n[... {count} bytes dropped ...]\n"


@attrs.frozen
class CommandResult:
    """The outcome of one :class:`RemoteCommand`.

    ``stdout``/``stderr`` are capped: the head and the tail are kept and
    ``*_dropped`` counts the bytes cut out of the middle. ``exit_status`` is ``None``
    when the process died of a signal (``signal`` names it).
    """

    exit_status: int | None
    stdout: str = ""
    stderr: str = ""
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    duration: float = 0.0
    signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def complete_stdout(self) -> str:
        """The stdout text a parser may trust: all of it when nothing was dropped, else
        only the complete lines of the kept head (the cut line and the tail are left out)."""
        if not self.stdout_dropped:
            return self.stdout
        marker = dropped_marker(self.stdout_dropped)
        head = self.stdout.split(marker, 1)[0]
        return head[: head.rfind("\n") + 1]

    def tail(self, which: str = "stderr", limit: int = 2000) -> str:
        text = self.stderr if which == "stderr" else self.stdout
        return text[-limit:]


def fingerprint(public_key: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key line (``ssh-ed25519 AAAA… [comment]``)."""
    import base64
    import binascii
    import hashlib

    parts = public_key.split()
    if len(parts) < 2:
        return "invalid-key"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "invalid-key"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
