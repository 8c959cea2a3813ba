"""Storage pools and cluster settings: ``storage pool …``, ``cluster modify`` and
``group modify``.

A pool is a cluster-wide name for a provider (``pool → provider``) with default
provider parameters; a node group offers the pools connected to it. A disk asked for
with ``pool=NAME`` uses the pool's provider, gets the pool's parameters under its own
(the disk's win) and records the pool; it can only be placed on a node whose group has
the pool connected. The parameters are copied into the disk when it is created, so
changing a pool later changes only the disks created after.

Checks against the nodes: a pool is added only for a provider valid in at least one
node group (valid on every online node of it), and connected only to a group where its
provider is valid on every online node; its parameters must be declared by the
provider's ``parameters.list`` there. A pool is never removed or disconnected while a
disk uses it: the refusal names those disks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from extjobs.errors import InputError, NotFoundError, PrerequisiteError
from extjobs.extstorage.diagnose import GroupProviderStatus, ProviderStatus, summarise_groups
from extjobs.extstorage.parameters import check_params
from extjobs.hypervisors.base import run_dir_for
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.capacity import group_capacity, shown
from extjobs.lus.cluster import require_cluster
from extjobs.lus.instance_storage import diagnose_on, validate_in_group
from extjobs.model.cluster import ClusterConfig, Disk
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import (
    MIGRATION_FIELDS,
    DiskSpec,
    OpClusterSetParams,
    OpGroupSetParams,
    OpStoragePoolAdd,
    OpStoragePoolModify,
    OpStoragePoolQuery,
)


def pool_provider(config: ClusterConfig, pool: str) -> str:
    """The provider of ``pool``; raises NotFoundError naming the known pools."""
    cluster = require_cluster(config)
    try:
        return cluster.pools[pool]
    except KeyError:
        known = ", ".join(sorted(cluster.pools)) or "none"
        raise NotFoundError(
            f"unknown storage pool {pool!r} (known pools: {known})", pool=pool
        ) from None


def _install_hint(provider: str, group: str = "GROUP") -> str:
    return (
        f"install it with 'extjobs storage install DIR --group {group}' and see why with "
        f"'extjobs storage diagnose {provider}'"
    )


def _common_parameters(declared: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The parameters every one of ``declared`` has (descriptions from the first)."""
    lists = list(declared)
    if not lists:
        return {}
    return {k: v for k, v in lists[0].items() if all(k in d for d in lists)}


async def provider_in_groups(ctx: StepContext, provider: str) -> dict[str, GroupProviderStatus]:
    """``provider`` diagnosed on every online node, summed up per node group."""
    cfg = ctx.config
    nodes = cfg.online_nodes()
    per_node = await diagnose_on(ctx, nodes, [provider])
    groups = summarise_groups(
        per_node,
        {n.name: n.group for n in nodes},
        offline=[n.name for n in cfg.nodes.values() if n.offline],
    )
    return {g: st[provider] for g, st in sorted(groups.items()) if provider in st}


def _require_valid_somewhere(
    provider: str, statuses: Mapping[str, GroupProviderStatus]
) -> list[str]:
    """The groups where ``provider`` is valid; raises PrerequisiteError with every
    group's per-node reasons when there is none."""
    valid = [g for g, st in statuses.items() if st.valid]
    if valid:
        return valid
    why = "; ".join(
        f"group {g}: " + ", ".join(f"{n}: {r}" for n, r in st.reasons.items())
        for g, st in statuses.items()
    )
    raise PrerequisiteError(
        f"provider {provider!r} is valid in no node group"
        + (f" ({why})" if why else " (no online node answered)")
        + f"; {_install_hint(provider)}",
        provider=provider,
        reasons={g: dict(st.reasons) for g, st in statuses.items()},
    )


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
            params = {k: v for k, v in cluster.pool_params.items() if k in pools}
            run_dir = cluster.hv_run_dir if op.hv_run_dir is None else op.hv_run_dir
            config = attrs.evolve(
                config,
                cluster=attrs.evolve(
                    cluster,
                    pools=pools,
                    pool_params=params,
                    hv_run_dir=run_dir,
                    **migration_values(cluster, op),
                ),
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
        log_migration_defaults(ctx, "cluster", cfg.cluster, op, "the daemon's [migration]")
        return {
            "pools": dict(cfg.cluster.pools),
            "hv_run_dir": cfg.cluster.hv_run_dir,
            "migration": {f: getattr(cfg.cluster, f) for f in MIGRATION_FIELDS},
        }


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
        cfg = ctx.config
        cluster = require_cluster(cfg)
        new = [p for p in op.connect_pools if p not in cfg.group(op.group_name).pools]
        for pool in new:
            await check_pool_in_group(ctx, pool, cluster.pools[pool], op.group_name)

        def change(config: ClusterConfig) -> ClusterConfig:
            group = config.group(op.group_name)
            pools = [p for p in group.pools if p not in op.disconnect_pools]
            pools += [p for p in op.connect_pools if p not in pools]
            auto = group.auto_failover if op.auto_failover is None else op.auto_failover
            return config.with_group(
                attrs.evolve(
                    group,
                    pools=tuple(pools),
                    auto_failover=auto,
                    **migration_values(group, op),
                )
            )

        cfg = ctx.update_config(change)
        group = cfg.group(op.group_name)
        pools = group.pools
        ctx.log(f"node group {op.group_name} offers pools: {', '.join(pools) or 'none'}")
        if op.auto_failover is not None:
            ctx.log(
                f"node group {op.group_name}: automatic failover "
                + (
                    "on (a dead node is fenced, then its instances fail over)"
                    if group.auto_failover
                    else "off"
                )
            )
        log_migration_defaults(ctx, f"node group {group.name}", group, op, "the cluster's")
        return {
            "group": op.group_name,
            "pools": list(pools),
            "auto_failover": group.auto_failover,
            "migration": {f: getattr(group, f) for f in MIGRATION_FIELDS},
        }


def migration_values(holder: Any, op: Any) -> dict[str, Any]:
    """The migration defaults ``holder`` (cluster or group) gets from ``op``: its value
    where the opcode gives one, ``None`` where it gives 0 (cleared), else as it was."""
    return {
        f: (getattr(op, f) or None) if getattr(op, f) is not None else getattr(holder, f)
        for f in MIGRATION_FIELDS
    }


def log_migration_defaults(
    ctx: StepContext, where: str, holder: Any, op: Any, fallback: str
) -> None:
    for field in MIGRATION_FIELDS:
        if getattr(op, field) is None:
            continue
        value = getattr(holder, field)
        shown = f"{value:g}" if value is not None else f"not set (from {fallback})"
        ctx.log(f"{where}: migration {field.replace('_', ' ')} {shown}")


async def check_pool_in_group(ctx: StepContext, pool: str, provider: str, group: str) -> None:
    """Refuse (PrerequisiteError) unless ``provider`` is valid on every online node of
    ``group`` and declares the pool's parameters there; the error names each node and
    its reason, and what to run. A group without an online node has nothing to check
    the provider on: the pool is connected (valid on every one of no nodes) and
    ``instance add`` checks the provider on the nodes the group has by then."""
    if not ctx.config.online_nodes(group):
        ctx.log(
            f"node group {group} has no online node to check provider {provider} on; "
            "instance add will check it there"
        )
        return
    try:
        reports = await validate_in_group(ctx, group, [provider])
    except PrerequisiteError as exc:
        raise exc.restated(
            f"cannot connect storage pool {pool!r} to node group {group}: {exc.message}; "
            f"{_install_hint(provider, group)}"
        ) from exc
    params = require_cluster(ctx.config).pool_params.get(pool, {})
    check_params(
        provider, params, _common_parameters(r[provider].parameters for r in reports.values())
    )


class LUStoragePoolAdd(LogicalUnit[OpStoragePoolAdd]):
    """Add a pool: its provider must be valid in some node group, and declare the
    pool's parameters in every group where it is valid."""

    OPCODE = OpStoragePoolAdd

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        cluster = require_cluster(config)
        known = cluster.pools.get(self.op.pool_name)
        if known is not None:
            raise PrerequisiteError(
                f"storage pool {self.op.pool_name!r} already exists (provider {known!r}); "
                "change its parameters with 'extjobs storage pool modify'",
                pool=self.op.pool_name,
            )

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        statuses = await provider_in_groups(ctx, op.provider)
        valid = _require_valid_somewhere(op.provider, statuses)
        check_params(
            op.provider, op.params, _common_parameters(statuses[g].parameters for g in valid)
        )

        def change(config: ClusterConfig) -> ClusterConfig:
            cluster = require_cluster(config)
            pool_params = dict(cluster.pool_params)
            if op.params:
                pool_params[op.pool_name] = dict(op.params)
            return attrs.evolve(
                config,
                cluster=attrs.evolve(
                    cluster,
                    pools={**cluster.pools, op.pool_name: op.provider},
                    pool_params=pool_params,
                ),
            )

        ctx.update_config(change)
        ctx.log(
            f"storage pool {op.pool_name} → provider {op.provider} (valid in "
            f"{', '.join(valid)}); connect it with "
            f"'extjobs storage pool connect {op.pool_name} GROUP'"
        )
        return {
            "pool": op.pool_name,
            "provider": op.provider,
            "params": dict(op.params),
            "valid_groups": valid,
        }


class LUStoragePoolModify(LogicalUnit[OpStoragePoolModify]):
    """Change a pool's default parameters. Disks already made keep theirs."""

    OPCODE = OpStoragePoolModify

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        pool_provider(config, self.op.pool_name)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        cfg = ctx.config
        cluster = require_cluster(cfg)
        provider = pool_provider(cfg, op.pool_name)
        params = {
            k: v
            for k, v in {**cluster.pool_params.get(op.pool_name, {}), **op.params}.items()
            if k not in op.remove_params
        }
        if op.params:
            statuses = await provider_in_groups(ctx, provider)
            connected = [g.name for g in cfg.groups.values() if op.pool_name in g.pools]
            # Where the pool is offered; before it is connected, wherever it could be.
            where = [g for g in connected if g in statuses] or _require_valid_somewhere(
                provider, statuses
            )
            check_params(
                provider, params, _common_parameters(statuses[g].parameters for g in where)
            )

        def change(config: ClusterConfig) -> ClusterConfig:
            cl = require_cluster(config)
            pool_params = {k: v for k, v in cl.pool_params.items() if k != op.pool_name}
            if params:
                pool_params[op.pool_name] = params
            return attrs.evolve(config, cluster=attrs.evolve(cl, pool_params=pool_params))

        cfg = ctx.update_config(change)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "none"
        ctx.log(f"storage pool {op.pool_name}: parameters {shown}")
        used = cfg.disks_in_pool(op.pool_name)
        note = None
        if used:
            note = (
                f"{len(used)} disk(s) already in pool {op.pool_name} keep the parameters "
                "they were created with; only disks created from now on get these"
            )
            ctx.log(note)
        return {"pool": op.pool_name, "params": params, "in_use": used, "note": note}


def pool_summary(config: ClusterConfig, pool: str) -> dict[str, Any]:
    """What ``storage pool list|info`` shows of one pool (capacity aside)."""
    cluster = require_cluster(config)
    return {
        "pool": pool,
        "provider": cluster.pools[pool],
        "params": dict(cluster.pool_params.get(pool, {})),
        "groups": sorted(g.name for g in config.groups.values() if pool in g.pools),
        "disks": config.disks_in_pool(pool),
    }


class LUStoragePoolQuery(LogicalUnit[OpStoragePoolQuery]):
    OPCODE = OpStoragePoolQuery

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.SHARED)]

    def check(self, config: ClusterConfig) -> None:
        for name in self.op.names:
            pool_provider(config, name)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        cluster = require_cluster(cfg)
        names = self.op.names or tuple(sorted(cluster.pools))
        out = {name: pool_summary(cfg, name) for name in names}
        for name in names:
            provider = cluster.pools[name]
            capacity: dict[str, Any] = {}
            for group in out[name]["groups"]:
                per_node = await diagnose_on(ctx, cfg.online_nodes(group), [provider])
                found = {
                    n: r[provider]
                    for n, r in per_node.items()
                    if isinstance(r, Mapping) and provider in r
                }
                capacity[group] = await group_capacity(
                    ctx, found, cluster.pool_params.get(name, {})
                )
                ctx.log(f"pool {name} in group {group}: {shown(capacity[group])}")
            out[name]["capacity"] = capacity
        return {"pools": out}


# -- disks from pools (instance add) ---------------------------------------------------


def resolve_disk(
    config: ClusterConfig, spec: DiskSpec, index: int, group: str
) -> tuple[str, str | None]:
    """``(provider, pool)`` of a requested disk; raises for an unknown or unconnected pool."""
    cluster = require_cluster(config)
    if spec.pool is None:
        assert spec.provider is not None
        return spec.provider, None
    provider = cluster.pools.get(spec.pool)
    if provider is None:
        known = ", ".join(sorted(cluster.pools)) or "none"
        raise NotFoundError(
            f"disk {index}: unknown storage pool {spec.pool!r} (known pools: {known})",
            field=f"disks[{index}].pool",
            pool=spec.pool,
        )
    if spec.provider is not None and spec.provider != provider:
        raise InputError(
            f"disk {index}: pool {spec.pool!r} uses provider {provider!r}, not {spec.provider!r}",
            field=f"disks[{index}].provider",
        )
    connected = config.group(group).pools
    if spec.pool not in connected:
        raise PrerequisiteError(
            f"disk {index}: storage pool {spec.pool!r} is not connected to node group "
            f"{group!r} (connected: {', '.join(connected) or 'none'}); connect it with "
            f"'extjobs group modify {group} --connect-pool {spec.pool}'",
            pool=spec.pool,
            group=group,
        )
    return provider, spec.pool


def disk_params(config: ClusterConfig, spec: DiskSpec) -> dict[str, str]:
    """A new disk's provider parameters: its pool's defaults under its own (the disk's
    win). Copied into the disk, so a later change of the pool does not reach it."""
    pool = require_cluster(config).pool_params.get(spec.pool, {}) if spec.pool else {}
    return {**pool, **spec.params}


def new_disk(
    config: ClusterConfig, spec: DiskSpec, index: int, group: str, *, uuid: str = ""
) -> Disk:
    """Disk ``index`` of ``spec`` as it is made in node group ``group``: its provider and
    pool resolved there (raises why not), the pool's parameters under its own."""
    provider, pool = resolve_disk(config, spec, index, group)
    return Disk(
        uuid=uuid,
        index=index,
        size=spec.size,
        provider=provider,
        pool=pool,
        name=spec.name,
        params=disk_params(config, spec),
        access=spec.access,
    )


def check_declared(
    reports: Mapping[str, Mapping[str, ProviderStatus]], provider: str, params: Mapping[str, str]
) -> None:
    """Refuse (InputError naming it) a parameter of ``params`` that ``provider`` does not
    declare in its ``parameters.list`` on every node of ``reports`` (a group's nodes)."""
    declared = [r[provider].parameters for r in reports.values()]
    if not declared:
        return
    common = {k: v for k, v in declared[0].items() if all(k in d for d in declared)}
    check_params(provider, dict(params), common)
