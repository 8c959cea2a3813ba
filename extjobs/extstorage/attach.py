"""What ``attach`` printed, and checking on the node that the device is real.

Output contract (Ganeti's, extended with strict checks)::

    /dev/rbd0                  line 1: absolute block device path, or empty
    kvm:rbd:pool/volume        further lines: <hypervisor>:<uri>, one per hypervisor

An empty line 1 means the volume is reachable from userspace only; then at least one
URI line must follow. Blank lines after line 1 are ignored. Anything else is a
:class:`ProviderError` naming the provider, the node and what was printed.

Exit codes lie (some providers exit 0 after failing), so a non-empty line 1 is then
checked *on the node* with :func:`block_device_check_command` and
:func:`check_block_device_result`.
"""

from __future__ import annotations

import re

import attrs

from extjobs.errors import ProviderError
from extjobs.model.remote import DEFAULT_PATH, CommandResult, RemoteCommand

__all__ = [
    "AttachInfo",
    "block_device_check_command",
    "check_block_device_result",
    "parse_attach_output",
]

_URI_LINE_RE = re.compile(r"([A-Za-z0-9_-]+):(.+)")
_SHOWN = 500


@attrs.frozen
class AttachInfo:
    """The result of ``attach``: a block device (``None``: userspace only) and URIs.

    ``uris`` maps a lower-cased hypervisor name to its URI; when a provider prints two
    lines for one hypervisor the first wins, as in Ganeti's lookup.
    """

    device: str | None
    uris: dict[str, str] = attrs.field(factory=dict)

    def uri_for(self, hypervisor: str) -> str | None:
        """The userspace URI for ``hypervisor`` (case-insensitive), if any."""
        return self.uris.get(hypervisor.lower())


def _bad(reason: str, stdout: str, *, provider: str, node: str) -> ProviderError:
    shown = stdout if len(stdout) <= _SHOWN else stdout[:_SHOWN] + "…"
    return ProviderError(
        f"attach of provider {provider!r} on node {node!r} {reason}; it printed {shown!r}",
        provider=provider,
        node=node,
        action="attach",
        stdout=shown,
    )


def parse_attach_output(stdout: str, *, provider: str, node: str) -> AttachInfo:
    """Parse ``attach``'s stdout; raises :class:`ProviderError` when it breaks the contract."""
    lines = stdout.split("\n")
    # Drop the line terminators only: a trailing "\r" or blanks are not part of a path.
    lines = [line.rstrip("\r\t ") for line in lines]
    if not stdout.strip():
        raise _bad("printed nothing", stdout, provider=provider, node=node)
    first, rest = lines[0], [line for line in lines[1:] if line]
    device: str | None
    if first == "":
        device = None
    elif first.startswith("/") and "\0" not in first:
        device = first
    else:
        raise _bad(
            "printed a first line that is not an absolute device path",
            stdout,
            provider=provider,
            node=node,
        )
    uris: dict[str, str] = {}
    for line in rest:
        match = _URI_LINE_RE.fullmatch(line)
        if match is None:
            raise _bad(
                f"printed a line that is not <hypervisor>:<uri>: {line!r}",
                stdout,
                provider=provider,
                node=node,
            )
        uris.setdefault(match.group(1).lower(), match.group(2))
    if device is None and not uris:
        raise _bad(
            "printed neither a block device nor a userspace URI",
            stdout,
            provider=provider,
            node=node,
        )
    return AttachInfo(device=device, uris=uris)


def block_device_check_command(
    path: str, *, path_env: str = DEFAULT_PATH, timeout: float = 30.0
) -> RemoteCommand:
    """The command that checks on the node that ``path`` is a block device.

    It runs ``test -b PATH`` in argv form: the path is one argument, never seen by a
    shell. Interpret the result with :func:`check_block_device_result`: exit 0 means a
    block device, 1 means it is not one (or does not exist).
    """
    return RemoteCommand(
        argv=("test", "-b", path),
        env={"PATH": path_env, "LC_ALL": "C"},
        timeout=timeout,
    )


def check_block_device_result(
    result: CommandResult, *, path: str, provider: str, node: str
) -> None:
    """Raise :class:`ProviderError` unless ``result`` (of the check command) says yes."""
    if result.exit_status == 0:
        return
    if result.exit_status == 1:
        reason = "is not a block device on the node (or does not exist)"
    else:
        status = result.exit_status if result.exit_status is not None else result.signal
        reason = f"could not be checked (test exited with {status}: {result.tail()!r})"
    raise ProviderError(
        f"attach of provider {provider!r} on node {node!r} printed {path!r}, which {reason}",
        provider=provider,
        node=node,
        action="attach",
        device=path,
    )
