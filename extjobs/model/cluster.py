"""Cluster configuration objects: cluster, node groups, nodes, instances, disks.

All frozen; a change is a new object (``attrs.evolve``) and a new
:class:`ClusterConfig`. The engine applies changes with a function from the current
config to the next one, so concurrent LUs never overwrite each other's updates.
"""

from __future__ import annotations

import enum
import re
from typing import Any

import attrs

from extjobs.errors import InputError
from extjobs.model.remote import Endpoint

#: An object name, matched whole (``fullmatch``: ``$`` would accept a final newline).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_name(kind: str, value: str, field: str | None = None) -> str:
    """Return ``value`` if it is a valid object name, else raise InputError naming the field."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        raise InputError(
            f"invalid {kind} {value!r}: use letters, digits, '.', '_' and '-' "
            "(at most 63, starting with a letter or digit)",
            field=field or kind.replace(" ", "_"),
        )
    return value


def _name_validator(kind: str) -> Any:
    def validate(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
        check_name(kind, value, attr.name)

    return validate


@attrs.frozen
class Cluster:
    name: str = attrs.field(validator=_name_validator("cluster name"))
    created: float = 0.0
    #: ExtStorage search path for every node that does not override it.
    search_path: tuple[str, ...] | None = None
    #: Storage pools: pool name → provider name.
    pools: dict[str, str] = attrs.field(factory=dict)
    #: Default provider parameters per pool (pool name → name → value), merged under a
    #: disk's own parameters when the disk is created. A pool without defaults has no
    #: entry; configurations stored before pools had parameters read as empty.
    pool_params: dict[str, dict[str, str]] = attrs.field(factory=dict)
    default_group: str = "default"
    #: Where hypervisors keep pid files and control sockets on each node, as
    #: ``<hv_run_dir>/<node>/``; relative to the node user's login directory unless
    #: absolute. ``None``: ``run/extjobs``.
    hv_run_dir: str | None = None
    #: The watcher is paused (``extjobs watcher pause``): it observes, and acts on
    #: nothing, until ``watcher_paused_until`` (``None``: until resumed).
    watcher_paused: bool = False
    watcher_paused_until: float | None = None
    #: Defaults of a live migration's settings for every instance (``cluster modify
    #: --max-downtime …``); ``None``: the daemon's ``[migration]`` section. A node
    #: group's own values win over these, an opcode's over both.
    max_downtime: int | None = None  # ms
    bandwidth: int | None = None  # MiB/s
    converge_timeout: float | None = None  # s


@attrs.frozen
class NodeGroup:
    name: str = attrs.field(validator=_name_validator("group name"))
    pools: tuple[str, ...] = ()
    #: The watcher fails the instances of a dead node over (after its fence succeeded).
    auto_failover: bool = False
    #: Defaults of a live migration's settings for the group's instances (``group
    #: modify --max-downtime …``); ``None``: the cluster's.
    max_downtime: int | None = None  # ms
    bandwidth: int | None = None  # MiB/s
    converge_timeout: float | None = None  # s


@attrs.frozen
class Node:
    name: str = attrs.field(validator=_name_validator("node name"))
    host: str
    port: int = 22
    user: str = "root"
    host_key: str | None = None
    group: str = "default"
    offline: bool = False
    drained: bool = False
    #: Per-node override of the ExtStorage search path.
    search_path: tuple[str, ...] | None = None
    #: Command run on the master to power the node off when it must be fenced.
    fence_command: tuple[str, ...] | None = None
    #: The node was fenced (``node fence``) when it was marked offline: nothing runs or
    #: holds a disk there, so a failover from it does not fence it again. Cleared when
    #: the node is marked online.
    fenced: bool = False

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            name=self.name, host=self.host, port=self.port, user=self.user, host_key=self.host_key
        )


@attrs.frozen
class Disk:
    uuid: str
    index: int
    size: int  # MiB
    provider: str
    pool: str | None = None
    name: str | None = None
    params: dict[str, str] = attrs.field(factory=dict)
    access: str = "kernelspace"
    #: The provider's name of the volume when it is not ``<uuid>.ext.disk<index>``: a
    #: disk attached from another instance at another index keeps addressing the
    #: volume it was created as.
    volume: str | None = None

    @property
    def volume_name(self) -> str:
        return self.volume or f"{self.uuid}.ext.disk{self.index}"


@attrs.frozen
class Snapshot:
    """A provider snapshot of one disk (``instance snapshot``)."""

    name: str
    disk_uuid: str
    size: int  # MiB
    created: float = 0.0
    #: How the guest's I/O was made consistent: ``fsfreeze``, ``pause`` or ``none``.
    frozen_by: str = "none"


class HypervisorName(enum.Enum):
    """The hypervisor backends (``extjobs.hypervisors``); configs, opcodes and the API
    carry the value, a plain string."""

    FAKE = "fake"
    KVM = "kvm"


@attrs.frozen
class Instance:
    name: str = attrs.field(validator=_name_validator("instance name"))
    primary: str
    hypervisor: str = HypervisorName.FAKE.value
    memory: int = 64  # MiB
    vcpus: int = 1
    admin_up: bool = True
    disks: tuple[Disk, ...] = ()
    uuid: str = ""
    #: Disks whose removal failed, by disk uuid, with what failed. A non-empty map
    #: means the instance is being removed: its remaining ``disks`` need cleanup and
    #: ``instance remove`` tries again.
    cleanup: dict[str, str] = attrs.field(factory=dict)
    #: The watcher restarts this instance when it should run and does not.
    auto_restart: bool = True
    #: Per-instance override of its group's ``auto_failover``; ``None``: the group's.
    auto_failover: bool | None = None
    #: Disks detached from the instance but kept (``instance modify --disk N:detach``).
    detached_disks: tuple[Disk, ...] = ()
    #: Snapshots taken of the instance's disks, oldest first.
    snapshots: tuple[Snapshot, ...] = ()
    #: The disks were activated on the primary (``instance activate-disks``) and are
    #: meant to stay attached and open there while the guest is stopped (a repair on
    #: the node): verify leaves them attached, and moves refuse until they are
    #: deactivated. Cleared by ``deactivate-disks`` and by a shutdown.
    disks_active: bool = False


@attrs.frozen
class ClusterConfig:
    cluster: Cluster | None = None
    groups: dict[str, NodeGroup] = attrs.field(factory=dict)
    nodes: dict[str, Node] = attrs.field(factory=dict)
    instances: dict[str, Instance] = attrs.field(factory=dict)
    serial: int = 0

    def node(self, name: str) -> Node:
        from extjobs.errors import NotFoundError

        try:
            return self.nodes[name]
        except KeyError:
            raise NotFoundError(f"unknown node {name!r}", node=name) from None

    def with_node(self, node: Node) -> ClusterConfig:
        return attrs.evolve(self, nodes={**self.nodes, node.name: node})

    def without_node(self, name: str) -> ClusterConfig:
        return attrs.evolve(self, nodes={k: v for k, v in self.nodes.items() if k != name})

    def with_group(self, group: NodeGroup) -> ClusterConfig:
        return attrs.evolve(self, groups={**self.groups, group.name: group})

    def with_instance(self, instance: Instance) -> ClusterConfig:
        return attrs.evolve(self, instances={**self.instances, instance.name: instance})

    def without_instance(self, name: str) -> ClusterConfig:
        return attrs.evolve(self, instances={k: v for k, v in self.instances.items() if k != name})

    def search_path_for(self, node: Node, default: tuple[str, ...]) -> tuple[str, ...]:
        if node.search_path:
            return node.search_path
        if self.cluster is not None and self.cluster.search_path:
            return self.cluster.search_path
        return default

    def online_nodes(self, group: str | None = None) -> list[Node]:
        return [
            n
            for n in sorted(self.nodes.values(), key=lambda n: n.name)
            if not n.offline and (group is None or n.group == group)
        ]

    # -- instances, groups and pools (instance LUs) ------------------------------------

    def instance(self, name: str) -> Instance:
        """The instance called ``name``; raises NotFoundError naming the known ones."""
        from extjobs.errors import NotFoundError

        try:
            return self.instances[name]
        except KeyError:
            raise NotFoundError(f"unknown instance {name!r}", instance=name) from None

    def group(self, name: str) -> NodeGroup:
        from extjobs.errors import NotFoundError

        try:
            return self.groups[name]
        except KeyError:
            raise NotFoundError(f"unknown node group {name!r}", group=name) from None

    def disks_in_pool(self, pool: str, group: str | None = None) -> list[str]:
        """``instance/disk<N>`` for every disk in ``pool`` (only instances whose primary
        node is in ``group``, when given), sorted."""
        found: list[str] = []
        for inst in self.instances.values():
            node = self.nodes.get(inst.primary)
            if group is not None and (node is None or node.group != group):
                continue
            found.extend(f"{inst.name}/disk{d.index}" for d in inst.disks if d.pool == pool)
        return sorted(found)
