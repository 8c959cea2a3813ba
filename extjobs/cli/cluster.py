"""``extjobs cluster init|info|modify|masters``: the cluster and its cluster-wide settings."""

from __future__ import annotations

import click

from extjobs.cli import output
from extjobs.cli.common import (
    Ctx,
    echo_migration_defaults,
    fail,
    migration_default_options,
    migration_defaults,
    output_option,
    pass_ctx,
    run_opcode,
    submit_option,
)
from extjobs.model.opcodes import OpClusterInit, OpClusterSetParams


@click.group()
def cluster() -> None:
    """Cluster-wide settings."""


@cluster.command("init")
@click.argument("name")
@click.option("--default-group", default="default", show_default=True)
@click.option("--search-path", help="ExtStorage search path (colon-separated) for all nodes.")
@submit_option
@pass_ctx
def cluster_init(
    ctx: Ctx, name: str, default_group: str, search_path: str | None, submit_only: bool
) -> None:
    """Initialise the cluster."""
    op = OpClusterInit(
        cluster_name=name,
        default_group=default_group,
        search_path=tuple(search_path.split(":")) if search_path else None,
    )
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"cluster {name} initialised")


@cluster.command("masters")
@output_option
@pass_ctx
def cluster_masters(ctx: Ctx, fmt: str) -> None:
    """Show the masters: the leader, its epoch and lease, and when each was last seen."""
    with ctx.client() as client:
        data = client.masters()
    if fmt == "json":
        output.emit_json(data)
        return
    lease = data["lease"]
    rows = []
    for m in data["masters"]:
        if lease is None:  # one master, no election: it leads
            leader, epoch, left = data["leads"] and m["name"] == data["this"], "", ""
        else:
            leader = lease["holder"] == m["name"] and lease["remaining"] > 0
            epoch = lease["epoch"] if leader else ""
            left = f"{lease['remaining']:.1f} s" if leader else ""
        rows.append(
            (
                m["name"],
                "leader" if leader else "standby",
                epoch,
                left,
                f"{m['seen_ago']:.1f} s ago",
                m["address"],
            )
        )
    output.table(
        f"Masters (this one: {data['this']})",
        ["Master", "Role", "Epoch", "Lease left", "Last seen", "API"],
        rows,
    )


@cluster.command("info")
@output_option
@pass_ctx
def cluster_info(ctx: Ctx, fmt: str) -> None:
    """Show the cluster configuration."""
    with ctx.client() as client:
        data = client.cluster()
    if fmt == "json":
        output.emit_json(data)
        return
    cl = data["cluster"]
    if cl is None:
        fail("the cluster is not initialised")
    output.say(
        f"cluster {cl['name']}: {data['nodes']} nodes, {data['instances']} instances, "
        f"groups: {', '.join(data['groups'])}"
    )
    params = cl.get("pool_params", {})
    for name, provider in sorted(cl["pools"].items()):
        shown = ",".join(f"{k}={v}" for k, v in sorted(params.get(name, {}).items()))
        groups = [g for g, info in data["groups"].items() if name in info["pools"]]
        output.say(
            f"  pool {name}: provider {provider}"
            + (f", parameters {shown}" if shown else "")
            + f", connected to {', '.join(groups) or 'no group'}"
        )
    units = {"max_downtime": "ms", "bandwidth": "MiB/s", "converge_timeout": "s"}
    holders = [("cluster", cl), *((f"node group {g}", info) for g, info in data["groups"].items())]
    for label, holder in holders:
        defaults = [
            f"{f.replace('_', ' ')} {holder[f]:g} {u}" for f, u in units.items() if holder.get(f)
        ]
        if defaults:
            output.say(f"  migration defaults of the {label}: {', '.join(defaults)}")


@cluster.command("modify")
@click.option(
    "--add-pool",
    "add_pools",
    nargs=2,
    multiple=True,
    metavar="NAME PROVIDER",
    help="Add a storage pool backed by PROVIDER (repeatable).",
)
@click.option(
    "--remove-pool",
    "remove_pools",
    multiple=True,
    metavar="NAME",
    help="Remove an unused storage pool (repeatable).",
)
@click.option(
    "--hypervisor-run-dir",
    "hv_run_dir",
    metavar="DIR",
    help="Where guests keep pid files and sockets on nodes (<DIR>/<node>).",
)
@migration_default_options("the daemon's [migration] section")
@submit_option
@pass_ctx
def cluster_modify(
    ctx: Ctx,
    add_pools: tuple[tuple[str, str], ...],
    remove_pools: tuple[str, ...],
    hv_run_dir: str | None,
    max_downtime: int | None,
    bandwidth: int | None,
    converge_timeout: float | None,
    submit_only: bool,
) -> None:
    """Change cluster-wide settings: storage pools, the hypervisor run directory, the
    instances' migration defaults."""
    migration = migration_defaults(max_downtime, bandwidth, converge_timeout)
    if not add_pools and not remove_pools and hv_run_dir is None and not migration:
        raise click.UsageError(
            "nothing to change: give --add-pool, --remove-pool, --hypervisor-run-dir, "
            "--max-downtime, --bandwidth or --converge-timeout"
        )
    op = OpClusterSetParams(
        add_pools=dict(add_pools), remove_pools=remove_pools, hv_run_dir=hv_run_dir, **migration
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        pools = ", ".join(f"{k} ({v})" for k, v in sorted(result["pools"].items()))
        click.echo(f"storage pools: {pools or 'none'}")
        echo_migration_defaults(
            "cluster",
            {k: result["migration"][k] for k in migration},
            "the daemon's [migration]",
        )
