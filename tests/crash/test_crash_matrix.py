"""The crash matrix: SIGKILL the daemon before and after every journal point of every
flow, restart it, and check that the cluster ends consistent.

For each flow the number of steps K is measured once; then for every k in 1..K the
daemon is killed just before it journals step k, and (separately) just after it records
step k's result. After the restart every job must end in a terminal state with a
recovery line in its log; no disk may be attached on two nodes or on a node other than a
running instance's primary; every volume file left must belong to the configuration;
and ``extjobs verify`` must report a clean cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from extjobs.api.client import Client
from tests.instances.conftest import Cluster, open_cluster

pytestmark = pytest.mark.spawns

STRICT = Path(__file__).resolve().parents[1] / "data" / "providers" / "strict"
FINAL = ("success", "error", "canceled")


@attrs.frozen
class Flow:
    name: str
    setup: Callable[[Cluster, Path], None]
    op: dict[str, Any]


def add_op(vols: Path, *, start: bool = True) -> dict[str, Any]:
    return {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": "crash1",
        "pnode": "node1",
        "disks": [{"size": 4, "provider": "strict", "params": {"dir": str(vols)}}],
        "start": start,
    }


def _add(c: Cluster, vols: Path) -> None:
    assert c.tc.run_job([add_op(vols)])["status"] == "success"


def _add_stopped(c: Cluster, vols: Path) -> None:
    _add(c, vols)
    job = c.tc.run_job([{"OP_ID": "OP_INSTANCE_SHUTDOWN", "instance_name": "crash1"}])
    assert job["status"] == "success"


def _nothing(c: Cluster, vols: Path) -> None:
    pass


def flows(vols: Path) -> list[Flow]:
    name = {"instance_name": "crash1"}
    return [
        Flow("add", _nothing, add_op(vols)),
        Flow("grow", _add, {"OP_ID": "OP_INSTANCE_GROW_DISK", **name, "disk": 0, "amount": 4}),
        Flow("shutdown", _add, {"OP_ID": "OP_INSTANCE_SHUTDOWN", **name}),
        Flow("startup", _add_stopped, {"OP_ID": "OP_INSTANCE_STARTUP", **name}),
        Flow("remove", _add, {"OP_ID": "OP_INSTANCE_REMOVE", **name}),
        Flow("migrate", _add, {"OP_ID": "OP_INSTANCE_MIGRATE", **name, "target_node": "node2"}),
        Flow("failover", _add, {"OP_ID": "OP_INSTANCE_FAILOVER", **name, "target_node": "node2"}),
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("crash")
    with open_cluster("embedded", base, nodes=2) as c:
        for node in c.tc.nodes:
            c.tc.install_provider(node, "strict", STRICT)
        yield c


def markers(vols: Path, suffix: str) -> dict[str, set[str]]:
    return {
        d.name.removesuffix(suffix): {p.name for p in d.iterdir()}
        for d in vols.glob(f"*{suffix}")
        if d.is_dir()
    }


def check_consistent(c: Cluster, vols: Path, what: str) -> None:
    instances = {i["name"]: c.instance(i["name"]) for i in c.tc.client.instances()}
    configured: dict[str, dict[str, Any]] = {}
    for inst in instances.values():
        for disk in inst["disks"]:
            configured[disk["volume"]] = inst
    # Every volume left on the storage belongs to the configuration (or its cleanup list).
    images = {p.name.removesuffix(".img") for p in vols.glob("*.img")}
    assert images <= set(configured), f"{what}: leaked volumes {images - set(configured)}"
    # No disk attached on two nodes; attached only on a running instance's primary.
    for volume, nodes in markers(vols, ".attached").items():
        assert len(nodes) <= 1, f"{what}: {volume} attached on {nodes}"
        inst = configured.get(volume)
        if nodes:
            assert inst is not None, f"{what}: unconfigured {volume} attached on {nodes}"
            assert nodes == {inst["primary"]}, f"{what}: {volume} attached on {nodes}"
    for volume, opened in markers(vols, ".open").items():
        holders = {m.split(".")[0] for m in opened}
        assert len(holders) <= 1, f"{what}: {volume} open on {opened}"
    verify = c.cli("verify", "--output", "json")
    assert verify.returncode == 0, f"{what}: verify found {verify.stdout}{verify.stderr}"


def reset(c: Cluster, vols: Path) -> None:
    if "crash1" in c.instance_names():
        job = c.tc.run_job([{"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": "crash1"}])
        assert job["status"] == "success", json.dumps(job["log"][-5:], indent=1)
    assert list(vols.glob("*.img")) == []


def crash_and_recover(c: Cluster, flow: Flow, vols: Path, where: str, k: int) -> dict[str, Any]:
    crash_file = c.tc.base / "crash-at"
    flow.setup(c, vols)
    next_id = max(j["id"] for j in c.tc.client.jobs()) + 1
    crash_file.write_text(f"{where}:{k}:{next_id}")
    try:
        [job_id] = c.tc.client.submit({"ops": [flow.op]})
        assert job_id == next_id
        process = c.tc.daemon.process
        assert process is not None
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is not None, f"{flow.name} {where}:{k}: the daemon did not crash"
    finally:
        crash_file.unlink()
    c.tc.client.close()
    c.tc.daemon.start()
    c.tc.client = Client(c.tc.daemon.socket)
    job = c.tc.wait(job_id, timeout=120)
    assert job["status"] in FINAL
    assert any(e["type"] == "recovery" for e in job["log"]), job["log"]
    return job


def count_steps(c: Cluster, flow: Flow, vols: Path) -> int:
    flow.setup(c, vols)
    job = c.tc.run_job([flow.op])
    assert job["status"] == "success", json.dumps(job["log"][-8:], indent=1)
    check_consistent(c, vols, f"{flow.name} without a crash")
    reset(c, vols)
    return sum(1 for e in job["log"] if e["type"] == "step")


@pytest.mark.slow
@pytest.mark.parametrize(
    "flow_name", ["add", "grow", "shutdown", "startup", "remove", "migrate", "failover"]
)
def test_crash_at_every_journal_point(cluster: Cluster, flow_name: str) -> None:
    vols = cluster.vol_dir(f"crash-{flow_name}")
    cluster.tc.daemon.env = {"EXTJOBS_CRASH_FILE": str(cluster.tc.base / "crash-at")}
    cluster.tc.restart_daemon(kill=False)
    flow = next(f for f in flows(vols) if f.name == flow_name)
    steps = count_steps(cluster, flow, vols)
    assert steps >= 3
    outcomes: dict[str, str] = {}
    for where in ("before", "after"):
        for k in range(1, steps + 1):
            what = f"{flow_name} killed {where} step {k}/{steps}"
            job = crash_and_recover(cluster, flow, vols, where, k)
            outcomes[f"{where}:{k}"] = job["status"]
            check_consistent(cluster, vols, what)
            reset(cluster, vols)
    assert set(outcomes.values()) <= set(FINAL)
