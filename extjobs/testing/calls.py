"""What the scripted runner was asked: one :class:`Call` per request, classified.

A call is classified from the :class:`~extjobs.model.remote.RemoteCommand` alone, the
way a node would see it (no step, no journal): a provider script is
``<dir>/<action>`` run in ``<dir>`` with ``VOL_NAME`` set; the diagnose, hypervisor and
check commands are recognised by their constant scripts and programs. That keeps tests
that assert on calls independent of how the engine describes its steps.

Kinds and their ``label``::

    provider            "create disk0", "open disk1 shared", "open disk0 exclusive"
    hypervisor          "hv start", "hv status", "hv stop"
    diagnose            "diagnose"
    block-device-check  "test -b"
    size-check          "size"
    node-info           "node-info" (a hypervisor's memory figures)
    command             the program name (uname, sleep, ...)
    host-key, put-tree, stream, kill-leftover
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import attrs

from extjobs.extstorage.capacity import CAPACITY_SCRIPT
from extjobs.extstorage.diagnose import DIAGNOSE_SCRIPT
from extjobs.extstorage.names import Action
from extjobs.hypervisors.fake import NODE_INFO_SCRIPT as FAKE_NODE_INFO_SCRIPT
from extjobs.hypervisors.fake import START_SCRIPT as FAKE_START_SCRIPT
from extjobs.hypervisors.process import (
    GUESTS_SCRIPT,
    NODE_INFO_SCRIPT,
    STATUS_SCRIPT,
    STOP_SCRIPT,
)
from extjobs.model.remote import Endpoint, RemoteCommand

_PROVIDER_ACTIONS = {a.value for a in Action}
_DISK_RE = re.compile(r"\.disk([0-9]+)$")
_HV_SCRIPTS = {
    FAKE_START_SCRIPT: "start",
    STATUS_SCRIPT: "status",
    STOP_SCRIPT: "stop",
    GUESTS_SCRIPT: "guests",
}


@attrs.frozen
class Call:
    """One request the runner answered (or refused), in the order it arrived.

    ``node`` is the endpoint's name. For ``run``, ``command`` is what was asked; for
    ``put-tree`` and ``stream``, ``detail`` holds the local and remote paths or the
    socket path. ``provider``/``disk``/``volume`` are set for provider scripts,
    ``args`` are the positional arguments of a constant ``/bin/sh -c`` script.
    """

    seq: int
    node: str
    kind: str
    action: str | None = None
    command: RemoteCommand | None = None
    endpoint: Endpoint | None = None
    provider: str | None = None
    disk: int | None = None
    volume: str | None = None
    args: tuple[str, ...] = ()
    detail: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return self.command.env_dict if self.command is not None else {}

    @property
    def argv(self) -> tuple[str, ...]:
        return self.command.argv if self.command is not None else ()

    @property
    def exclusive(self) -> bool | None:
        """For ``open``: whether it asked for an exclusive open."""
        value = self.env.get("VOL_OPEN_EXCLUSIVE")
        return None if value is None else value == "True"

    @property
    def label(self) -> str:
        if self.kind == "provider":
            text = f"{self.action} disk{self.disk}"
            if self.action == "open":
                text += " exclusive" if self.exclusive else " shared"
            return text
        if self.kind == "hypervisor":
            return f"hv {self.action}"
        if self.kind == "block-device-check":
            return "test -b"
        if self.kind == "size-check":
            return "size"
        if self.kind == "command":
            return PurePosixPath(self.argv[0]).name if self.argv else "command"
        return self.kind

    def __str__(self) -> str:
        return f"{self.node} {self.label}"


def classify(seq: int, endpoint: Endpoint, command: RemoteCommand) -> Call:
    """The :class:`Call` for running ``command`` on ``endpoint``."""
    argv = command.argv
    env = command.env_dict
    base = Call(seq, endpoint.name, "command", command=command, endpoint=endpoint)
    if len(argv) == 1 and "VOL_NAME" in env and command.cwd is not None:
        path = PurePosixPath(argv[0])
        if path.name in _PROVIDER_ACTIONS and str(path.parent) == command.cwd.rstrip("/"):
            match = _DISK_RE.search(env["VOL_NAME"])
            return attrs.evolve(
                base,
                kind="provider",
                action=path.name,
                provider=env.get("EXTP_PROVIDER", path.parent.name),
                disk=int(match.group(1)) if match else None,
                volume=env["VOL_NAME"],
            )
    if argv == ("/bin/sh", "-c", CAPACITY_SCRIPT):
        return attrs.evolve(
            base, kind="capacity", action="capacity", provider=env.get("EXTP_PROVIDER")
        )
    if len(argv) >= 4 and argv[:2] == ("/bin/sh", "-c"):
        script, args = argv[2], tuple(argv[4:])
        if script == DIAGNOSE_SCRIPT:
            return attrs.evolve(base, kind="diagnose", action="diagnose", args=args)
        if script in (NODE_INFO_SCRIPT, FAKE_NODE_INFO_SCRIPT):
            return attrs.evolve(base, kind="node-info", action="node-info", args=args)
        if script in _HV_SCRIPTS:
            return attrs.evolve(base, kind="hypervisor", action=_HV_SCRIPTS[script], args=args)
    if argv[:2] == ("test", "-b") and len(argv) == 3:
        return attrs.evolve(base, kind="block-device-check", action="test -b", args=argv[2:])
    if argv[:2] == ("blockdev", "--getsize64") or argv[:4] == ("stat", "-L", "-c", "%s"):
        return attrs.evolve(base, kind="size-check", action="size", args=argv[-1:])
    return attrs.evolve(base, kind="command", action=PurePosixPath(argv[0]).name if argv else None)


@attrs.frozen
class Match:
    """Which calls a rule applies to: every given field must match (``None``: any).

    ``argv`` is a regular expression searched in the shell-quoted argv; ``where`` is a
    predicate on the call.
    """

    node: str | None = None
    kind: str | None = None
    action: str | None = None
    provider: str | None = None
    disk: int | None = None
    argv: str | None = None
    where: Callable[[Call], bool] | None = None

    def __call__(self, call: Call) -> bool:
        fields: dict[str, Any] = {
            "node": call.node,
            "kind": call.kind,
            "action": call.action,
            "provider": call.provider,
            "disk": call.disk,
        }
        for name, actual in fields.items():
            wanted = getattr(self, name)
            if wanted is not None and wanted != actual:
                return False
        if self.argv is not None and not re.search(self.argv, shlex.join(call.argv)):
            return False
        return self.where is None or self.where(call)
