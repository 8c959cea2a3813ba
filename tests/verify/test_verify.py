"""extjobs verify [--repair]: findings from the nodes and the journal, and safe repairs."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instances.conftest import KINDS, Cluster, leftovers, open_cluster

pytestmark = pytest.mark.spawns


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp(f"verify-{request.param}")
    with open_cluster(request.param, base, nodes=2) as c:
        yield c


def verify(cluster: Cluster, *args: str) -> tuple[int, dict[str, Any]]:
    out = cluster.cli("verify", "--output", "json", *args)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def kinds(result: dict[str, Any]) -> list[str]:
    return sorted(f["kind"] for f in result["findings"])


def test_clean_cluster_verifies(cluster: Cluster) -> None:
    vols = cluster.vol_dir("clean")
    cluster.ok(
        "instance",
        "add",
        "v1",
        "-n",
        "node1",
        "--disk",
        f"0:size=4M,dir={vols},provider=sharedfile",
    )
    code, result = verify(cluster)
    assert (code, result["findings"]) == (0, [])
    assert "consistent" in cluster.ok("verify")
    cluster.ok("instance", "remove", "v1")


def test_leaked_volume_is_found_and_removed(cluster: Cluster) -> None:
    vols = cluster.vol_dir("leak")
    # setinfo fails, so add undoes what it created; remove fails too, so a volume leaks.
    cluster.install_copy(
        "leaky",
        "sharedfile",
        {
            "setinfo": "echo 'injected: setinfo' >&2; exit 1\n",
            "remove": "echo 'injected: remove' >&2; exit 1\n",
        },
    )
    cluster.fails(
        "instance",
        "add",
        "v2",
        "-n",
        "node1",
        "--disk",
        f"0:size=4M,provider=leaky,dir={vols}",
        message="injected: setinfo",
    )
    assert [p for p in leftovers(vols) if p.endswith(".img")]
    code, result = verify(cluster)
    assert code == 1
    assert kinds(result) == ["leaked-volume"]
    finding = result["findings"][0]
    assert "neither in the configuration nor removed" in finding["message"]
    assert finding["repair"]["OP_ID"] == "OP_VOLUME_CLEANUP"
    # Repair with a working remove script again.
    cluster.install_copy("leaky", "sharedfile")
    code, result = verify(cluster, "--repair")
    assert code == 0, result
    assert result["findings"] == []
    assert [r["status"] for r in result["repairs"]] == ["success"]
    assert leftovers(vols) == []


def test_interrupted_removal_is_rerun(cluster: Cluster) -> None:
    vols = cluster.vol_dir("removal")
    cluster.install_copy("busy", "sharedfile")
    cluster.ok(
        "instance", "add", "v3", "-n", "node1", "--disk", f"0:size=4M,provider=busy,dir={vols}"
    )
    cluster.install_copy("busy", "sharedfile", {"remove": "echo 'injected: busy' >&2; exit 1\n"})
    cluster.fails("instance", "remove", "v3", message="not fully removed")
    code, result = verify(cluster)
    assert code == 1
    assert kinds(result) == ["interrupted-removal"]
    assert "injected: busy" in result["findings"][0]["message"]
    cluster.install_copy("busy", "sharedfile")
    code, result = verify(cluster, "--repair")
    assert code == 0, result
    assert "v3" not in cluster.instance_names()
    assert leftovers(vols) == []


def test_guest_that_died_is_reported(cluster: Cluster) -> None:
    vols = cluster.vol_dir("died")
    cluster.ok(
        "instance",
        "add",
        "v4",
        "-n",
        "node2",
        "--disk",
        f"0:size=4M,provider=sharedfile,dir={vols}",
    )
    pid = cluster.guest_pid("v4", node="node2")
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    code, result = verify(cluster)
    assert code == 1
    assert kinds(result) == ["not-running"]
    assert "v4 should run on node2" in result["findings"][0]["message"]
    assert result["findings"][0]["repair"] is None
    # --repair does not touch what has no safe fix.
    code, result = verify(cluster, "--repair")
    assert code == 1
    assert result["repairs"] == []
    cluster.ok("instance", "startup", "v4")
    assert verify(cluster)[0] == 0
    cluster.ok("instance", "remove", "v4")


def test_cleanup_refuses_to_touch_configured_disks(cluster: Cluster) -> None:
    vols = cluster.vol_dir("owned")
    cluster.install_copy("owned", "sharedfile")
    cluster.ok(
        "instance", "add", "v5", "-n", "node1", "--disk", f"0:size=4M,provider=owned,dir={vols}"
    )
    volume = cluster.instance("v5")["disks"][0]["volume"]
    refused = cluster.tc.run_job(
        [{"OP_ID": "OP_VOLUME_CLEANUP", "volume": volume, "detach_nodes": ["node1"]}]
    )
    assert refused["status"] == "error"
    assert "primary of v5" in refused["ops"][0]["error"]["message"]
    refused = cluster.tc.run_job([{"OP_ID": "OP_VOLUME_CLEANUP", "volume": volume, "remove": True}])
    assert refused["status"] == "error"
    assert "not removed by a cleanup" in refused["ops"][0]["error"]["message"]
    assert len([p for p in leftovers(vols) if p.endswith(".img")]) == 1
    cluster.ok("instance", "remove", "v5")
    assert verify(cluster)[0] == 0


def test_instance_added_stopped_holds_its_disks_nowhere(cluster: Cluster) -> None:
    strict = Path(__file__).resolve().parents[1] / "data" / "providers" / "strict"
    for node in cluster.tc.nodes:
        cluster.tc.install_provider(node, "strict", strict)
    vols = cluster.vol_dir("stopped")
    out = cluster.ok(
        "instance",
        "add",
        "v6",
        "-n",
        "node1",
        "--no-start",
        "--disk",
        f"0:size=4M,provider=strict,dir={vols}",
    )
    assert "not started" in out
    assert cluster.instance("v6")["state"] == "down"
    volume = cluster.instance("v6")["disks"][0]["volume"]
    assert not (vols / f"{volume}.attached").exists()
    assert not (vols / f"{volume}.open").exists()
    assert verify(cluster)[0] == 0
    cluster.ok("instance", "startup", "v6")
    assert sorted(p.name for p in (vols / f"{volume}.attached").iterdir()) == ["node1"]
    cluster.ok("instance", "remove", "v6")
