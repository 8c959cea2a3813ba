"""``extjobs watcher status|pause|resume``: the watcher inside the daemon (docs/watcher.md)."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from extjobs.cli import output
from extjobs.cli.common import Ctx, output_option, pass_ctx, run_opcode, submit_option
from extjobs.model.opcodes import OpWatcherSetPause

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d`` → seconds; raises click.BadParameter."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(
            f"{text!r} is no duration; use a number with s, m, h or d (e.g. 1h)",
            param_hint="--for",
        )
    return float(match.group(1)) * _UNIT[match.group(2)]


@click.group()
def watcher() -> None:
    """The watcher: restarts guests found down, fails over from dead, fenced nodes."""


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@watcher.command("status")
@output_option
@pass_ctx
def watcher_status(ctx: Ctx, fmt: str) -> None:
    """The last round: what the watcher found and what it did."""
    with ctx.client() as client:
        data = client.watcher()
    if fmt == "json":
        output.emit_json(data)
        return
    say = output.say
    if not data.get("leader"):
        say(data.get("message", "this master does not lead"))
        return
    pause = data.get("pause")
    if not data["enabled"]:
        state = "disabled ([watcher] interval = 0)"
    elif pause is not None:
        state = "paused " + (
            "until resumed" if pause["until"] is None else f"until {_when(pause['until'])}"
        )
    else:
        state = f"active, every {data['interval']:g}s"
    say(f"watcher: {state}; {data['rounds']} round(s) so far")
    last: dict[str, Any] | None = data.get("last_round")
    if last is None:
        return
    say(f"last round {last['round']} at {_when(last['started'])} ({last['duration']:g}s)")
    if last.get("error"):
        say(f"  failed: {last['error']}")
        return
    if last.get("skipped"):
        say(f"  skipped: {last['skipped']}")
        return
    rows = []
    for name, node in last["nodes"].items():
        detail = node.get("fence") or node.get("error") or ""
        if node.get("unreachable_for") is not None:
            detail = f"for {node['unreachable_for']:.0f}s: {detail}"
        rows.append((name, node["state"], detail))
    output.table("Nodes", ["Node", "State", "Detail"], rows)
    output.table(
        "Instances",
        ["Instance", "Observed", "Watcher"],
        [(n, i["state"], i["message"] or "") for n, i in last["instances"].items()],
    )
    actions = data.get("recent_actions") or []
    if actions:
        output.table(
            "Recent actions",
            ["When", "Action", "On", "Job", "Why"],
            [
                (
                    _when(a["at"]),
                    a["kind"],
                    a.get("instance") or a.get("node") or "",
                    a.get("job") or "",
                    a.get("reason") or a.get("message") or "",
                )
                for a in actions
            ],
        )


@watcher.command("pause")
@click.option(
    "--for", "duration", metavar="DURATION", help="e.g. 30m, 1h, 2d (default: until resumed)."
)
@submit_option
@pass_ctx
def watcher_pause(ctx: Ctx, duration: str | None, submit_only: bool) -> None:
    """Pause the watcher (a maintenance window): it observes and acts on nothing."""
    seconds = None if duration is None else parse_duration(duration)
    job = run_opcode(ctx, OpWatcherSetPause(paused=True, duration=seconds), submit_only=submit_only)
    if job:
        until = job["ops"][0]["result"]["until"]
        click.echo(
            "watcher paused " + ("until resumed" if until is None else f"until {_when(until)}")
        )


@watcher.command("resume")
@submit_option
@pass_ctx
def watcher_resume(ctx: Ctx, submit_only: bool) -> None:
    """Resume the watcher."""
    if run_opcode(ctx, OpWatcherSetPause(paused=False), submit_only=submit_only):
        click.echo("watcher resumed")
