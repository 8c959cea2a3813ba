"""``extjobs storage pool list|info|add|modify|remove|connect|disconnect``.

A pool is a name for a provider with default parameters, offered by the node groups it
is connected to (see ``extjobs/lus/pools.py``). ``remove``, ``connect`` and
``disconnect`` submit the same opcodes as ``cluster modify --remove-pool`` and
``group modify --connect-pool/--disconnect-pool``.
"""

from __future__ import annotations

from typing import Any

import click

from extjobs.cli import output
from extjobs.cli.common import (
    Ctx,
    fail,
    output_option,
    pass_ctx,
    run_opcode,
    run_quiet,
    submit_option,
)
from extjobs.model.opcodes import (
    OpClusterSetParams,
    OpGroupSetParams,
    OpStoragePoolAdd,
    OpStoragePoolModify,
    OpStoragePoolQuery,
)


def parse_params(items: tuple[str, ...]) -> dict[str, str]:
    """``name=value`` arguments as a dict; exit 2 naming one without ``=``."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"expected PARAM=VALUE, not {item!r}", 2)
        params[name] = value
    return params


def _params_text(params: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def capacity_text(cap: dict[str, Any] | None) -> str:
    """``F MiB free of T MiB`` (``, shared``), or ``unknown`` with the reasons given."""
    if not cap or cap.get("free") is None:
        errors = [
            f"{n}: {c['error']}"
            for n, c in sorted((cap or {}).get("nodes", {}).items())
            if c.get("error")
        ]
        return "unknown" + (f" ({'; '.join(errors)})" if errors else "")
    return f"{cap['free']} MiB free of {cap['total']} MiB" + (
        ", shared" if cap.get("shared") else " (smallest of the nodes)"
    )


@click.group()
def pool() -> None:
    """Storage pools: a provider with default parameters, connected to node groups."""


@pool.command("list")
@output_option
@pass_ctx
def pool_list(ctx: Ctx, fmt: str) -> None:
    """List the storage pools."""
    pools = run_quiet(ctx, OpStoragePoolQuery(), "pool query")["pools"]
    if fmt == "json":
        output.emit_json(pools)
        return
    output.table(
        None,
        ["Pool", "Provider", "Parameters", "Groups", "Disks", "Capacity"],
        [
            (
                p["pool"],
                p["provider"],
                _params_text(p["params"]),
                ",".join(p["groups"]) or "-",
                str(len(p["disks"])),
                "; ".join(f"{g}: {capacity_text(c)}" for g, c in p["capacity"].items()) or "-",
            )
            for p in pools.values()
        ],
    )


@pool.command("info")
@click.argument("name")
@output_option
@pass_ctx
def pool_info(ctx: Ctx, name: str, fmt: str) -> None:
    """Show one storage pool."""
    p: dict[str, Any] = run_quiet(ctx, OpStoragePoolQuery(names=(name,)), "pool query")["pools"][
        name
    ]
    if fmt == "json":
        output.emit_json(p)
        return
    output.say(f"pool {p['pool']}", style="bold")
    output.say(f"  provider: {p['provider']}")
    output.say(f"  parameters: {_params_text(p['params'])}")
    output.say(f"  connected to: {', '.join(p['groups']) or 'no group'}")
    output.say(f"  disks: {', '.join(p['disks']) or 'none'}")
    for group, cap in sorted(p["capacity"].items()):
        output.say(f"  capacity in {group}: {capacity_text(cap)}")


@pool.command("add")
@click.argument("name")
@click.argument("provider")
@click.argument("params", nargs=-1)
@submit_option
@pass_ctx
def pool_add(
    ctx: Ctx, name: str, provider: str, params: tuple[str, ...], submit_only: bool
) -> None:
    """Add a pool backed by PROVIDER with default PARAM=VALUE parameters.

    Refused unless PROVIDER is valid in at least one node group."""
    op = OpStoragePoolAdd(pool_name=name, provider=provider, params=parse_params(params))
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        click.echo(
            f"pool {name}: provider {provider}, parameters {_params_text(result['params'])}; "
            f"valid in {', '.join(result['valid_groups'])}"
        )


@pool.command("modify")
@click.argument("name")
@click.argument("params", nargs=-1)
@click.option("--remove-param", "remove", multiple=True, metavar="PARAM", help="Drop a default.")
@submit_option
@pass_ctx
def pool_modify(
    ctx: Ctx, name: str, params: tuple[str, ...], remove: tuple[str, ...], submit_only: bool
) -> None:
    """Set default PARAM=VALUE parameters of a pool; existing disks keep theirs."""
    if not params and not remove:
        fail("nothing to change: give PARAM=VALUE or --remove-param", 2)
    op = OpStoragePoolModify(pool_name=name, params=parse_params(params), remove_params=remove)
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        click.echo(f"pool {name}: parameters {_params_text(result['params'])}")
        if result["note"]:
            click.echo(result["note"])


@pool.command("remove")
@click.argument("name")
@submit_option
@pass_ctx
def pool_remove(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Remove a pool no disk uses (it is disconnected from every group)."""
    if run_opcode(ctx, OpClusterSetParams(remove_pools=(name,)), submit_only=submit_only):
        click.echo(f"pool {name} removed")


@pool.command("connect")
@click.argument("name")
@click.argument("group")
@submit_option
@pass_ctx
def pool_connect(ctx: Ctx, name: str, group: str, submit_only: bool) -> None:
    """Offer a pool in a node group; its provider must be valid on every online node."""
    op = OpGroupSetParams(group_name=group, connect_pools=(name,))
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"pool {name} connected to group {group}")


@pool.command("disconnect")
@click.argument("name")
@click.argument("group")
@submit_option
@pass_ctx
def pool_disconnect(ctx: Ctx, name: str, group: str, submit_only: bool) -> None:
    """Stop offering a pool in a node group (refused while a disk there uses it)."""
    op = OpGroupSetParams(group_name=group, disconnect_pools=(name,))
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"pool {name} disconnected from group {group}")
