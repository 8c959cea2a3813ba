"""docs/monitoring.md lists every metric the daemon exports, with its type; the alert
rules there and the Grafana dashboard use only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from extjobs.engine.metrics import Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "monitoring.md"
DASHBOARD = DOCS / "grafana" / "extjobs.json"

NAME = re.compile(r"\b((?:extjobs|process|python)_[a-z_]+)")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("", "_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def exported() -> dict[str, str]:
    """The name of every series a daemon's registry can expose, to its family's type."""
    names = {}
    for family in Metrics().registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.type
    return names


def documented() -> dict[str, str]:
    """``name → type`` of the rows of the metric tables."""
    rows = re.findall(r"^\| `([a-z_]+)` \| (\w+) \|", DOC.read_text(), flags=re.MULTILINE)
    return dict(rows)


def test_every_extjobs_metric_is_documented_with_its_type() -> None:
    families = {
        f.name: f.type for f in Metrics().registry.collect() if f.name.startswith("extjobs_")
    }
    table = documented()
    for name, kind in families.items():
        shown = name + "_total" if kind == "counter" else name
        assert table.get(shown) == kind, f"{shown} ({kind}) is not in the table of {DOC.name}"
    extra = {n for n in table if n.startswith("extjobs_")} - {
        n + "_total" if k == "counter" else n for n, k in families.items()
    }
    assert not extra, f"{DOC.name} lists metrics that do not exist: {sorted(extra)}"


def test_alert_rules_and_examples_use_existing_metrics() -> None:
    names = exported()
    used = set(NAME.findall(DOC.read_text())) - {"process_"}
    unknown = {n for n in used if n not in names and not n.endswith("_")}
    assert not unknown, f"{DOC.name} uses unknown metrics: {sorted(unknown)}"


def test_the_dashboard_queries_only_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    used = {n for expr in exprs for n in NAME.findall(expr)}
    unknown = used - set(names)
    assert not unknown, f"the dashboard queries unknown metrics: {sorted(unknown)}"
    # Every extjobs metric family shows somewhere on it.
    families = {f.name for f in Metrics().registry.collect() if f.name.startswith("extjobs_")}
    shown = {f for f in families if any(n.startswith(f) for n in used)}
    assert shown == families, f"not on the dashboard: {sorted(families - shown)}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
