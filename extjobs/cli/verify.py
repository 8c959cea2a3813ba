"""``extjobs verify [--repair]``: compare the configuration with the nodes and the journal."""

from __future__ import annotations

import sys
from typing import Any

import click

from extjobs.cli import output
from extjobs.cli.common import Ctx, follow_job, output_option, pass_ctx, run_quiet
from extjobs.model.opcodes import OpClusterVerify


def _verify(ctx: Ctx) -> dict[str, Any]:
    return dict(run_quiet(ctx, OpClusterVerify(), "verify"))


def _show_findings(findings: list[dict[str, Any]]) -> None:
    if not findings:
        output.say("cluster is consistent: configuration, guests and disks agree")
        return
    output.table(
        None,
        ["Finding", "Details", "Repair"],
        [
            (f["kind"], f["message"], f["repair"]["OP_ID"] if f["repair"] else "manual")
            for f in findings
        ],
    )


@click.command()
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
                    output.say(
                        f"repair job {job_id} ({finding['repair']['OP_ID']}): {job['status']}"
                    )
        result = _verify(ctx)
    if fmt == "json":
        output.emit_json({**result, "repairs": repairs})
    else:
        _show_findings(result["findings"])
    sys.exit(0 if result["clean"] else 1)
