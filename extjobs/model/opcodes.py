"""Opcodes: what a job asks the cluster to do.

Each opcode is a frozen attrs class with an ``OP_ID`` in Ganeti's vocabulary
(``OP_NODE_ADD``). ``OPCODES`` is the explicit registry used to decode submitted JSON;
the engine's registry from opcode class to logical unit lives in ``extjobs.lus``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from extjobs.errors import InputError, UnknownOpcodeError
from extjobs.model import codec
from extjobs.model.cluster import check_name


def _names(kind: str) -> Any:
    def validate(_inst: object, attr: attrs.Attribute[tuple[str, ...]], values: tuple[str, ...]) -> None:
        for value in values:
            check_name(kind, value, attr.name)

    return validate


def _name(kind: str) -> Any:
    def validate(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
        check_name(kind, value, attr.name)

    return validate


def _port(_inst: object, _attr: object, value: int) -> None:
    if not 1 <= value <= 65535:
        raise InputError(f"port {value} is out of range 1..65535", field="port")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise InputError(f"{attr.name} must not be negative (got {value})", field=attr.name)


@attrs.frozen
class OpCode:
    OP_ID: ClassVar[str] = ""
    #: Short human summary used in job listings.
    def summary(self) -> str:
        return self.OP_ID


@attrs.frozen
class OpClusterInit(OpCode):
    OP_ID: ClassVar[str] = "OP_CLUSTER_INIT"
    cluster_name: str = attrs.field(validator=_name("cluster name"))
    default_group: str = attrs.field(default="default", validator=_name("group name"))
    search_path: tuple[str, ...] | None = None

    def summary(self) -> str:
        return f"{self.OP_ID}({self.cluster_name})"


@attrs.frozen
class OpClusterQuery(OpCode):
    OP_ID: ClassVar[str] = "OP_CLUSTER_QUERY"


@attrs.frozen
class OpGroupAdd(OpCode):
    OP_ID: ClassVar[str] = "OP_GROUP_ADD"
    group_name: str = attrs.field(validator=_name("group name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.group_name})"


@attrs.frozen
class OpNodeAdd(OpCode):
    OP_ID: ClassVar[str] = "OP_NODE_ADD"
    node_name: str = attrs.field(validator=_name("node name"))
    address: str | None = None
    port: int = attrs.field(default=22, validator=_port)
    user: str = "root"
    group: str | None = None
    #: The node's SSH host key (``ssh-ed25519 AAAA…``) to pin; or accept_new_host_key.
    host_key: str | None = None
    accept_new_host_key: bool = False
    search_path: tuple[str, ...] | None = None

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


@attrs.frozen
class OpNodeRemove(OpCode):
    OP_ID: ClassVar[str] = "OP_NODE_REMOVE"
    node_name: str = attrs.field(validator=_name("node name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


@attrs.frozen
class OpNodeQuery(OpCode):
    OP_ID: ClassVar[str] = "OP_NODE_QUERY"
    names: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))


@attrs.frozen
class OpTestDelay(OpCode):
    """Sleep ``duration`` seconds on the master and/or on the given nodes."""

    OP_ID: ClassVar[str] = "OP_TEST_DELAY"
    duration: float = attrs.field(default=0.0, validator=_non_negative)
    on_master: bool = True
    on_nodes: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))
    repeat: int = attrs.field(default=0, validator=_non_negative)
    #: Instance names to lock exclusively while sleeping (need not exist): lets tests
    #: and benchmarks exercise the lock manager without touching storage.
    lock_instances: tuple[str, ...] = attrs.field(default=(), validator=_names("instance name"))

    def summary(self) -> str:
        where = ",".join(self.on_nodes) or "master"
        return f"{self.OP_ID}({self.duration}s@{where})"


@attrs.frozen
class OpExtStorageDiagnose(OpCode):
    OP_ID: ClassVar[str] = "OP_EXTSTORAGE_DIAGNOSE"
    providers: tuple[str, ...] = ()
    nodes: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))


@attrs.frozen
class OpExtStorageInstall(OpCode):
    """Copy a provider directory from the master to nodes (SFTP, modes kept)."""

    OP_ID: ClassVar[str] = "OP_EXTSTORAGE_INSTALL"
    source: str
    provider: str | None = None
    nodes: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))
    group: str | None = None

    def summary(self) -> str:
        return f"{self.OP_ID}({self.provider or self.source})"


OPCODES: dict[str, type[OpCode]] = {
    cls.OP_ID: cls
    for cls in (
        OpClusterInit,
        OpClusterQuery,
        OpGroupAdd,
        OpNodeAdd,
        OpNodeRemove,
        OpNodeQuery,
        OpTestDelay,
        OpExtStorageDiagnose,
        OpExtStorageInstall,
    )
}


def register_opcode(cls: type[OpCode]) -> type[OpCode]:
    """Add an opcode class to the registry (used by later opcode families)."""
    OPCODES[cls.OP_ID] = cls
    return cls


def decode_opcode(data: Any, *, where: str = "op") -> OpCode:
    """Decode one submitted opcode dict; raises InputError naming the bad field."""
    if not isinstance(data, dict):
        raise InputError(f"{where} must be an object with an OP_ID", field=where)
    op_id = data.get("OP_ID")
    if not isinstance(op_id, str):
        raise InputError(f"{where}.OP_ID is missing or not a string", field=f"{where}.OP_ID")
    cls = OPCODES.get(op_id)
    if cls is None:
        raise UnknownOpcodeError(
            f"unknown opcode {op_id!r}; known: {', '.join(sorted(OPCODES))}",
            field=f"{where}.OP_ID",
        )
    body = {k: v for k, v in data.items() if k != "OP_ID"}
    return codec.structure(body, cls, what=where)


def encode_opcode(op: OpCode) -> dict[str, Any]:
    out: dict[str, Any] = {"OP_ID": op.OP_ID}
    out.update(codec.unstructure(op))
    return out
