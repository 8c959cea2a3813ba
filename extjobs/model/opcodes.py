"""Opcodes: what a job asks the cluster to do.

Each opcode is a frozen attrs class with an ``OP_ID`` in Ganeti's vocabulary
(``OP_NODE_ADD``), registered by the ``@register_opcode`` decorator it carries: that
fills ``OPCODES``, the registry used to decode submitted JSON. The registry from opcode
class to logical unit is ``extjobs.lus.LU_FOR``; a test checks the two agree.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from typing import Any, ClassVar, TypeVar

import attrs

from extjobs.errors import InputError, UnknownOpcodeError
from extjobs.model import codec
from extjobs.model.cluster import HypervisorName, check_name
from extjobs.model.volume import MAX_PROVIDER_NAME, check_params_bounds, validate_provider_name


def _names(kind: str) -> Any:
    def validate(
        _inst: object, attr: attrs.Attribute[tuple[str, ...]], values: tuple[str, ...]
    ) -> None:
        for value in values:
            check_name(kind, value, attr.name)

    return validate


def _name(kind: str) -> Any:
    def validate(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
        check_name(kind, value, attr.name)

    return validate


def _optional_name(kind: str) -> Any:
    def validate(_inst: object, attr: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None:
            check_name(kind, value, attr.name)

    return validate


#: A POSIX login name (what ``useradd`` accepts by default), at most 32 characters.
_LOGIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _login(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or _LOGIN_RE.fullmatch(value) is None:
        raise InputError(
            f"invalid login name {value!r}: letters, digits, '_', '.' and '-', at most 32, "
            "starting with a letter or '_'",
            field=attr.name,
        )


def _optional_provider(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None:
        validate_provider_name(value)


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


#: Every opcode by ``OP_ID``; filled by :func:`register_opcode` on each class below.
OPCODES: dict[str, type[OpCode]] = {}

C = TypeVar("C", bound=type[OpCode])


def register_opcode(cls: C) -> C:
    """Class decorator: add an opcode class to :data:`OPCODES` (refuses a duplicate OP_ID)."""
    if not cls.OP_ID or cls.OP_ID in OPCODES:
        raise ValueError(f"opcode {cls.__name__} has an empty or duplicate OP_ID {cls.OP_ID!r}")
    OPCODES[cls.OP_ID] = cls
    return cls


@register_opcode
@attrs.frozen
class OpClusterInit(OpCode):
    OP_ID: ClassVar[str] = "OP_CLUSTER_INIT"
    cluster_name: str = attrs.field(validator=_name("cluster name"))
    default_group: str = attrs.field(default="default", validator=_name("group name"))
    search_path: tuple[str, ...] | None = None

    def summary(self) -> str:
        return f"{self.OP_ID}({self.cluster_name})"


@register_opcode
@attrs.frozen
class OpClusterQuery(OpCode):
    OP_ID: ClassVar[str] = "OP_CLUSTER_QUERY"


@register_opcode
@attrs.frozen
class OpGroupAdd(OpCode):
    OP_ID: ClassVar[str] = "OP_GROUP_ADD"
    group_name: str = attrs.field(validator=_name("group name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.group_name})"


_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _address(_inst: object, _attr: object, value: str | None) -> None:
    """A node address is an IP address or a DNS host name (RFC 1123), nothing else."""
    if value is None:
        return
    if isinstance(value, str) and len(value) <= 253:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(value)
            return
        labels = value.removesuffix(".").split(".")
        if value and all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
            return
    raise InputError(
        f"invalid node address {value!r}: give an IP address or a host name", field="address"
    )


@register_opcode
@attrs.frozen
class OpNodeAdd(OpCode):
    OP_ID: ClassVar[str] = "OP_NODE_ADD"
    node_name: str = attrs.field(validator=_name("node name"))
    address: str | None = attrs.field(default=None, validator=_address)
    port: int = attrs.field(default=22, validator=_port)
    user: str = attrs.field(default="root", validator=_login)
    group: str | None = attrs.field(default=None, validator=_optional_name("group name"))
    #: The node's SSH host key (``ssh-ed25519 AAAA…``) to pin; or accept_new_host_key.
    host_key: str | None = None
    accept_new_host_key: bool = False
    search_path: tuple[str, ...] | None = None

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


@register_opcode
@attrs.frozen
class OpNodeRemove(OpCode):
    OP_ID: ClassVar[str] = "OP_NODE_REMOVE"
    node_name: str = attrs.field(validator=_name("node name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


@register_opcode
@attrs.frozen
class OpNodeQuery(OpCode):
    OP_ID: ClassVar[str] = "OP_NODE_QUERY"
    names: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))


@register_opcode
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


@register_opcode
@attrs.frozen
class OpExtStorageDiagnose(OpCode):
    OP_ID: ClassVar[str] = "OP_EXTSTORAGE_DIAGNOSE"
    providers: tuple[str, ...] = ()
    nodes: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))
    #: Also ask each provider valid in a group for its capacity (``storage info``).
    capacity: bool = False

    def summary(self) -> str:
        what = ",".join(self.providers) or "all providers"
        return f"{self.OP_ID}({what}@{','.join(self.nodes) or 'all nodes'})"


@register_opcode
@attrs.frozen
class OpExtStorageInstall(OpCode):
    """Copy a provider directory from the master to nodes (SFTP, modes kept)."""

    OP_ID: ClassVar[str] = "OP_EXTSTORAGE_INSTALL"
    source: str
    provider: str | None = attrs.field(default=None, validator=_optional_provider)
    nodes: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))
    group: str | None = attrs.field(default=None, validator=_optional_name("group name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.provider or self.source})"


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


# -- instances on external storage, storage pools ------------------------------------

_PROVIDER_RE = re.compile(r"[A-Za-z0-9_-]+")
_PARAM_RE = re.compile(r"[A-Za-z0-9_]+")
ACCESS_MODES = ("kernelspace", "userspace")
#: The values of :class:`HypervisorName`, in its order (the CLI offers them).
HYPERVISOR_NAMES = tuple(name.value for name in HypervisorName)


def _positive(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{attr.name} must be a whole number >= 1, not {value!r}", field=attr.name)


def _check_provider(value: object, field: str) -> None:
    if not isinstance(value, str) or not _PROVIDER_RE.fullmatch(value):
        raise InputError(
            f"invalid provider name {value!r}: only letters, digits, '_' and '-' are allowed",
            field=field,
        )
    if len(value) > MAX_PROVIDER_NAME:
        raise InputError(
            f"invalid provider name {value[:32]!r}…: {len(value)} characters, at most "
            f"{MAX_PROVIDER_NAME} (it names a directory)",
            field=field,
        )


def _provider(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    _check_provider(value, attr.name)


def _provider_or_none(_inst: object, attr: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        _check_provider(value, attr.name)


def _name_or_none(kind: str) -> Any:
    def validate(_inst: object, attr: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None:
            check_name(kind, value, attr.name)

    return validate


def _disk_params(_inst: object, _attr: object, value: dict[str, str]) -> None:
    check_params_bounds(value)
    for name, param in value.items():
        if not _PARAM_RE.fullmatch(name):
            raise InputError(
                f"invalid disk parameter name {name!r}: only letters, digits and '_'",
                field="params",
            )
        if name.lower() in ("provider", "access", "pool", "size", "name"):
            raise InputError(
                f"disk parameter {name!r} is reserved; use the disk's own field", field="params"
            )
        if not isinstance(param, str) or "\0" in param:
            raise InputError(
                f"disk parameter {name!r} must be a string without NUL", field="params"
            )


def _access(_inst: object, _attr: object, value: str) -> None:
    if value not in ACCESS_MODES:
        raise InputError(
            f"invalid access mode {value!r}: use {' or '.join(ACCESS_MODES)}", field="access"
        )


def _hypervisor(_inst: object, _attr: object, value: str) -> None:
    if value not in HYPERVISOR_NAMES:
        raise InputError(
            f"unknown hypervisor {value!r}; use {', '.join(HYPERVISOR_NAMES)}", field="hypervisor"
        )


def _index_or_name(_inst: object, attr: attrs.Attribute[int | str], value: int | str) -> None:
    if isinstance(value, bool):
        raise InputError(f"{attr.name} must be a disk index or name", field=attr.name)
    if isinstance(value, int):
        _non_negative(_inst, attr, value)
    else:
        check_name("disk name or index", value, attr.name)


@attrs.frozen
class DiskSpec:
    """One disk of an instance to create: ``provider`` or ``pool`` (or both, agreeing)."""

    size: int = attrs.field(validator=_positive)  # MiB
    provider: str | None = attrs.field(default=None, validator=_provider_or_none)
    pool: str | None = attrs.field(default=None, validator=_name_or_none("pool name"))
    name: str | None = attrs.field(default=None, validator=_name_or_none("disk name"))
    params: dict[str, str] = attrs.field(factory=dict, validator=_disk_params)
    access: str = attrs.field(default="kernelspace", validator=_access)

    def __attrs_post_init__(self) -> None:
        if self.provider is None and self.pool is None:
            raise InputError("a disk needs a provider= or a pool=", field="disks")


def _disk_specs(_inst: object, _attr: object, value: tuple[DiskSpec, ...]) -> None:
    if not value:
        raise InputError("an instance needs at least one disk", field="disks")
    names = [d.name for d in value if d.name is not None]
    if len(names) != len(set(names)):
        raise InputError("disk names must be unique within an instance", field="disks")


@register_opcode
@attrs.frozen
class OpInstanceCreate(OpCode):
    """Create the disks of a new instance on its primary node's storage, then start it."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_CREATE"
    instance_name: str = attrs.field(validator=_name("instance name"))
    disks: tuple[DiskSpec, ...] = attrs.field(validator=_disk_specs)
    #: The primary node; ``None``: chosen (``extjobs.lus.placement``).
    pnode: str | None = attrs.field(default=None, validator=_name_or_none("node name"))
    hypervisor: str = attrs.field(default=HypervisorName.FAKE.value, validator=_hypervisor)
    memory: int = attrs.field(default=64, validator=_positive)  # MiB
    vcpus: int = attrs.field(default=1, validator=_positive)
    start: bool = True
    #: Create the disks even where the provider's ``capacity`` reports too little free
    #: space (the check runs before anything is created).
    force: bool = False

    def summary(self) -> str:
        where = f" on {self.pnode}" if self.pnode else ""
        return f"{self.OP_ID}({self.instance_name}{where}, {len(self.disks)} disk(s))"


@register_opcode
@attrs.frozen
class OpInstanceRemove(OpCode):
    OP_ID: ClassVar[str] = "OP_INSTANCE_REMOVE"
    instance_name: str = attrs.field(validator=_name("instance name"))
    shutdown_timeout: float = attrs.field(default=30.0, validator=_non_negative)

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


@register_opcode
@attrs.frozen
class OpInstanceGrowDisk(OpCode):
    """Grow disk ``disk`` by ``amount`` MiB, or to ``amount`` MiB when ``absolute``."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_GROW_DISK"
    instance_name: str = attrs.field(validator=_name("instance name"))
    #: The disk's index, or its name.
    disk: int | str = attrs.field(validator=_index_or_name)
    amount: int = attrs.field(validator=_non_negative)
    absolute: bool = False

    def summary(self) -> str:
        change = f"to {self.amount} MiB" if self.absolute else f"+{self.amount} MiB"
        return f"{self.OP_ID}({self.instance_name}/disk{self.disk} {change})"


@register_opcode
@attrs.frozen
class OpInstanceStartup(OpCode):
    OP_ID: ClassVar[str] = "OP_INSTANCE_STARTUP"
    instance_name: str = attrs.field(validator=_name("instance name"))
    #: Only when the instance is still marked up when the job runs (the watcher's
    #: restarts: an operator's shutdown in between wins).
    only_if_marked_up: bool = False

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


@register_opcode
@attrs.frozen
class OpInstanceShutdown(OpCode):
    OP_ID: ClassVar[str] = "OP_INSTANCE_SHUTDOWN"
    instance_name: str = attrs.field(validator=_name("instance name"))
    timeout: float = attrs.field(default=30.0, validator=_non_negative)

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


@register_opcode
@attrs.frozen
class OpInstanceRename(OpCode):
    OP_ID: ClassVar[str] = "OP_INSTANCE_RENAME"
    instance_name: str = attrs.field(validator=_name("instance name"))
    new_name: str = attrs.field(validator=_name("instance name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name}->{self.new_name})"


#: The migration settings a cluster or node group gives its instances as defaults.
MIGRATION_FIELDS = ("max_downtime", "bandwidth", "converge_timeout")


def _migration_default(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    """A migration default: a positive number, ``0`` to clear it, or ``None``."""
    if value is None:
        return
    integer = attr.name != "converge_timeout"
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or value < 0
    ):
        raise InputError(
            f"{attr.name} must be a {'whole ' if integer else ''}number >= 0 (0: not set "
            f"here), not {value!r}",
            field=attr.name,
        )


def migration_changes(op: Any) -> list[str]:
    """``max_downtime=…`` for each migration default an opcode sets (``-``: cleared)."""
    return [
        f"{field}={getattr(op, field) or '-'}"
        for field in MIGRATION_FIELDS
        if getattr(op, field) is not None
    ]


@register_opcode
@attrs.frozen
class OpClusterSetParams(OpCode):
    """Cluster-wide settings: storage pools (pool → provider) and the hypervisor run dir."""

    OP_ID: ClassVar[str] = "OP_CLUSTER_SET_PARAMS"
    add_pools: dict[str, str] = attrs.field(factory=dict)
    remove_pools: tuple[str, ...] = attrs.field(default=(), validator=_names("pool name"))
    hv_run_dir: str | None = None
    #: Migration defaults of every instance; ``0`` clears one (back to ``[migration]``).
    max_downtime: int | None = attrs.field(default=None, validator=_migration_default)
    bandwidth: int | None = attrs.field(default=None, validator=_migration_default)
    converge_timeout: float | None = attrs.field(default=None, validator=_migration_default)

    def __attrs_post_init__(self) -> None:
        for pool, provider in self.add_pools.items():
            check_name("pool name", pool, "add_pools")
            _check_provider(provider, "add_pools")
        both = sorted(set(self.add_pools) & set(self.remove_pools))
        if both:
            raise InputError(f"pool(s) {', '.join(both)} both added and removed", field="pools")
        run_dir = self.hv_run_dir
        if run_dir is not None and (
            not run_dir or any(c in run_dir for c in ",\n\0") or ".." in run_dir.split("/")
        ):
            raise InputError(
                f"invalid hypervisor run directory {run_dir!r}: no commas, newlines or '..'",
                field="hv_run_dir",
            )

    def summary(self) -> str:
        changes = [f"+pool {p}" for p in sorted(self.add_pools)]
        changes += [f"-pool {p}" for p in self.remove_pools]
        if self.hv_run_dir is not None:
            changes.append(f"hv_run_dir={self.hv_run_dir}")
        changes += migration_changes(self)
        return f"{self.OP_ID}({', '.join(changes)})"


@register_opcode
@attrs.frozen
class OpGroupSetParams(OpCode):
    OP_ID: ClassVar[str] = "OP_GROUP_SET_PARAMS"
    group_name: str = attrs.field(validator=_name("group name"))
    connect_pools: tuple[str, ...] = attrs.field(default=(), validator=_names("pool name"))
    disconnect_pools: tuple[str, ...] = attrs.field(default=(), validator=_names("pool name"))
    #: The watcher fails the group's instances over from a dead node (after a fence).
    auto_failover: bool | None = None
    #: Migration defaults of the group's instances; ``0`` clears one (back to the
    #: cluster's).
    max_downtime: int | None = attrs.field(default=None, validator=_migration_default)
    bandwidth: int | None = attrs.field(default=None, validator=_migration_default)
    converge_timeout: float | None = attrs.field(default=None, validator=_migration_default)

    def summary(self) -> str:
        changes = [f"+pool {p}" for p in self.connect_pools]
        changes += [f"-pool {p}" for p in self.disconnect_pools]
        changes += migration_changes(self)
        return f"{self.OP_ID}({self.group_name}{': ' if changes else ''}{', '.join(changes)})"


@register_opcode
@attrs.frozen
class OpStoragePoolAdd(OpCode):
    """Add a storage pool backed by ``provider``, with default provider parameters.

    Refused unless the provider is valid in at least one node group, and unless the
    parameters are declared by its ``parameters.list`` there."""

    OP_ID: ClassVar[str] = "OP_STORAGE_POOL_ADD"
    pool_name: str = attrs.field(validator=_name("pool name"))
    provider: str = attrs.field(validator=_provider)
    params: dict[str, str] = attrs.field(factory=dict, validator=_disk_params)

    def summary(self) -> str:
        return f"{self.OP_ID}({self.pool_name})"


@register_opcode
@attrs.frozen
class OpStoragePoolModify(OpCode):
    """Set default parameters of a pool (``params``, merged over the current ones) and
    drop some (``remove_params``). Disks made before keep the parameters they got."""

    OP_ID: ClassVar[str] = "OP_STORAGE_POOL_MODIFY"
    pool_name: str = attrs.field(validator=_name("pool name"))
    params: dict[str, str] = attrs.field(factory=dict, validator=_disk_params)
    remove_params: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        both = sorted(set(self.params) & set(self.remove_params))
        if both:
            raise InputError(
                f"parameter(s) {', '.join(both)} both set and removed", field="remove_params"
            )

    def summary(self) -> str:
        return f"{self.OP_ID}({self.pool_name})"


@register_opcode
@attrs.frozen
class OpStoragePoolQuery(OpCode):
    """The pools (``names``; all when empty): provider, parameters, connected groups and
    the disks using them."""

    OP_ID: ClassVar[str] = "OP_STORAGE_POOL_QUERY"
    names: tuple[str, ...] = attrs.field(default=(), validator=_names("pool name"))


# -- verification and repair -------------------------------------------------------------


@register_opcode
@attrs.frozen
class OpClusterVerify(OpCode):
    """Compare the configuration with reality on all nodes and with the journal."""

    OP_ID: ClassVar[str] = "OP_CLUSTER_VERIFY"


@register_opcode
@attrs.frozen
class OpVolumeCleanup(OpCode):
    """Close+detach a volume on nodes, and remove it when it belongs to no instance."""

    OP_ID: ClassVar[str] = "OP_VOLUME_CLEANUP"
    volume: str = attrs.field(validator=_name("volume name"))
    detach_nodes: tuple[str, ...] = attrs.field(default=(), validator=_names("node name"))
    remove: bool = False

    def summary(self) -> str:
        return f"{self.OP_ID}({self.volume})"


# -- moving instances between nodes, node state ------------------------------------------

MIGRATION_MODES = ("live", "non-live")


def _migration_mode(_inst: object, _attr: object, value: str) -> None:
    if value not in MIGRATION_MODES:
        raise InputError(
            f"invalid migration mode {value!r}: use {' or '.join(MIGRATION_MODES)}", field="mode"
        )


def _port_or_none(_inst: object, _attr: object, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not 1 <= value <= 65535):
        raise InputError(f"port {value} is out of range 1..65535", field="migration_port")


def _positive_or_none(_inst: object, attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"{attr.name} must be a whole number >= 1, not {value!r}", field=attr.name)


def _seconds_or_none(
    _inst: object, attr: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e7
    ):
        raise InputError(
            f"{attr.name} must be a number of seconds > 0, not {value!r}", field=attr.name
        )


@register_opcode
@attrs.frozen
class OpInstanceMigrate(OpCode):
    """Move a running instance to ``target_node`` without stopping it.

    ``cleanup``: find where the guest really runs (after a failed or interrupted
    migration), make that the primary and detach the disks everywhere else.
    ``allow_failover``: fail over instead when the guest does not run or cannot migrate.
    ``migration_port``: the TCP port the target listens on (default: any free port).
    ``force``: move to a target without the memory for the instance (Ganeti's
    ``ignore_ipolicy``).
    """

    OP_ID: ClassVar[str] = "OP_INSTANCE_MIGRATE"
    instance_name: str = attrs.field(validator=_name("instance name"))
    target_node: str | None = attrs.field(default=None, validator=_name_or_none("node name"))
    mode: str = attrs.field(default="live", validator=_migration_mode)
    cleanup: bool = False
    allow_failover: bool = False
    migration_port: int | None = attrs.field(default=None, validator=_port_or_none)
    force: bool = False
    #: Migration settings (``None``: the daemon's ``[migration]`` defaults): the longest
    #: pause of the guest at the switch-over (ms), the bandwidth (MiB/s), and how long
    #: the memory transfer may run before it is cancelled (s).
    max_downtime: int | None = attrs.field(default=None, validator=_positive_or_none)
    bandwidth: int | None = attrs.field(default=None, validator=_positive_or_none)
    converge_timeout: float | None = attrs.field(default=None, validator=_seconds_or_none)

    def __attrs_post_init__(self) -> None:
        if self.cleanup and self.target_node is not None:
            raise InputError(
                "cleanup finds where the instance runs; it takes no target node",
                field="target_node",
            )

    def summary(self) -> str:
        if self.cleanup:
            return f"{self.OP_ID}({self.instance_name}, cleanup)"
        target = f" → {self.target_node}" if self.target_node else ""
        mode = "" if self.mode == "live" else f", {self.mode}"
        return f"{self.OP_ID}({self.instance_name}{target}{mode})"


@register_opcode
@attrs.frozen
class OpInstanceFailover(OpCode):
    """Stop an instance on its primary and start it on ``target_node`` (same group).

    ``ignore_consistency``: go on when the primary cannot be reached or its disks cannot
    be released there (the node is fenced first when it has a fence command).
    ``force``: start it on a target without the memory for it (``ignore_ipolicy``).
    """

    OP_ID: ClassVar[str] = "OP_INSTANCE_FAILOVER"
    instance_name: str = attrs.field(validator=_name("instance name"))
    target_node: str | None = attrs.field(default=None, validator=_name_or_none("node name"))
    ignore_consistency: bool = False
    shutdown_timeout: float = attrs.field(default=30.0, validator=_non_negative)
    force: bool = False

    def summary(self) -> str:
        target = f" → {self.target_node}" if self.target_node else ""
        forced = ", ignore consistency" if self.ignore_consistency else ""
        return f"{self.OP_ID}({self.instance_name}{target}{forced})"


def _fence_command(_inst: object, _attr: object, value: tuple[str, ...] | None) -> None:
    if value is None:
        return
    for arg in value:
        if not isinstance(arg, str) or "\0" in arg:
            raise InputError(
                "fence_command arguments must be strings without NUL", field="fence_command"
            )
    if value and not value[0]:
        raise InputError("fence_command needs a program as its first word", field="fence_command")


def _host_key_line(_inst: object, attr: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    words = value.split() if isinstance(value, str) else []
    if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-", "sk-")) or "\0" in value:
        raise InputError(
            f"invalid host key {str(value)[:60]!r}: give an OpenSSH public key line "
            "('ssh-ed25519 AAAA...')",
            field=attr.name,
        )


@register_opcode
@attrs.frozen
class OpNodeSetParams(OpCode):
    """Change a node's state: offline, drained, and the fence command run on the master.

    ``None`` leaves a field as it is; an empty ``fence_command`` removes it.
    """

    OP_ID: ClassVar[str] = "OP_NODE_SET_PARAMS"
    node_name: str = attrs.field(validator=_name("node name"))
    offline: bool | None = None
    drained: bool | None = None
    fence_command: tuple[str, ...] | None = attrs.field(default=None, validator=_fence_command)
    #: Re-pin the node's SSH host key (a reinstalled node): the key it must offer now
    #: (``ssh-ed25519 AAAA…``), or ``accept_new_host_key`` for whatever it offers.
    host_key: str | None = attrs.field(default=None, validator=_host_key_line)
    accept_new_host_key: bool = False

    def __attrs_post_init__(self) -> None:
        if self.host_key is not None and self.accept_new_host_key:
            raise InputError(
                "give host_key or accept_new_host_key, not both", field="accept_new_host_key"
            )
        if (
            self.offline is None
            and self.drained is None
            and self.fence_command is None
            and self.host_key is None
            and not self.accept_new_host_key
        ):
            raise InputError(
                "nothing to change: give offline, drained, fence_command, host_key or "
                "accept_new_host_key",
                field="node_name",
            )

    def summary(self) -> str:
        changes = [
            f"{name}={value}"
            for name, value in (("offline", self.offline), ("drained", self.drained))
            if value is not None
        ]
        if self.fence_command is not None:
            changes.append("fence command" if self.fence_command else "no fence command")
        if self.host_key is not None or self.accept_new_host_key:
            changes.append("new host key")
        return f"{self.OP_ID}({self.node_name}: {', '.join(changes)})"


@register_opcode
@attrs.frozen
class OpInstanceChangeGroup(OpCode):
    """Move an instance to a node of node group ``group_name`` (``target_node``, or one
    chosen there): a stopped one by moving its primary, a running one by live
    migration. Refused unless every disk's pool is connected and its provider valid
    there. ``force``: to a node without the memory for it."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_CHANGE_GROUP"
    instance_name: str = attrs.field(validator=_name("instance name"))
    group_name: str = attrs.field(validator=_name("group name"))
    target_node: str | None = attrs.field(default=None, validator=_name_or_none("node name"))
    force: bool = False

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name}->{self.group_name})"


# -- day-2 operations: node maintenance, instance verbs ----------------------------------


@register_opcode
@attrs.frozen
class OpNodeMigrate(OpCode):
    """Move every primary instance off ``node_name``: one job per instance, submitted as
    one batch once every instance has a valid target (else nothing is submitted).

    A running instance is live-migrated (``OP_INSTANCE_MIGRATE``, the settings passed
    on); a stopped one is failed over without being started. ``target_node``: every
    instance goes there; ``None`` (``--auto``): each one's target is chosen as by
    ``instance migrate``. ``allow_failover``: fail over an instance that cannot migrate.
    """

    OP_ID: ClassVar[str] = "OP_NODE_MIGRATE"
    node_name: str = attrs.field(validator=_name("node name"))
    target_node: str | None = attrs.field(default=None, validator=_name_or_none("node name"))
    allow_failover: bool = False
    mode: str = attrs.field(default="live", validator=_migration_mode)
    max_downtime: int | None = attrs.field(default=None, validator=_positive_or_none)
    bandwidth: int | None = attrs.field(default=None, validator=_positive_or_none)
    converge_timeout: float | None = attrs.field(default=None, validator=_seconds_or_none)

    def __attrs_post_init__(self) -> None:
        if self.target_node is not None and self.target_node == self.node_name:
            raise InputError(f"node {self.node_name} cannot be its own target", field="target_node")

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


@register_opcode
@attrs.frozen
class OpNodeEvacuate(OpCode):
    """Fail every primary instance of ``node_name`` over to other nodes (a node that is
    going away): one ``OP_INSTANCE_FAILOVER`` job per instance, one batch, submitted
    only once every instance has a valid target. Running instances are started on
    their target, stopped ones stay stopped."""

    OP_ID: ClassVar[str] = "OP_NODE_EVACUATE"
    node_name: str = attrs.field(validator=_name("node name"))
    target_node: str | None = attrs.field(default=None, validator=_name_or_none("node name"))
    ignore_consistency: bool = False
    shutdown_timeout: float = attrs.field(default=30.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.target_node is not None and self.target_node == self.node_name:
            raise InputError(f"node {self.node_name} cannot be its own target", field="target_node")

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


@register_opcode
@attrs.frozen
class OpInstanceReboot(OpCode):
    """Reboot a running instance on its primary: ask the guest to power down (ACPI,
    kvm's ``system_powerdown``), wait ``timeout`` seconds, stop it hard if it still
    runs, and start it again. ``hard``: skip the soft attempt."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_REBOOT"
    instance_name: str = attrs.field(validator=_name("instance name"))
    timeout: float = attrs.field(default=60.0, validator=_non_negative)
    hard: bool = False

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


@register_opcode
@attrs.frozen
class OpInstanceActivateDisks(OpCode):
    """Attach and open an instance's disks on its primary without starting the guest;
    the result lists each disk's device path (for repairs on the node)."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_ACTIVATE_DISKS"
    instance_name: str = attrs.field(validator=_name("instance name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


@register_opcode
@attrs.frozen
class OpInstanceDeactivateDisks(OpCode):
    """Close and detach an instance's disks on its primary; refused while its guest runs."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_DEACTIVATE_DISKS"
    instance_name: str = attrs.field(validator=_name("instance name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


# -- the watcher: auto-repair switches, fencing, pause ------------------------------------

#: ``auto_failover`` of an instance: on, off, or as its node group says.
AUTO_FAILOVER_CHOICES = ("yes", "no", "group")


def _auto_failover(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None and value not in AUTO_FAILOVER_CHOICES:
        raise InputError(
            f"auto_failover must be one of {', '.join(AUTO_FAILOVER_CHOICES)}, not {value!r}",
            field="auto_failover",
        )


@register_opcode
@attrs.frozen
class OpInstanceSetAutoRepair(OpCode):
    """What the watcher may do for an instance: restart it when its guest is found down
    (``auto_restart``), fail it over from a dead, fenced node (``auto_failover``: yes,
    no, or ``group`` for its node group's setting). ``None`` leaves a switch as it is."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_SET_AUTO_REPAIR"
    instance_name: str = attrs.field(validator=_name("instance name"))
    auto_restart: bool | None = None
    auto_failover: str | None = attrs.field(default=None, validator=_auto_failover)

    def __attrs_post_init__(self) -> None:
        if self.auto_restart is None and self.auto_failover is None:
            raise InputError(
                "nothing to change: give auto_restart or auto_failover", field="instance_name"
            )

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name})"


@register_opcode
@attrs.frozen
class OpNodeFence(OpCode):
    """Run a node's fence command on the master; once it succeeded, mark the node
    offline and fenced (its instances can then be failed over without fencing again)."""

    OP_ID: ClassVar[str] = "OP_NODE_FENCE"
    node_name: str = attrs.field(validator=_name("node name"))

    def summary(self) -> str:
        return f"{self.OP_ID}({self.node_name})"


def _pause_duration(_inst: object, _attr: object, value: float | None) -> None:
    if value is None:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 < value <= 366 * 86400
    ):
        raise InputError(
            f"duration must be a number of seconds > 0 and at most a year, not {value!r}",
            field="duration",
        )


@register_opcode
@attrs.frozen
class OpWatcherSetPause(OpCode):
    """Pause the watcher (for ``duration`` seconds; ``None``: until resumed), or resume
    it (``paused`` false). Kept in the cluster configuration: it survives a restart of
    the daemon and a change of leader."""

    OP_ID: ClassVar[str] = "OP_WATCHER_SET_PAUSE"
    paused: bool
    duration: float | None = attrs.field(default=None, validator=_pause_duration)

    def __attrs_post_init__(self) -> None:
        if not self.paused and self.duration is not None:
            raise InputError("a duration only goes with paused", field="duration")


# -- changing an existing instance: disks, memory, flags; snapshots ---------------------------

#: What ``OpInstanceSetParams.disk`` can do to a disk (Ganeti's ``--disk N:ACTION``).
DISK_ACTIONS = ("add", "remove", "detach", "attach")


def _disk_ref(_inst: object, attr: attrs.Attribute[str | None], value: str | None) -> None:
    """A disk reference: its index (digits) or its name."""
    if value is None:
        return
    if isinstance(value, str) and value.isdigit() and len(value) <= 6:
        return
    check_name("disk name or index", value, attr.name)


def _disk_action(_inst: object, _attr: object, value: str) -> None:
    if value not in DISK_ACTIONS:
        raise InputError(
            f"unknown disk action {value!r}; use {', '.join(DISK_ACTIONS)}", field="disk"
        )


@attrs.frozen
class DiskModification:
    """One change to an instance's disks (``--disk add:…``, ``--disk N:remove`` …).

    ``disk`` names an existing disk by index or name (remove, detach; attach: a detached
    disk of the instance, or of ``source_instance`` when given); ``add`` needs ``spec``
    and no ``disk``. ``new_name`` renames a disk attached from another instance.
    """

    action: str = attrs.field(validator=_disk_action)
    disk: str | None = attrs.field(default=None, validator=_disk_ref)
    spec: DiskSpec | None = None
    #: attach only: the instance the disk was detached from (default: this one).
    source_instance: str | None = attrs.field(
        default=None, validator=_optional_name("instance name")
    )
    new_name: str | None = attrs.field(default=None, validator=_optional_name("disk name"))

    def __attrs_post_init__(self) -> None:
        if self.action != "attach" and self.source_instance is not None:
            raise InputError(
                f"disk {self.action} takes no source instance (only attach:from=… does)",
                field="disk",
            )
        if self.new_name is not None and self.source_instance is None:
            raise InputError(
                "a new disk name is only given when attaching a disk of another instance",
                field="disk",
            )
        if self.new_name is not None and self.new_name.isdigit():
            raise InputError(
                f"disk name {self.new_name!r} would read as an index; use a name with a letter",
                field="disk",
            )
        if self.action == "add":
            if self.spec is None:
                raise InputError("a disk add needs size= and provider= or pool=", field="disk")
            if self.disk is not None:
                raise InputError("a disk add takes no disk index or name", field="disk")
        else:
            if self.disk is None:
                raise InputError(f"disk {self.action} needs a disk index or name", field="disk")
            if self.spec is not None:
                raise InputError(f"disk {self.action} takes no size or parameters", field="disk")


def _optional_positive(_inst: object, attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None:
        _positive(_inst, attr, value)  # type: ignore[arg-type]


@register_opcode
@attrs.frozen
class OpInstanceSetParams(OpCode):
    """Change an existing instance: one disk (hot-plugged into a running guest), its
    memory and vcpus (used at the next start), its watcher flags. ``None`` leaves a
    field as it is."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_SET_PARAMS"
    instance_name: str = attrs.field(validator=_name("instance name"))
    disk: DiskModification | None = None
    memory: int | None = attrs.field(default=None, validator=_optional_positive)  # MiB
    vcpus: int | None = attrs.field(default=None, validator=_optional_positive)
    auto_restart: bool | None = None
    auto_failover: str | None = attrs.field(default=None, validator=_auto_failover)
    #: Add the disk even where the provider reports too little free space.
    force: bool = False
    #: Seconds a running guest gets to release a disk being hot-unplugged.
    unplug_timeout: float = attrs.field(default=30.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if (
            self.disk is None
            and self.memory is None
            and self.vcpus is None
            and self.auto_restart is None
            and self.auto_failover is None
        ):
            raise InputError(
                "nothing to change: give disk, memory, vcpus, auto_restart or auto_failover",
                field="instance_name",
            )
        if self.disk is not None and self.disk.source_instance == self.instance_name:
            raise InputError(
                f"disk {self.disk.disk} is to be attached from {self.instance_name} itself; "
                f"use --disk {self.disk.disk}:attach",
                field="disk",
            )

    def summary(self) -> str:
        what = f"/{self.disk.action}" if self.disk is not None else ""
        if self.disk is not None and self.disk.source_instance is not None:
            what += f" from {self.disk.source_instance}"
        return f"{self.OP_ID}({self.instance_name}{what})"


@register_opcode
@attrs.frozen
class OpInstanceSnapshot(OpCode):
    """Snapshot the disks of an instance (one disk when ``disk`` names it) through the
    provider's ``snapshot`` script, the guest's I/O frozen meanwhile."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_SNAPSHOT"
    instance_name: str = attrs.field(validator=_name("instance name"))
    snapshot_name: str = attrs.field(validator=_name("snapshot name"))
    disk: str | None = attrs.field(default=None, validator=_disk_ref)

    def summary(self) -> str:
        return f"{self.OP_ID}({self.instance_name}:{self.snapshot_name})"
