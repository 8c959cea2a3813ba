"""``extjobs node add|list|remove|modify``: cluster nodes, their pinned SSH host keys and
their state (offline, drained, fence command)."""

from __future__ import annotations

import shlex

import click

from extjobs.cli import output
from extjobs.cli.common import (
    Ctx,
    fail,
    follow_job,
    output_option,
    pass_ctx,
    run_opcode,
    submit_option,
)
from extjobs.cli.instance import migration_options
from extjobs.model.opcodes import (
    OpCode,
    OpNodeAdd,
    OpNodeEvacuate,
    OpNodeFence,
    OpNodeMigrate,
    OpNodeRemove,
    OpNodeSetParams,
)


@click.group()
def node() -> None:
    """Cluster nodes."""


@node.command("add")
@click.argument("name")
@click.option("--address", help="Host name or IP (default: NAME).")
@click.option("--port", type=int, default=22, show_default=True)
@click.option("--user", default="root", show_default=True)
@click.option("--group", "group_name", help="Node group (default: the cluster's default group).")
@click.option("--host-key", help="The node's SSH host public key to pin ('ssh-ed25519 AAAA...').")
@click.option("--accept-new-host-key", is_flag=True, help="Pin whatever host key the node offers.")
@click.option("--search-path", help="ExtStorage search path on this node (colon-separated).")
@submit_option
@pass_ctx
def node_add(
    ctx: Ctx,
    name: str,
    address: str | None,
    port: int,
    user: str,
    group_name: str | None,
    host_key: str | None,
    accept_new_host_key: bool,
    search_path: str | None,
    submit_only: bool,
) -> None:
    """Add a node; its SSH host key is pinned (shown, and must be given or accepted)."""
    op = OpNodeAdd(
        node_name=name,
        address=address,
        port=port,
        user=user,
        group=group_name,
        host_key=host_key,
        accept_new_host_key=accept_new_host_key,
        search_path=tuple(search_path.split(":")) if search_path else None,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        click.echo(
            f"node {name} added to group {result['group']}, "
            f"host key {result['host_key_fingerprint']} pinned"
        )


@node.command("remove")
@click.argument("name")
@submit_option
@pass_ctx
def node_remove(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Remove a node that is primary of no instance."""
    if run_opcode(ctx, OpNodeRemove(node_name=name), submit_only=submit_only):
        click.echo(f"node {name} removed")


@node.command("list")
@output_option
@pass_ctx
def node_list(ctx: Ctx, fmt: str) -> None:
    """List nodes."""
    with ctx.client() as client:
        nodes = client.nodes()
    if fmt == "json":
        output.emit_json(nodes)
        return
    output.table(
        None,
        ["Node", "Address", "Group", "State", "Instances", "Host key"],
        [
            (
                n["name"],
                f"{n['user']}@{n['host']}:{n['port']}",
                n["group"],
                "offline" if n["offline"] else ("drained" if n["drained"] else "online"),
                len(n["instances"]),
                n["host_key_fingerprint"],
            )
            for n in nodes
        ],
    )


_YES_NO = click.Choice(["yes", "no"])


@node.command("modify")
@click.argument("name")
@click.option("--offline", type=_YES_NO, help="Mark the node offline (no step runs there).")
@click.option("--drained", type=_YES_NO, help="Mark the node drained (nothing moves there).")
@click.option(
    "--fence-command",
    metavar="CMD",
    help="Command run on the master to fence the node (split like a shell would; '' removes it).",
)
@click.option(
    "--host-key",
    help="Re-pin the SSH host key of a reinstalled node: the key it must offer now.",
)
@click.option(
    "--accept-new-host-key", is_flag=True, help="Re-pin whatever host key the node offers now."
)
@submit_option
@pass_ctx
def node_modify(
    ctx: Ctx,
    name: str,
    offline: str | None,
    drained: str | None,
    fence_command: str | None,
    host_key: str | None,
    accept_new_host_key: bool,
    submit_only: bool,
) -> None:
    """Change a node's state: offline, drained, fence command, pinned host key."""
    if host_key is not None and accept_new_host_key:
        fail("give --host-key or --accept-new-host-key, not both", 2)
    if (
        offline is None
        and drained is None
        and fence_command is None
        and host_key is None
        and not accept_new_host_key
    ):
        fail(
            "nothing to change: give --offline, --drained, --fence-command, --host-key or "
            "--accept-new-host-key",
            2,
        )
    fence: tuple[str, ...] | None = None
    if fence_command is not None:
        try:
            fence = tuple(shlex.split(fence_command))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fence-command") from None
    op = OpNodeSetParams(
        node_name=name,
        offline=None if offline is None else offline == "yes",
        drained=None if drained is None else drained == "yes",
        fence_command=fence,
        host_key=host_key,
        accept_new_host_key=accept_new_host_key,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        data = job["ops"][0]["result"]
        if data.get("new_host_key_fingerprint"):
            click.echo(
                f"node {name}: host key re-pinned, {data['old_host_key_fingerprint']} → "
                f"{data['new_host_key_fingerprint']}"
            )
        state = "offline" if data["offline"] else ("drained" if data["drained"] else "online")
        shown = shlex.join(data["fence_command"]) if data["fence_command"] else "none"
        click.echo(f"node {name}: {state}, fence command: {shown}")


def _move_node(ctx: Ctx, op: OpCode, submit_only: bool) -> None:
    """Run a node migrate/evacuate, then follow each instance's job and print where each
    instance landed; exit 1 when any of them failed."""
    job = run_opcode(ctx, op, submit_only=submit_only)
    if not job:
        return
    entries = job["ops"][0]["result"]["jobs"]
    if not entries:
        click.echo("no instance to move")
        return
    failed = []
    with ctx.client() as client:
        for entry in entries:
            follow_job(client, entry["job_id"], quiet=True)
            full = client.job(entry["job_id"])
            name, job_id = entry["instance"], entry["job_id"]
            if full["status"] == "success":
                result = full["ops"][0]["result"] or {}
                how = "failed over" if result.get("mode") == "failover" else entry["op"]
                click.echo(
                    f"{name}: {how} to {result.get('primary', entry['target'])} (job {job_id})"
                )
            else:
                errors = "; ".join(o["error"]["message"] for o in full["ops"] if o.get("error"))
                click.echo(f"{name}: NOT moved, job {job_id} {full['status']}: {errors}")
                failed.append(name)
    if failed:
        fail(f"{len(failed)} of {len(entries)} instance(s) not moved: {', '.join(failed)}")


@node.command("migrate")
@click.argument("name")
@click.option("--target", "-n", "target", metavar="NODE", help="Move every instance there.")
@click.option(
    "--auto",
    is_flag=True,
    help="Choose each instance's target as 'instance migrate' does (the default).",
)
@click.option(
    "--allow-failover",
    is_flag=True,
    help="Fail an instance over instead when it cannot migrate (its guest does not run).",
)
@click.option("--non-live", is_flag=True, help="Pause each guest while its memory moves.")
@migration_options
@submit_option
@pass_ctx
def node_migrate(
    ctx: Ctx,
    name: str,
    target: str | None,
    auto: bool,
    allow_failover: bool,
    non_live: bool,
    max_downtime: int | None,
    bandwidth: int | None,
    converge_timeout: float | None,
    submit_only: bool,
) -> None:
    """Live-migrate every instance off node NAME: one job per instance, one batch.

    Stopped instances move without being started. Nothing moves when some instance has
    no valid target; the error names each one."""
    if auto and target:
        raise click.UsageError("--auto and --target exclude each other")
    op = OpNodeMigrate(
        node_name=name,
        target_node=target,
        allow_failover=allow_failover,
        mode="non-live" if non_live else "live",
        max_downtime=max_downtime,
        bandwidth=bandwidth,
        converge_timeout=converge_timeout,
    )
    _move_node(ctx, op, submit_only)


@node.command("evacuate")
@click.argument("name")
@click.option("--target", "-n", "target", metavar="NODE", help="Move every instance there.")
@click.option(
    "--ignore-consistency",
    is_flag=True,
    help="Go on when the node cannot be reached or released (it is fenced first).",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds each guest gets to stop before it is killed.",
)
@submit_option
@pass_ctx
def node_evacuate(
    ctx: Ctx,
    name: str,
    target: str | None,
    ignore_consistency: bool,
    shutdown_timeout: float,
    submit_only: bool,
) -> None:
    """Fail every instance of node NAME over to other nodes (a node going away): one
    job per instance, one batch; nothing moves when some instance has no valid target."""
    op = OpNodeEvacuate(
        node_name=name,
        target_node=target,
        ignore_consistency=ignore_consistency,
        shutdown_timeout=shutdown_timeout,
    )
    _move_node(ctx, op, submit_only)


@node.command("fence")
@click.argument("name")
@click.option("--yes", "confirmed", is_flag=True, help="Do not ask for confirmation.")
@submit_option
@pass_ctx
def node_fence(ctx: Ctx, name: str, confirmed: bool, submit_only: bool) -> None:
    """Run the node's fence command (power it off), then mark it offline and fenced."""
    if not confirmed:
        click.confirm(f"Fence node {name} (power it off) and mark it offline?", abort=True)
    if run_opcode(ctx, OpNodeFence(node_name=name), submit_only=submit_only):
        click.echo(f"node {name} fenced and marked offline")
