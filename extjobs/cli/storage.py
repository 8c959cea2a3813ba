"""``extjobs storage diagnose|info|install``: ExtStorage providers on the nodes.

``diagnose`` and ``info`` exit with :data:`UNUSABLE` (3) when the answer means the
storage cannot be used: no node answered, or a provider shown is valid on no node.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from extjobs.cli import output
from extjobs.cli.common import Ctx, output_option, pass_ctx, run_opcode, run_quiet, submit_option
from extjobs.cli.pools import capacity_text, pool
from extjobs.model.opcodes import OpExtStorageDiagnose, OpExtStorageInstall


@click.group()
def storage() -> None:
    """ExtStorage providers and storage pools."""


storage.add_command(pool)


@storage.command("diagnose")
@click.argument("providers", nargs=-1)
@click.option("--node", "nodes", multiple=True, help="Only these nodes (repeatable).")
@output_option
@pass_ctx
def storage_diagnose(
    ctx: Ctx, providers: tuple[str, ...], nodes: tuple[str, ...], fmt: str
) -> None:
    """Check providers on every online node; valid per group iff valid on all its nodes.

    Exits 3 when no node answered or a provider is valid on no node."""
    result = _diagnose(ctx, providers, nodes)
    if fmt == "json":
        output.emit_json(result)
        _exit_if_unusable(result)
        return
    rows = []
    for node_name, report in sorted(result["nodes"].items()):
        if "error" in report:
            rows.append((node_name, "*", "unreachable", report["error"], ""))
            continue
        for name, st in sorted(report["providers"].items()):
            rows.append(
                (
                    node_name,
                    name,
                    "valid" if st["valid"] else "invalid",
                    st["reason"] or "",
                    st["path"] or "",
                )
            )
    output.table("Per node", ["Node", "Provider", "Status", "Reason", "Path"], rows)
    grows = []
    for group_name, statuses in sorted(result["groups"].items()):
        for name, st in sorted(statuses.items()):
            reasons = "; ".join(f"{n}: {r}" for n, r in st["reasons"].items())
            grows.append(
                (
                    group_name,
                    name,
                    "valid" if st["valid"] else "invalid",
                    reasons,
                    ", ".join(st["parameters"]),
                )
            )
    output.table("Per node group", ["Group", "Provider", "Status", "Why not", "Parameters"], grows)
    _exit_if_unusable(result)


#: Exit status of diagnose and info when the storage cannot be used.
UNUSABLE = 3


def _exit_if_unusable(result: Any) -> None:
    """Print why and exit :data:`UNUSABLE` when no node answered or a provider is valid on
    no node (see the module docstring)."""
    reports = result["nodes"].values()
    answered = [r for r in reports if "error" not in r]
    problems = []
    if not answered:
        problems.append("no node answered")
    else:
        shown = sorted({name for r in answered for name in r["providers"]})
        for name in shown:
            statuses = [r["providers"][name] for r in answered if name in r["providers"]]
            if any(st["valid"] for st in statuses):
                continue
            if all(st["path"] is None for st in statuses):
                problems.append(
                    f"provider {name} was not found on any node ({statuses[0]['reason']}); "
                    f"install it with 'extjobs storage install DIR'"
                )
            else:
                problems.append(f"provider {name} is valid on no node")
    if problems:
        output.say("; ".join(problems), err=True)
        sys.exit(UNUSABLE)


def _diagnose(ctx: Ctx, providers: tuple[str, ...], nodes: tuple[str, ...] = ()) -> Any:
    op = OpExtStorageDiagnose(providers=providers, nodes=nodes)
    return run_quiet(ctx, op, "diagnose")


@storage.command("info")
@click.argument("providers", nargs=-1)
@output_option
@pass_ctx
def storage_info(ctx: Ctx, providers: tuple[str, ...], fmt: str) -> None:
    """Show providers: the node groups where they are valid, and their parameters.

    Exits 3 when no node answered or a provider is valid on no node."""
    result = run_quiet(ctx, OpExtStorageDiagnose(providers=providers, capacity=True), "diagnose")
    info: dict[str, Any] = {}
    for group_name, statuses in sorted(result["groups"].items()):
        for name, st in sorted(statuses.items()):
            entry = info.setdefault(
                name, {"valid_groups": [], "invalid_groups": {}, "parameters": {}, "capacity": {}}
            )
            if st["valid"]:
                entry["valid_groups"].append(group_name)
                entry["parameters"].update(st["parameters"])
                entry["capacity"][group_name] = st.get("capacity")
            else:
                entry["invalid_groups"][group_name] = st["reasons"]
    if fmt == "json":
        output.emit_json(info)
        _exit_if_unusable(result)
        return
    for name, entry in sorted(info.items()):
        output.say(name, style="bold")
        output.say("  valid in: " + (", ".join(entry["valid_groups"]) or "no group"))
        for group_name, reasons in entry["invalid_groups"].items():
            why = "; ".join(f"{n}: {r}" for n, r in reasons.items())
            output.say(f"  not valid in {group_name}: {why}")
        for group_name, cap in sorted(entry["capacity"].items()):
            output.say(f"  capacity in {group_name}: {capacity_text(cap)}")
        output.say("  parameters:")
        for param, doc in sorted(entry["parameters"].items()):
            output.say(f"    {param:<16} {doc}")
    _exit_if_unusable(result)


@storage.command("install")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", help="Provider name (default: the directory's name).")
@click.option("--group", "group_name", help="Install on every online node of this group.")
@click.option("--node", "nodes", multiple=True, help="Install on this node (repeatable).")
@submit_option
@pass_ctx
def storage_install(
    ctx: Ctx,
    directory: Path,
    name: str | None,
    group_name: str | None,
    nodes: tuple[str, ...],
    submit_only: bool,
) -> None:
    """Copy a provider directory to nodes over SFTP, keeping file modes."""
    if group_name and nodes:
        raise click.UsageError("use --group or --node, not both")
    op = OpExtStorageInstall(
        source=str(directory.resolve()),
        provider=name or None,
        nodes=nodes,
        group=group_name or None,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        for node_name, dest in sorted(result["installed"].items()):
            click.echo(f"{node_name}: {dest}")
