"""``extjobs job …`` and ``extjobs submit``: submitting jobs, inspecting, following,
cancelling and archiving them."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from extjobs.cli import output
from extjobs.cli.common import (
    Ctx,
    follow_job,
    output_option,
    pass_ctx,
    priority_option,
    priority_value,
)


@click.command()
@click.argument("file", type=click.File("r"))
@click.option("--wait", is_flag=True, help="Follow the job(s) to the end.")
@click.option("--reason", default=None, help="Why: recorded with the job(s), shown by job info.")
@priority_option
@pass_ctx
def submit(ctx: Ctx, file: Any, wait: bool, reason: str | None, priority: str) -> None:
    """Submit a job from FILE (or - for stdin).

    FILE holds a JSON list of opcodes (one job), an object {"ops": [...], "priority": P,
    "depends": [[id, [statuses]]]}, or {"jobs": [job, ...]} for a batch in which
    negative dependency ids are relative (-1 = the job just before).
    """
    try:
        body = json.load(file)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="FILE") from None
    prio = priority_value(priority)
    if isinstance(body, list) and all(isinstance(op, dict) and "OP_ID" in op for op in body):
        body = {"ops": body, "priority": prio}
    elif isinstance(body, dict) and "ops" in body and "priority" not in body:
        body = {**body, "priority": prio}
    if reason is not None:
        if isinstance(body, dict) and isinstance(body.get("jobs"), list):
            body = {"jobs": [_with_reason(j, reason) for j in body["jobs"]]}
        else:
            body = _with_reason(body, reason)
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


def _with_reason(job: Any, reason: str) -> Any:
    """One job of a submission with ``reason`` (a bare opcode list becomes a job object)."""
    if isinstance(job, list):
        return {"ops": job, "reason": reason}
    if isinstance(job, dict):
        return {**job, "reason": reason}
    return job


@click.group()
def job() -> None:
    """Inspect, follow, cancel and archive jobs."""


@job.command("list")
@click.option("--status", "statuses", multiple=True, help="Only jobs in this status (repeatable).")
@click.option("--instance", default=None, metavar="NAME", help="Only jobs touching this instance.")
@click.option(
    "--node",
    default=None,
    metavar="NAME",
    help="Only jobs touching this node (named, or the primary of an instance named).",
)
@click.option("--opcode", default=None, metavar="OP", help="Only jobs running this opcode.")
@click.option(
    "--since", default=None, metavar="AGE", help="Only jobs received in the last AGE (2h, 30m, 1d)."
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="At most this many jobs (the newest).",
)
@click.option(
    "--cursor", default=None, metavar="NEXT", help="The page after the one that printed NEXT."
)
@click.option("--archived", is_flag=True, help="Include archived jobs.")
@click.option(
    "--user",
    default=None,
    metavar="NAME",
    help="Only jobs this submitter submitted: SOURCE:NAME (unix:alice, token:ci, "
    "rapi:jack) or NAME through any API.",
)
@output_option
@pass_ctx
def job_list(
    ctx: Ctx,
    statuses: tuple[str, ...],
    instance: str | None,
    node: str | None,
    opcode: str | None,
    since: str | None,
    limit: int,
    cursor: str | None,
    archived: bool,
    user: str | None,
    fmt: str,
) -> None:
    """List jobs, newest first."""
    with ctx.client() as client:
        page = client.search_jobs(
            statuses=list(statuses),
            archived=archived,
            cursor=cursor,
            user=user,
            instance=instance,
            node=node,
            opcode=opcode,
            since=since,
            limit=limit,
        )
    jobs = page["jobs"]
    if page["next"] is not None:
        # On stderr, so that the table or the JSON list stays what it was.
        click.echo(f"more jobs: add --cursor {page['next']}", err=True)
    if fmt == "json":
        output.emit_json(jobs)
        return
    output.table(
        None,
        ["ID", "Status", "Prio", "Summary", "Received", "Submitter", "Waiting for"],
        [
            (
                j["id"],
                j["status"] + (" (archived)" if j["archived"] else ""),
                j["priority"],
                ", ".join(j["summary"]),
                output.when(j["received"]),
                j.get("submitter") or "",
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
    say = output.say
    say(
        f": {data['status']}"
        + (" (archived)" if data["archived"] else "")
        + f", priority {data['priority']}",
        title=f"Job {data['id']}",
    )
    say(
        f"  received {output.when(data['received'])}, started {output.when(data['started'])}, "
        f"ended {output.when(data['ended'])}"
    )
    if data.get("submitter"):
        say(f"  submitted by {data['submitter']}")
    if data.get("reason"):
        say(f"  reason: {data['reason']}")
    if data["waiting_for"]:
        say(f"  waiting for {data['waiting_for']}")
    if data["depends"]:
        say("  depends on " + ", ".join(f"job {d[0]} ({'/'.join(d[1])})" for d in data["depends"]))
    for op in data["ops"]:
        say(
            f"  opcode {op['index']} {data['summary'][op['index']]}: {op['status']}, "
            f"{output.duration(op['duration'])}"
        )
        if op["error"]:
            say(f"    error: {op['error'].get('message')}")
        if op["result"] is not None:
            text = json.dumps(op["result"], indent=2, sort_keys=True)
            say("    result: " + text.replace("\n", "\n    "))
    say("  log:")
    for entry in data["log"]:
        for line in output.log_lines(entry):
            say("    " + line)


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
