"""Cluster-wide opcodes: init, query, node groups."""

from __future__ import annotations

import time
from typing import Any

import attrs

from extjobs.errors import PrerequisiteError
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.model import codec
from extjobs.model.cluster import Cluster, ClusterConfig, NodeGroup
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpClusterInit, OpClusterQuery, OpGroupAdd


def require_cluster(config: ClusterConfig) -> Cluster:
    if config.cluster is None:
        raise PrerequisiteError("the cluster is not initialised; run 'extjobs cluster init NAME'")
    return config.cluster


class LUClusterInit(LogicalUnit[OpClusterInit]):
    OPCODE = OpClusterInit

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        if config.cluster is not None:
            raise PrerequisiteError(
                f"the cluster is already initialised as {config.cluster.name!r}",
                cluster=config.cluster.name,
            )

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        cluster = Cluster(
            name=op.cluster_name,
            created=time.time(),
            search_path=op.search_path,
            default_group=op.default_group,
        )

        def change(cfg: ClusterConfig) -> ClusterConfig:
            cfg = attrs.evolve(cfg, cluster=cluster)
            return (
                cfg
                if op.default_group in cfg.groups
                else cfg.with_group(NodeGroup(op.default_group))
            )

        ctx.update_config(change)
        ctx.log(f"cluster {op.cluster_name} initialised with node group {op.default_group}")
        return {"cluster": op.cluster_name, "default_group": op.default_group}


class LUClusterQuery(LogicalUnit[OpClusterQuery]):
    OPCODE = OpClusterQuery

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        return {
            "cluster": codec.unstructure(cfg.cluster),
            "groups": sorted(cfg.groups),
            "nodes": len(cfg.nodes),
            "instances": len(cfg.instances),
        }


class LUGroupAdd(LogicalUnit[OpGroupAdd]):
    OPCODE = OpGroupAdd

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(), LockRequest.group(self.op.group_name)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)
        if self.op.group_name in config.groups:
            raise PrerequisiteError(
                f"node group {self.op.group_name!r} already exists", group=self.op.group_name
            )

    async def exec(self, ctx: StepContext) -> Any:
        ctx.update_config(lambda cfg: cfg.with_group(NodeGroup(self.op.group_name)))
        ctx.log(f"node group {self.op.group_name} added")
        return {"group": self.op.group_name}
