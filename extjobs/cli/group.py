"""``extjobs group add|list|modify``: node groups and the storage pools they offer."""

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
from extjobs.model.opcodes import OpGroupAdd, OpGroupSetParams


@click.group()
def group() -> None:
    """Node groups."""


@group.command("add")
@click.argument("name")
@submit_option
@pass_ctx
def group_add(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Add a node group."""
    if run_opcode(ctx, OpGroupAdd(group_name=name), submit_only=submit_only):
        click.echo(f"group {name} added")


@group.command("list")
@output_option
@pass_ctx
def group_list(ctx: Ctx, fmt: str) -> None:
    """List node groups."""
    with ctx.client() as client:
        groups = client.cluster()["groups"]
        nodes = client.nodes()
    if fmt == "json":
        output.emit_json(groups)
        return
    output.table(
        None,
        ["Group", "Nodes", "Pools"],
        [
            (name, ",".join(n["name"] for n in nodes if n["group"] == name), ",".join(g["pools"]))
            for name, g in groups.items()
        ],
    )


@group.command("modify")
@click.argument("name")
@click.option(
    "--connect-pool",
    "connect",
    multiple=True,
    metavar="POOL",
    help="Offer this storage pool in the group (repeatable).",
)
@click.option(
    "--disconnect-pool",
    "disconnect",
    multiple=True,
    metavar="POOL",
    help="Stop offering an unused storage pool (repeatable).",
)
@click.option(
    "--auto-failover",
    "auto_failover",
    type=click.Choice(["yes", "no"]),
    help="Whether the watcher fences a dead node of the group and fails its instances over.",
)
@migration_default_options("the cluster's")
@submit_option
@pass_ctx
def group_modify(
    ctx: Ctx,
    name: str,
    connect: tuple[str, ...],
    disconnect: tuple[str, ...],
    auto_failover: str | None,
    max_downtime: int | None,
    bandwidth: int | None,
    converge_timeout: float | None,
    submit_only: bool,
) -> None:
    """Connect storage pools to a node group, or disconnect them; automatic failover;
    the migration defaults of the group's instances."""
    migration = migration_defaults(max_downtime, bandwidth, converge_timeout)
    if not connect and not disconnect and auto_failover is None and not migration:
        fail(
            "nothing to change: give --connect-pool, --disconnect-pool, --auto-failover, "
            "--max-downtime, --bandwidth or --converge-timeout",
            2,
        )
    op = OpGroupSetParams(
        group_name=name,
        connect_pools=connect,
        disconnect_pools=disconnect,
        auto_failover=None if auto_failover is None else auto_failover == "yes",
        **migration,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        pools = result["pools"]
        click.echo(f"group {name} offers pools: {', '.join(pools) or 'none'}")
        if auto_failover is not None:
            state = "on" if result.get("auto_failover") else "off"
            click.echo(f"group {name}: automatic failover {state}")
        echo_migration_defaults(
            f"group {name}", {k: result["migration"][k] for k in migration}, "the cluster's"
        )
