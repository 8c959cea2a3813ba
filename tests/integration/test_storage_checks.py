"""Storage promises, proven through a daemon and embedded nodes: a provider name that
leaves the search path copies nothing anywhere; a disk parameter must be declared on
every node of the group, not only on the primary; ``[storage] output_cap`` is the cap
the runner applies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import PROVIDERS, TestCluster, start_cluster
from tests.harness.journal import read_journal

pytestmark = pytest.mark.spawns


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    base = tmp_path_factory.mktemp("storage-checks")
    # Every add asks the nodes again: the tests change what they declare between jobs.
    with start_cluster("embedded", 2, base, sections="[storage]\ndiagnose_cache = 0\n") as c:
        c.init(providers=())
        yield c


def everything_under(top: Path) -> set[Path]:
    return set(top.rglob("*"))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../evil", id="parent"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/../../evil", id="nested"),
        pytest.param("{base}/evil", id="absolute"),
        pytest.param(".evil", id="dotted"),
        pytest.param("x" * 256, id="longer-than-a-file-name"),
    ],
)
def test_install_under_a_name_outside_the_search_path_copies_nothing(
    cluster: TestCluster, name: str
) -> None:
    source = cluster.base / "evil-source"
    if not source.exists():
        shutil.copytree(PROVIDERS / "sharedfile", source)
    name = name.format(base=cluster.base)
    before = everything_under(cluster.base)
    jobs = [j["id"] for j in cluster.client.jobs()]
    out = cluster.cli("storage", "install", str(source), "--name", name)
    assert out.returncode != 0, out.stdout + out.stderr
    assert repr(name)[:30] in out.stderr, out.stderr  # long names are cut
    # Refused when the request is decoded: no job exists, so no step was journalled …
    assert [j["id"] for j in cluster.client.jobs()] == jobs
    # … and no file appeared anywhere: not in a node's root, not beside the search path.
    state = cluster.base / "state"
    appeared = {
        p
        for p in everything_under(cluster.base) - before
        if state not in p.parents and p.suffix != ".log"
    }
    assert appeared == set(), sorted(appeared)


def add_op(name: str, vols: Path, **params: str) -> dict[str, Any]:
    disk = {"size": 4, "provider": "grouped", "params": {"dir": str(vols), **params}}
    # Not started: no guest process to outlive the test if it fails.
    op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": name, "pnode": "node1", "start": False}
    return {**op, "disks": [disk]}


def declare(cluster: TestCluster, node: str, line: str) -> None:
    path = cluster.search_path(cluster.node(node)) / "grouped" / "parameters.list"
    with path.open("a") as f:
        f.write(line + "\n")


def test_a_parameter_declared_on_the_primary_only_is_refused(cluster: TestCluster) -> None:
    """node1 declares ``tier``, node2 does not: an instance on node1 may move to node2,
    whose provider would not understand ``tier``, so the add is refused before any
    provider script runs; once node2 declares it too, the same add is accepted."""
    for node in cluster.nodes:
        cluster.install_provider(node, "grouped", PROVIDERS / "sharedfile")
    declare(cluster, "node1", "tier Storage tier (this node only)")
    vols = cluster.base / "vols-grouped"
    vols.mkdir()

    job = cluster.run_job([add_op("g1", vols, tier="gold")])
    assert job["status"] == "error", json.dumps(job["log"][-5:], indent=1)
    error = job["ops"][0]["error"]
    assert error["field"] == "params", error
    assert "unknown parameter tier for ExtStorage provider 'grouped'" in error["message"]
    steps = read_journal(cluster.base / "state", job["id"])
    assert [r.kind for r in steps] == ["command", "command"], steps  # the two diagnoses
    assert list(vols.iterdir()) == []
    assert "g1" not in [i["name"] for i in cluster.client.instances()]

    declare(cluster, "node2", "tier Storage tier")
    job = cluster.run_job([add_op("g1", vols, tier="gold")])
    assert job["status"] == "success", json.dumps(job["log"][-5:], indent=1)
    remove = cluster.run_job([{"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": "g1"}])
    assert remove["status"] == "success"


LOUD = 100_000


def test_the_configured_output_cap_is_what_a_step_keeps(tmp_path: Path) -> None:
    cap = 2048
    with start_cluster("embedded", 1, tmp_path, sections=f"[storage]\noutput_cap = {cap}\n") as c:
        c.init(providers=())
        dest = c.install_provider(c.nodes[0], "loud", PROVIDERS / "sharedfile")
        (dest / "verify").rename(dest / "verify.real")
        (dest / "verify").write_text(
            f'#!/bin/sh\nhead -c {LOUD} /dev/zero | tr "\\0" x\nexec "${{0%/*}}/verify.real"\n'
        )
        (dest / "verify").chmod(0o755)
        vols = tmp_path / "vols"
        vols.mkdir()
        disk = {"size": 4, "provider": "loud", "params": {"dir": str(vols)}}
        op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "l1", "pnode": "node1"}
        job = c.run_job([{**op, "disks": [disk], "start": False}])
        assert job["status"] == "success", json.dumps(job["log"][-5:], indent=1)
        [verify] = [e for e in job["log"] if e["message"].startswith("node1: verify disk0")]
        assert verify["data"]["stdout_dropped"] == LOUD - cap, verify["data"]
        assert len(verify["data"]["stdout_tail"]) < cap, verify["data"]
