"""The dashboard's HTML: pure functions from the API's views to page fragments.

Every page is rendered here, on the daemon, and nowhere else: the browser's script only
swaps in a fragment (the ``<section id="live">`` of a page) that the server sent again
over server-sent events when it changed, so a page works without the script (it is
just not live then). Every value is escaped (:func:`html.escape`) where it is written.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from extjobs.model.jobs import Job, LogEntry, LogKind

PREFIX = "/ui"


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def mib(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 1024:g} GiB" if size >= 1024 and size % 1024 == 0 else f"{size} MiB"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """A table whose cells are already HTML."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">nothing to show</td></tr>'
    return f'<table class="{e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def badge(text: str) -> str:
    kind = text.split()[0].rstrip(",;:") if text else ""
    return f'<span class="badge {e(kind)}">{e(text)}</span>'


def page(title: str, body: str, *, nav: str = "", user: str | None = None, csrf: str = "") -> str:
    """A whole page around ``body``."""
    links = "".join(
        f'<a href="{PREFIX}/{key}"{" class=current" if key == nav else ""}>{label}</a>'
        for key, label in (("jobs", "Jobs"), ("instances", "Instances"), ("nodes", "Nodes"))
    )
    who = ""
    if user is not None:
        who = (
            f'<form method="post" action="{PREFIX}/logout" class="who">{e(user)} '
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<button type="submit">log out</button></form>'
        )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · extjobs</title>"
        f'<link rel="stylesheet" href="{PREFIX}/static/dashboard.css">'
        f'<script src="{PREFIX}/static/dashboard.js" defer></script>'
        f'</head><body><header><span class="brand">extjobs</span><nav>{links}</nav>'
        f'<span id="conn" class="conn">static</span>{who}</header>'
        f"<main>{body}</main></body></html>"
    )


def live(events: str, fragment: str) -> str:
    """The part of a page that its event stream replaces."""
    return f'<section id="live" data-events="{e(events)}">{fragment}</section>'


def job_link(job_id: int) -> str:
    return f'<a href="{PREFIX}/jobs/{job_id}">{job_id}</a>'


def instance_link(name: str) -> str:
    return f'<a href="{PREFIX}/instances/{e(name)}">{e(name)}</a>'


def duration(job: Job) -> str:
    if job.started is None:
        return ""
    end = job.ended if job.ended is not None else time.time()
    return seconds(end - job.started)


# -- jobs -----------------------------------------------------------------------------


FILTERS = ("status", "instance", "node", "opcode", "since", "limit")


def job_filters(params: Mapping[str, str], opcodes: Sequence[str], statuses: Sequence[str]) -> str:
    def select(name: str, choices: Sequence[str]) -> str:
        chosen = params.get(name, "")
        options = "".join(
            f'<option value="{e(c)}"{" selected" if c == chosen else ""}>{e(c or "any")}</option>'
            for c in ("", *choices)
        )
        return f'<label>{name} <select name="{name}">{options}</select></label>'

    def text(name: str, hint: str) -> str:
        return (
            f'<label>{name} <input name="{name}" value="{e(params.get(name, ""))}" '
            f'placeholder="{e(hint)}" size="10"></label>'
        )

    return (
        f'<form class="filters" method="get" action="{PREFIX}/jobs">'
        + select("status", statuses)
        + text("instance", "name")
        + text("node", "name")
        + select("opcode", opcodes)
        + text("since", "2h, 30m, 1d")
        + text("limit", "100")
        + '<button type="submit">filter</button></form>'
    )


def jobs_fragment(jobs: Sequence[Job], params: Mapping[str, str], cursor: int | None) -> str:
    rows = [
        (
            job_link(job.id),
            badge(job.status.value),
            "<br>".join(e(s) for s in job.summaries()),
            e(when(job.received)),
            e(duration(job)),
            e(job.submitter or ""),
            e(job.waiting_for or ""),
        )
        for job in jobs
    ]
    out = table(
        ["ID", "Status", "Summary", "Received", "Duration", "Submitter", "Waiting for"],
        rows,
        cls="jobs",
    )
    if cursor is not None:
        kept = {k: v for k, v in params.items() if k in FILTERS and v}
        out += (
            f'<p class="more"><a href="{PREFIX}/jobs?{e(urlencode({**kept, "cursor": cursor}))}">'
            "older jobs →</a></p>"
        )
    return out


def _step_rows(entries: Sequence[LogEntry]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for entry in entries:
        if entry.kind is not LogKind.STEP:
            continue
        data = entry.data or {}
        error = data.get("error") or {}
        exit_status = data.get("exit_status", error.get("exit_status"))
        ok = not error and exit_status in (None, 0)
        tail = "\n".join(
            str(t) for t in (data.get("stdout_tail"), data.get("stderr_tail")) if t
        ).strip()
        # The line reads "NODE: DESCRIPTION: OUTCOME"; node and outcome have columns.
        what = entry.message.split(": ", 1)[-1].rsplit(": ", 1)[0]
        rows.append(
            (
                e(data.get("node", "")),
                e(what),
                e(data.get("provider") or data.get("action") or ""),
                e(seconds(data.get("duration"))),
                badge("done" if ok else "failed") + (f" {e(exit_status)}" if exit_status else ""),
                f"<pre>{e(tail[-800:])}</pre>" if tail else "",
            )
        )
    return rows


def job_fragment(view: Mapping[str, Any], job: Job, entries: Sequence[LogEntry]) -> str:
    """The live part of a job's page: its opcodes, its steps, its log."""
    summaries = job.summaries()
    ops = table(
        ["#", "Opcode", "Status", "Started", "Duration", "Result or error"],
        [
            (
                e(op["index"]),
                e(summaries[op["index"]]),
                badge(op["status"]),
                e(when(op["started"])),
                e(seconds(op["duration"])),
                f"<code>{e((op['error'] or {}).get('message', ''))}</code>" if op["error"] else "",
            )
            for op in view["ops"]
        ],
        cls="ops",
    )
    steps = table(
        ["Node", "Step", "Provider", "Duration", "Exit", "Output tail"],
        _step_rows(entries),
        cls="steps",
    )
    log = "".join(
        f'<li class="{e(entry.kind.value)}"><span class="ts">{e(when(entry.timestamp))}</span> '
        f'<span class="kind">{e(entry.kind.value)}</span> {e(entry.message)}</li>'
        for entry in entries
    )
    head = (
        f"<p>{badge(job.status.value)} received {e(when(job.received))}"
        + (f", started {e(when(job.started))}" if job.started else "")
        + (f", ended {e(when(job.ended))}" if job.ended else "")
        + (f", took {e(duration(job))}" if job.ended and job.started else "")
        + (f" · by {e(job.submitter)}" if job.submitter else "")
        + (f" · waiting for {e(job.waiting_for)}" if job.waiting_for else "")
        + "</p>"
    )
    return (
        head
        + f"<h2>Opcodes</h2>{ops}<h2>Steps</h2>{steps}"
        + f'<h2>Log</h2><ol class="log" data-last="{entries[-1].serial if entries else 0}">'
        + f"{log}</ol>"
    )


# -- instances ------------------------------------------------------------------------


def _where(attached: Sequence[str] | None) -> str:
    if attached is None:
        return '<span class="unknown">no record</span>'
    if not attached:
        return '<span class="none">not attached</span>'
    cls = "two" if len(attached) > 1 else "one"
    return f'<span class="attached {cls}">{", ".join(e(n) for n in attached)}</span>'


def disks_table(instance: Mapping[str, Any], attached: Mapping[str, Sequence[str]]) -> str:
    return table(
        ["Disk", "Provider / pool", "Size", "Volume", "Attached on"],
        [
            (
                e(disk["index"]) + (f" ({e(disk['name'])})" if disk.get("name") else ""),
                e(disk["provider"]) + (f" / {e(disk['pool'])}" if disk.get("pool") else ""),
                e(mib(disk["size"])),
                f"<code>{e(disk['volume'])}</code>",
                _where(attached.get(disk["volume"])),
            )
            for disk in instance["disks"]
        ],
        cls="disks",
    )


def observed(instance: Mapping[str, Any]) -> str:
    """The watcher's ``observed`` state of an instance, when its view carries one."""
    value = instance.get("observed")
    if value is None:
        return '<span class="unknown">not observed</span>'
    if isinstance(value, Mapping):
        state = value.get("state") or ""
        nodes = ", ".join(value.get("running_on") or ())
        seen = value.get("at")
        text = badge(str(state)) + (f" on {e(nodes)}" if nodes else "")
        if value.get("message"):
            text += f' <span class="note">{e(value["message"])}</span>'
        return text + (f' <span class="ts">{e(when(seen))}</span>' if seen else "")
    return badge(str(value))


def instances_fragment(
    instances: Sequence[Mapping[str, Any]], attached: Mapping[str, Sequence[str]]
) -> str:
    rows = [
        (
            instance_link(i["name"]),
            badge(i["state"]),
            observed(i),
            e(i["primary"]),
            e(i.get("group") or ""),
            e(i["hypervisor"]),
            disks_table(i, attached),
        )
        for i in instances
    ]
    return table(
        ["Instance", "Configured", "Observed", "Primary", "Group", "Hypervisor", "Disks"],
        rows,
        cls="instances",
    )


def instance_fragment(
    instance: Mapping[str, Any], attached: Mapping[str, Sequence[str]], jobs: Sequence[Job]
) -> str:
    facts = [
        ("configured state", badge(instance["state"])),
        ("observed state", observed(instance)),
        ("primary node", e(instance["primary"])),
        ("group", e(instance.get("group") or "")),
        ("hypervisor", e(instance["hypervisor"])),
        ("memory", e(mib(instance["memory"]))),
        ("vcpus", e(instance["vcpus"])),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    recent = jobs_fragment(jobs, {}, None)
    return f'<dl class="facts">{dl}</dl><h2>Disks</h2>{disks_table(instance, attached)}' + (
        f"<h2>Recent jobs</h2>{recent}"
    )


# -- nodes and groups -----------------------------------------------------------------


def _pool(name: str, provider: str | None, validity: Mapping[str, Any]) -> str:
    """A pool of a group, its provider, and whether the provider is valid there."""
    if provider is None:
        return e(name)
    known = validity.get(provider)
    verdict = "" if known is None else " " + badge("valid" if known.get("valid") else "invalid")
    return f"{e(name)} → {e(provider)}{verdict}"


def nodes_fragment(
    nodes: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]],
    connections: Mapping[str, int],
    diagnose: Mapping[str, Any] | None,
    diagnose_job: Job | None,
    pools: Mapping[str, str] | None = None,
    watched: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """Nodes and groups; ``pools`` maps each pool to its provider (the cluster's);
    ``watched``: the watcher's last word on each node (its status report's ``nodes``)."""
    pools = pools or {}
    per_node = (diagnose or {}).get("nodes", {})
    per_group = (diagnose or {}).get("groups", {})

    def reach(name: str, offline: bool) -> str:
        if offline:
            return badge("offline")
        open_now = connections.get(name, 0)
        said = per_node.get(name)
        last = ""
        if said is not None:
            last = (
                f' · last diagnose: <span class="failed">{e(said["error"])}</span>'
                if "error" in said
                else " · last diagnose: answered"
            )
        ssh = badge("connected") if open_now else '<span class="none">no open connection</span>'
        seen = (watched or {}).get(name)
        if seen is not None and seen.get("state") not in (None, "not asked yet"):
            state = str(seen["state"])
            verdict = badge("reachable") if state == "ok" else badge(state)
            if seen.get("error"):
                verdict += f' <span class="note">{e(seen["error"])}</span>'
            if seen.get("last_answer"):
                verdict += f' <span class="ts">answered {e(when(seen["last_answer"]))}</span>'
            ssh = f"{verdict} · {ssh}"
        return ssh + last

    node_rows = [
        (
            e(n["name"]),
            e(n["group"]),
            e(f"{n.get('user', '')}@{n['host']}:{n['port']}"),
            reach(n["name"], bool(n.get("offline"))),
            " ".join(badge(flag) for flag in ("offline", "drained") if n.get(flag))
            or badge("online"),
            ", ".join(instance_link(i) for i in n.get("instances", [])),
        )
        for n in nodes
    ]
    group_rows = []
    for name, group in sorted(groups.items()):
        providers = per_group.get(name, {})
        validity = "<br>".join(
            (badge("valid") if st.get("valid") else badge("invalid"))
            + f" {e(provider)}"
            + (
                " (" + "; ".join(f"{e(n)}: {e(r)}" for n, r in st.get("reasons", {}).items()) + ")"
                if st.get("reasons")
                else ""
            )
            for provider, st in sorted(providers.items())
        )

        group_rows.append(
            (
                e(name),
                "<br>".join(_pool(p, pools.get(p), providers) for p in group.get("pools", ())),
                validity or '<span class="unknown">no diagnose yet</span>',
                ", ".join(e(n["name"]) for n in nodes if n["group"] == name),
            )
        )
    source = (
        f'<p class="note">Provider validity from {job_link(diagnose_job.id)} '
        f"({e(when(diagnose_job.ended))}); run <code>extjobs storage diagnose</code> to "
        "refresh it.</p>"
        if diagnose_job is not None
        else '<p class="note">No storage diagnose has run yet: '
        "<code>extjobs storage diagnose</code>.</p>"
    )
    return (
        "<h2>Nodes</h2>"
        + table(["Node", "Group", "Address", "Reachability", "State", "Instances"], node_rows)
        + "<h2>Groups</h2>"
        + table(
            ["Group", "Pools (→ provider)", "Providers (storage diagnose)", "Nodes"], group_rows
        )
        + source
    )


def not_found(what: str) -> str:
    return (
        f'<h1>Not found</h1><p class="error">{e(what)}</p><p><a href="{PREFIX}/jobs">jobs</a></p>'
    )


def login_form(csrf: str, target: str, error: str | None) -> str:
    problem = f'<p class="error">{e(error)}</p>' if error else ""
    return (
        "<h1>Log in</h1><p>The dashboard takes the same tokens as the API "
        "(the daemon's token file); the token is sent once and a session cookie kept.</p>"
        f'{problem}<form method="post" action="{PREFIX}/login" class="login">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<input type="hidden" name="next" value="{e(target)}">'
        '<label>token <input type="password" name="token" autocomplete="current-password" '
        'autofocus required></label> <button type="submit">log in</button></form>'
    )
