"""The ``extjobs`` command line. It talks to the daemon only through the HTTP API.

Exit codes: 0 success, 1 the job failed (or the daemon refused the request),
2 usage error.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from extjobs.api.client import ApiError, Client
from extjobs.cli import output
from extjobs.errors import ExtJobsError
from extjobs.model.config import default_socket, load_config
from extjobs.model.jobs import PRIORITY_NAMES, parse_priority

FINAL = ("success", "error", "canceled")


class Ctx:
    def __init__(self, socket: Path | None) -> None:
        self.socket = socket

    def client(self) -> Client:
        sock = self.socket or default_socket()
        if sock is None:
            raise click.UsageError("no daemon socket: use --socket or EXTJOBS_SOCKET")
        return Client(sock)


pass_ctx = click.make_pass_decorator(Ctx)

output_option = click.option(
    "--output",
    "-o",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
submit_option = click.option(
    "--submit", "submit_only", is_flag=True, help="Submit and print the job id; do not wait."
)
priority_option = click.option(
    "--priority",
    default="normal",
    show_default=True,
    help="low, normal, high or a number -20..19 (lower runs first).",
)


def _priority(value: str) -> int:
    try:
        return parse_priority(value if value in PRIORITY_NAMES else int(value))
    except (ValueError, ExtJobsError) as exc:
        raise click.BadParameter(str(exc), param_hint="--priority") from None


def fail(message: str, code: int = 1) -> None:
    output.err_console.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)


# -- following jobs -------------------------------------------------------------------


def follow_job(client: Client, job_id: int, *, quiet: bool = False) -> dict[str, Any]:
    """Show a job's log as it happens; return its final state."""
    job: dict[str, Any] = {}
    if output.is_tty() and not quiet:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("job {task.fields[job]} {task.description}"),
            TimeElapsedColumn(),
            console=output.console,
            transient=True,
        ) as progress:
            task = progress.add_task("queued", job=job_id)
            for job, entries in client.follow(job_id):
                for entry in entries:
                    progress.console.print(output.log_line(entry), markup=False)
                progress.update(task, description=job["status"])
    else:
        for state, entries in client.follow(job_id):
            job = state
            if not quiet:
                for entry in entries:
                    click.echo(output.log_line(entry))
    return job


def finish(client: Client, job_id: int, *, show_result: bool = True) -> dict[str, Any]:
    follow_job(client, job_id)
    full = client.job(job_id)
    if full["status"] != "success":
        errors = [op["error"]["message"] for op in full["ops"] if op.get("error")]
        fail(f"job {job_id} {full['status']}: " + ("; ".join(errors) or "no details"))
    return full


def run_opcode(
    ctx: Ctx, op: dict[str, Any], *, submit_only: bool = False, priority: int = 0
) -> dict[str, Any] | None:
    with ctx.client() as client:
        job_id = client.submit_ops([op], priority=priority)
        if submit_only:
            click.echo(job_id)
            return None
        output.err_console.print(f"job {job_id} submitted")
        return finish(client, job_id)


# -- the command tree ---------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    type=click.Path(path_type=Path),
    envvar="EXTJOBS_SOCKET",
    help="The daemon's API socket (default: EXTJOBS_SOCKET, else the configured one).",
)
@click.version_option(package_name="extjobs")
@click.pass_context
def cli(click_ctx: click.Context, socket: Path | None) -> None:
    """extjobs: jobs for a virtualisation cluster on external shared storage."""
    click_ctx.obj = Ctx(socket)


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML configuration file.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Override the configured state directory.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def daemon(config_path: Path | None, state_dir: Path | None, log_level: str) -> None:
    """Run the master daemon in the foreground."""
    import anyio

    from extjobs.daemon import serve_daemon

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # asyncssh logs every channel at INFO; the job log already records each step.
    logging.getLogger("asyncssh").setLevel(
        logging.DEBUG if log_level == "debug" else logging.WARNING
    )
    try:
        config = load_config(config_path, state_dir=state_dir)
        anyio.run(lambda: serve_daemon(config))
    except ExtJobsError as exc:
        fail(exc.message, 2)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("file", type=click.File("r"))
@click.option("--wait", is_flag=True, help="Follow the job(s) to the end.")
@priority_option
@pass_ctx
def submit(ctx: Ctx, file: Any, wait: bool, priority: str) -> None:
    """Submit a job from FILE (or - for stdin).

    FILE holds a JSON list of opcodes (one job), an object {"ops": [...], "priority": P,
    "depends": [[id, [statuses]]]}, or {"jobs": [job, ...]} for a batch in which
    negative dependency ids are relative (-1 = the job just before).
    """
    try:
        body = json.load(file)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="FILE") from None
    prio = _priority(priority)
    if isinstance(body, list) and all(isinstance(op, dict) and "OP_ID" in op for op in body):
        body = {"ops": body, "priority": prio}
    elif isinstance(body, dict) and "ops" in body and "priority" not in body:
        body = {**body, "priority": prio}
    with ctx.client() as client:
        ids = client.submit(body)
        for job_id in ids:
            click.echo(job_id)
        sys.stdout.flush()
        if wait:
            failed = False
            for job_id in ids:
                job = follow_job(client, job_id)
                failed |= job.get("status") != "success"
            if failed:
                sys.exit(1)


# -- jobs --------------------------------------------------------------------------------------


@cli.group()
def job() -> None:
    """Inspect, follow, cancel and archive jobs."""


@job.command("list")
@click.option("--status", "statuses", multiple=True, help="Only jobs in this status (repeatable).")
@click.option("--archived", is_flag=True, help="Include archived jobs.")
@output_option
@pass_ctx
def job_list(ctx: Ctx, statuses: tuple[str, ...], archived: bool, fmt: str) -> None:
    """List jobs."""
    with ctx.client() as client:
        jobs = client.jobs(statuses=list(statuses), archived=archived)
    if fmt == "json":
        output.emit_json(jobs)
        return
    output.table(
        None,
        ["ID", "Status", "Prio", "Opcodes", "Received", "Waiting for"],
        [
            (
                j["id"],
                j["status"] + (" (archived)" if j["archived"] else ""),
                j["priority"],
                ",".join(j["summary"]),
                output.when(j["received"]),
                j["waiting_for"] or "",
            )
            for j in jobs
        ],
    )


@job.command("info")
@click.argument("job_id", type=int)
@output_option
@pass_ctx
def job_info(ctx: Ctx, job_id: int, fmt: str) -> None:
    """Show a job: status, each opcode's result and timings, and its log."""
    with ctx.client() as client:
        data = client.job(job_id)
    if fmt == "json":
        output.emit_json(data)
        return
    c = output.console
    c.print(
        f"[bold]Job {data['id']}[/bold]: {data['status']}"
        + (" (archived)" if data["archived"] else "")
        + f", priority {data['priority']}"
    )
    c.print(
        f"  received {output.when(data['received'])}, started {output.when(data['started'])}, "
        f"ended {output.when(data['ended'])}"
    )
    if data["waiting_for"]:
        c.print(f"  waiting for {data['waiting_for']}")
    if data["depends"]:
        c.print(
            "  depends on " + ", ".join(f"job {d[0]} ({'/'.join(d[1])})" for d in data["depends"])
        )
    for op in data["ops"]:
        c.print(
            f"  opcode {op['index']} {op['input']['OP_ID']}: {op['status']}, "
            f"{output.duration(op['duration'])}"
        )
        if op["error"]:
            c.print(f"    error: {op['error'].get('message')}", markup=False)
        if op["result"] is not None:
            text = json.dumps(op["result"], indent=2, sort_keys=True)
            c.print("    result: " + text.replace("\n", "\n    "), markup=False)
    c.print("  log:")
    for entry in data["log"]:
        c.print("    " + output.log_line(entry), markup=False)


@job.command("watch")
@click.argument("job_id", type=int)
@pass_ctx
def job_watch(ctx: Ctx, job_id: int) -> None:
    """Follow a job's log live; exit 0 on success, 1 otherwise."""
    with ctx.client() as client:
        job = follow_job(client, job_id)
    click.echo(f"job {job_id}: {job['status']}")
    sys.exit(0 if job["status"] == "success" else 1)


@job.command("cancel")
@click.argument("job_id", type=int)
@pass_ctx
def job_cancel(ctx: Ctx, job_id: int) -> None:
    """Cancel a job (a running one is killed and its partial work undone)."""
    with ctx.client() as client:
        data = client.cancel(job_id)
    click.echo(f"job {job_id}: {data['status']}")


@job.command("archive")
@click.argument("job_id", type=int)
@pass_ctx
def job_archive(ctx: Ctx, job_id: int) -> None:
    """Archive a finished job (it stays readable with job info)."""
    with ctx.client() as client:
        client.archive(job_id)
    click.echo(f"job {job_id} archived")


# -- cluster, groups, nodes --------------------------------------------------------------------


@cli.group()
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
    op: dict[str, Any] = {
        "OP_ID": "OP_CLUSTER_INIT",
        "cluster_name": name,
        "default_group": default_group,
    }
    if search_path:
        op["search_path"] = search_path.split(":")
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"cluster {name} initialised")


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
    output.console.print(
        f"cluster {cl['name']}: {data['nodes']} nodes, {data['instances']} instances, "
        f"groups: {', '.join(data['groups'])}"
    )


@cli.group()
def group() -> None:
    """Node groups."""


@group.command("add")
@click.argument("name")
@submit_option
@pass_ctx
def group_add(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Add a node group."""
    if run_opcode(ctx, {"OP_ID": "OP_GROUP_ADD", "group_name": name}, submit_only=submit_only):
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


@cli.group()
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
    op: dict[str, Any] = {
        "OP_ID": "OP_NODE_ADD",
        "node_name": name,
        "port": port,
        "user": user,
        "accept_new_host_key": accept_new_host_key,
    }
    for key, value in (("address", address), ("group", group_name), ("host_key", host_key)):
        if value is not None:
            op[key] = value
    if search_path:
        op["search_path"] = search_path.split(":")
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
    if run_opcode(ctx, {"OP_ID": "OP_NODE_REMOVE", "node_name": name}, submit_only=submit_only):
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


# -- storage -----------------------------------------------------------------------------------


@cli.group()
def storage() -> None:
    """ExtStorage providers."""


@storage.command("diagnose")
@click.argument("providers", nargs=-1)
@click.option("--node", "nodes", multiple=True, help="Only these nodes (repeatable).")
@output_option
@pass_ctx
def storage_diagnose(
    ctx: Ctx, providers: tuple[str, ...], nodes: tuple[str, ...], fmt: str
) -> None:
    """Check providers on every online node; valid per group iff valid on all its nodes."""
    result = _diagnose(ctx, providers, nodes)
    if fmt == "json":
        output.emit_json(result)
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


def run_quiet(ctx: Ctx, op: dict[str, Any], what: str) -> Any:
    """Submit one opcode, wait for it without showing its log, and return its result;
    exit 1 with the job's errors when it did not succeed."""
    with ctx.client() as client:
        job_id = client.submit_ops([op])
        follow_job(client, job_id, quiet=True)
        full = client.job(job_id)
    if full["status"] != "success":
        errors = [o["error"]["message"] for o in full["ops"] if o.get("error")]
        fail(f"{what} job {job_id} {full['status']}: {'; '.join(errors)}")
    return full["ops"][0]["result"]


def _diagnose(ctx: Ctx, providers: tuple[str, ...], nodes: tuple[str, ...] = ()) -> Any:
    op = {"OP_ID": "OP_EXTSTORAGE_DIAGNOSE", "providers": list(providers), "nodes": list(nodes)}
    return run_quiet(ctx, op, "diagnose")


@storage.command("info")
@click.argument("providers", nargs=-1)
@output_option
@pass_ctx
def storage_info(ctx: Ctx, providers: tuple[str, ...], fmt: str) -> None:
    """Show providers: the node groups where they are valid, and their parameters."""
    result = _diagnose(ctx, providers)
    info: dict[str, Any] = {}
    for group_name, statuses in sorted(result["groups"].items()):
        for name, st in sorted(statuses.items()):
            entry = info.setdefault(
                name, {"valid_groups": [], "invalid_groups": {}, "parameters": {}}
            )
            if st["valid"]:
                entry["valid_groups"].append(group_name)
                entry["parameters"].update(st["parameters"])
            else:
                entry["invalid_groups"][group_name] = st["reasons"]
    if fmt == "json":
        output.emit_json(info)
        return
    for name, entry in sorted(info.items()):
        output.console.print(f"[bold]{escape(name)}[/bold]")
        output.console.print(
            "  valid in: " + (", ".join(entry["valid_groups"]) or "no group"), markup=False
        )
        for group_name, reasons in entry["invalid_groups"].items():
            why = "; ".join(f"{n}: {r}" for n, r in reasons.items())
            output.console.print(f"  not valid in {group_name}: {why}", markup=False)
        output.console.print("  parameters:")
        for param, doc in sorted(entry["parameters"].items()):
            output.console.print(f"    {param:<16} {doc}", markup=False)


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
    op: dict[str, Any] = {
        "OP_ID": "OP_EXTSTORAGE_INSTALL",
        "source": str(directory.resolve()),
        "nodes": list(nodes),
    }
    if name:
        op["provider"] = name
    if group_name:
        op["group"] = group_name
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        for node_name, dest in sorted(result["installed"].items()):
            click.echo(f"{node_name}: {dest}")


def _verify(ctx: Ctx) -> dict[str, Any]:
    return dict(run_quiet(ctx, {"OP_ID": "OP_CLUSTER_VERIFY"}, "verify"))


def _show_findings(findings: list[dict[str, Any]]) -> None:
    if not findings:
        output.console.print("cluster is consistent: configuration, guests and disks agree")
        return
    output.table(
        None,
        ["Finding", "Details", "Repair"],
        [
            (f["kind"], f["message"], f["repair"]["OP_ID"] if f["repair"] else "manual")
            for f in findings
        ],
    )


@cli.command()
@click.option("--repair", is_flag=True, help="Apply the safe fixes, each as a job.")
@output_option
@pass_ctx
def verify(ctx: Ctx, repair: bool, fmt: str) -> None:
    """Compare the configuration with the nodes and the journal; exit 1 on findings.

    Finds guests running where the configuration does not say, disks attached on nodes
    other than their primary, volumes created but neither configured nor removed, offline
    nodes with attached disks, and interrupted removals. --repair detaches strays on
    reachable nodes, removes leaked volumes and re-runs interrupted removals.
    """
    result = _verify(ctx)
    repairs: list[dict[str, Any]] = []
    if repair:
        with ctx.client() as client:
            for finding in result["findings"]:
                if finding["repair"] is None:
                    continue
                job_id = client.submit_ops([finding["repair"]])
                job = follow_job(client, job_id, quiet=fmt == "json")
                repairs.append({"job": job_id, "status": job["status"], "finding": finding})
                if fmt != "json":
                    output.console.print(
                        f"repair job {job_id} ({finding['repair']['OP_ID']}): {job['status']}",
                        markup=False,
                    )
        result = _verify(ctx)
    if fmt == "json":
        output.emit_json({**result, "repairs": repairs})
    else:
        _show_findings(result["findings"])
    sys.exit(0 if result["clean"] else 1)


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the temporary directory in place.")
def demo(keep: bool) -> None:
    """Start embedded nodes and a daemon in a temporary directory and run the mission."""
    from extjobs.cli.demo import run_demo

    sys.exit(run_demo(keep=keep))


import extjobs.cli.instance  # noqa: F401  (registers instance, cluster/group modify)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ApiError as exc:
        fail(exc.message, 1)
    except ExtJobsError as exc:
        fail(exc.message, 1)


if __name__ == "__main__":
    main()
