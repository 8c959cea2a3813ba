"""Storage pools and cluster settings: ``cluster modify`` and ``group modify``.

A pool is a cluster-wide name for a provider (``pool → provider``); a node group
offers the pools connected to it. A disk asked for with ``pool=NAME`` uses the pool's
provider, and only on a node whose group has the pool connected. A pool is never
removed or disconnected while a disk uses it: the refusal names those disks.
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import NotFoundError, PrerequisiteError
from extjobs.hypervisors.base import run_dir_for
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.cluster import require_cluster
from extjobs.model.cluster import ClusterConfig
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpClusterSetParams, OpGroupSetParams


def _in_use(disks: list[str], what: str) -> PrerequisiteError:
    shown = ", ".join(disks[:20]) + (f" and {len(disks) - 20} more" if len(disks) > 20 else "")
    return PrerequisiteError(f"{what}: still used by {shown}", disks=disks)


class LUClusterSetParams(LogicalUnit[OpClusterSetParams]):
    OPCODE = OpClusterSetParams

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        op = self.op
        cluster = require_cluster(config)
        for pool, provider in op.add_pools.items():
            known = cluster.pools.get(pool)
            if known is not None and known != provider:
                raise PrerequisiteError(
                    f"storage pool {pool!r} already exists with provider {known!r}; "
                    "remove it first to change its provider",
                    pool=pool,
                )
        for pool in op.remove_pools:
            if pool not in cluster.pools:
                raise NotFoundError(
                    f"unknown storage pool {pool!r} (known pools: "
                    f"{', '.join(sorted(cluster.pools)) or 'none'})",
                    pool=pool,
                )
            used = config.disks_in_pool(pool)
            if used:
                raise _in_use(used, f"cannot remove storage pool {pool!r}")
        if op.hv_run_dir is not None:
            probe = attrs.evolve(cluster, hv_run_dir=op.hv_run_dir)
            run_dir_for(probe, "node")
            running = sorted(i.name for i in config.instances.values() if i.admin_up)
            if running and op.hv_run_dir != cluster.hv_run_dir:
                raise PrerequisiteError(
                    "cannot move the hypervisor run directory while instances are up "
                    f"({', '.join(running)}): their guests keep their files in the old one",
                    instances=running,
                )

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op

        def change(config: ClusterConfig) -> ClusterConfig:
            cluster = require_cluster(config)
            pools = {k: v for k, v in cluster.pools.items() if k not in op.remove_pools}
            pools.update(op.add_pools)
            run_dir = cluster.hv_run_dir if op.hv_run_dir is None else op.hv_run_dir
            config = attrs.evolve(
                config, cluster=attrs.evolve(cluster, pools=pools, hv_run_dir=run_dir)
            )
            for group in list(config.groups.values()):
                kept = tuple(p for p in group.pools if p not in op.remove_pools)
                if kept != group.pools:
                    config = config.with_group(attrs.evolve(group, pools=kept))
            return config

        cfg = ctx.update_config(change)
        for pool, provider in sorted(op.add_pools.items()):
            ctx.log(f"storage pool {pool} → provider {provider}")
        for pool in op.remove_pools:
            ctx.log(f"storage pool {pool} removed (and disconnected from every group)")
        if op.hv_run_dir is not None:
            ctx.log(f"hypervisor run directory: {op.hv_run_dir}")
        assert cfg.cluster is not None
        return {"pools": dict(cfg.cluster.pools), "hv_run_dir": cfg.cluster.hv_run_dir}


class LUGroupSetParams(LogicalUnit[OpGroupSetParams]):
    OPCODE = OpGroupSetParams

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(), LockRequest.group(self.op.group_name)]

    def check(self, config: ClusterConfig) -> None:
        op = self.op
        cluster = require_cluster(config)
        group = config.group(op.group_name)
        for pool in op.connect_pools:
            if pool not in cluster.pools:
                raise NotFoundError(
                    f"unknown storage pool {pool!r} (known pools: "
                    f"{', '.join(sorted(cluster.pools)) or 'none'}); add it with "
                    f"'extjobs cluster modify --add-pool {pool} PROVIDER'",
                    pool=pool,
                )
        for pool in op.disconnect_pools:
            if pool not in group.pools:
                raise PrerequisiteError(
                    f"storage pool {pool!r} is not connected to node group {group.name}",
                    pool=pool,
                    group=group.name,
                )
            used = config.disks_in_pool(pool, group.name)
            if used:
                raise _in_use(used, f"cannot disconnect pool {pool!r} from group {group.name}")

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op

        def change(config: ClusterConfig) -> ClusterConfig:
            group = config.group(op.group_name)
            pools = [p for p in group.pools if p not in op.disconnect_pools]
            pools += [p for p in op.connect_pools if p not in pools]
            return config.with_group(attrs.evolve(group, pools=tuple(pools)))

        cfg = ctx.update_config(change)
        pools = cfg.group(op.group_name).pools
        ctx.log(f"node group {op.group_name} offers pools: {', '.join(pools) or 'none'}")
        return {"group": op.group_name, "pools": list(pools)}
