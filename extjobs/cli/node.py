"""``extjobs node add|list|remove|modify``: cluster nodes, their pinned SSH host keys and
their state (offline, drained, fence command)."""

from __future__ import annotations

import shlex

import click

from extjobs.cli import output
from extjobs.cli.common import Ctx, fail, output_option, pass_ctx, run_opcode, submit_option
from extjobs.model.opcodes import OpNodeAdd, OpNodeFence, OpNodeRemove, OpNodeSetParams


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
@submit_option
@pass_ctx
def node_modify(
    ctx: Ctx,
    name: str,
    offline: str | None,
    drained: str | None,
    fence_command: str | None,
    submit_only: bool,
) -> None:
    """Change a node's state: offline, drained, fence command."""
    if offline is None and drained is None and fence_command is None:
        fail("nothing to change: give --offline, --drained or --fence-command", 2)
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
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        data = job["ops"][0]["result"]
        state = "offline" if data["offline"] else ("drained" if data["drained"] else "online")
        shown = shlex.join(data["fence_command"]) if data["fence_command"] else "none"
        click.echo(f"node {name}: {state}, fence command: {shown}")


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
