"""Node opcodes: add (pinning the SSH host key), remove, query."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from extjobs.errors import HostKeyError, NotFoundError, PrerequisiteError
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.cluster import require_cluster
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig, Node
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import OpNodeAdd, OpNodeQuery, OpNodeRemove
from extjobs.model.remote import RemoteCommand, fingerprint
from extjobs.model.steps import Step


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


def _host_key(host: str) -> str:
    """``host`` as compared between nodes: an IP address in its canonical form, a
    host name in lower case without a trailing dot."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().rstrip(".")


def _refuse_same_endpoint(config: ClusterConfig, name: str, host: str, port: int) -> None:
    """Raise :class:`PrerequisiteError` naming the node that already is ``host:port``.

    Two names for one SSH endpoint would let jobs think one machine is two: a disk
    "detached on node A" would still be attached on "node B", and failover from one to
    the other would move nothing."""
    for other in config.nodes.values():
        if other.port == port and _host_key(other.host) == _host_key(host):
            raise PrerequisiteError(
                f"node {other.name} already is {other.host}:{other.port}; refusing to add "
                f"the same host and port again as node {name}",
                node=name,
                existing=other.name,
                host=host,
                port=port,
            )


def node_summary(
    node: Node, config: ClusterConfig, *, instances: Sequence[str] | None = None
) -> dict[str, Any]:
    """The API's view of a node; ``instances``: the names of the instances whose
    primary it is, sorted, when the caller has them (a listing of every node: found by
    one pass over the instances, not one per node)."""
    data: dict[str, Any] = dict(codec.unstructure(node))
    data["host_key_fingerprint"] = fingerprint(node.host_key) if node.host_key else None
    data["instances"] = (
        sorted(i.name for i in config.instances.values() if i.primary == node.name)
        if instances is None
        else list(instances)
    )
    return data


class LUNodeAdd(LogicalUnit[OpNodeAdd]):
    OPCODE = OpNodeAdd

    def _group(self, config: ClusterConfig) -> str:
        cluster = require_cluster(config)
        return self.op.group or cluster.default_group

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [
            LockRequest.cluster(),
            LockRequest.group(self._group(config) if config.cluster else "default"),
            LockRequest.node(self.op.node_name),
        ]

    def check(self, config: ClusterConfig) -> None:
        group = self._group(config)
        if self.op.node_name in config.nodes:
            raise PrerequisiteError(
                f"node {self.op.node_name!r} is already in the cluster", node=self.op.node_name
            )
        if group not in config.groups:
            raise NotFoundError(f"node group {group!r} does not exist", field="group", group=group)
        op = self.op
        _refuse_same_endpoint(config, op.node_name, op.address or op.node_name, op.port)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        host = op.address or op.node_name
        offered = await ctx.fetch_host_key(host, op.port, node=op.node_name)
        fp = fingerprint(offered)
        ctx.log(f"node {op.node_name} ({host}:{op.port}) offers host key {fp}")
        if op.host_key is not None:
            if not _same_key(op.host_key, offered):
                raise HostKeyError(
                    f"host key of node {op.node_name} is {fp}, not the given "
                    f"{fingerprint(op.host_key)}; refusing to add it",
                    node=op.node_name,
                    offered=fp,
                )
            pinned = op.host_key
        elif op.accept_new_host_key:
            pinned = offered
        else:
            raise HostKeyError(
                f"node {op.node_name} offers host key {fp} ({offered.split()[0]}); confirm it "
                f"by passing it as host_key (CLI: --host-key '{' '.join(offered.split()[:2])}') "
                "or accept it with accept_new_host_key (CLI: --accept-new-host-key)",
                node=op.node_name,
                offered=fp,
                host_key=" ".join(offered.split()[:2]),
            )
        node = Node(
            name=op.node_name,
            host=host,
            port=op.port,
            user=op.user,
            host_key=" ".join(pinned.split()[:2]),
            group=self._group(ctx.config),
            search_path=op.search_path,
        )
        result = await ctx.run(
            Step(
                node=node.name,
                description="check login",
                command=RemoteCommand(
                    argv=("uname", "-n"),
                    env={"PATH": "/usr/bin:/bin"},
                    timeout=ctx.options.ssh.login_timeout,
                ),
                endpoint=node.endpoint,
            )
        )

        def add(cfg: ClusterConfig) -> ClusterConfig:
            # Checked again at the change: another node add (another group, another
            # name, so other locks) may have taken this endpoint meanwhile.
            _refuse_same_endpoint(cfg, node.name, node.host, node.port)
            return cfg.with_node(node)

        ctx.update_config(add)
        ctx.log(f"node {node.name} added to group {node.group}, host key {fp} pinned")
        return {
            "node": node.name,
            "group": node.group,
            "host_key_fingerprint": fp,
            "hostname": result.stdout.strip(),
        }


class LUNodeRemove(LogicalUnit[OpNodeRemove]):
    OPCODE = OpNodeRemove

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(), LockRequest.node(self.op.node_name)]

    def check(self, config: ClusterConfig) -> None:
        config.node(self.op.node_name)
        used = sorted(i.name for i in config.instances.values() if i.primary == self.op.node_name)
        if used:
            raise PrerequisiteError(
                f"node {self.op.node_name} is still primary of: {', '.join(used)}",
                node=self.op.node_name,
            )

    async def exec(self, ctx: StepContext) -> Any:
        ctx.update_config(lambda cfg: cfg.without_node(self.op.node_name))
        ctx.log(f"node {self.op.node_name} removed")
        return {"node": self.op.node_name}


class LUNodeQuery(LogicalUnit[OpNodeQuery]):
    OPCODE = OpNodeQuery

    def check(self, config: ClusterConfig) -> None:
        for name in self.op.names:
            config.node(name)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        names = self.op.names or tuple(sorted(cfg.nodes))
        return [node_summary(cfg.nodes[n], cfg) for n in names]
