"""Storage pools and capacity through the CLI and the daemon, on embedded nodes with the
shipped sharedfile provider (and a copy of it that records what create received)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness.cluster import PROVIDERS, TestCluster, start_cluster

pytestmark = pytest.mark.spawns

#: Written after the shebang of the recording copy's create: its EXTP_* environment.
RECORD = 'env | grep "^EXTP_" | sort > "$EXTP_DIR/$VOL_NAME.env"\n'


def recording_provider(tmp_path: Path) -> Path:
    source = tmp_path / "recfile"
    shutil.copytree(PROVIDERS / "sharedfile", source)
    create = source / "create"
    shebang, rest = create.read_text().split("\n", 1)
    create.write_text(f"{shebang}\n{RECORD}{rest}")
    return source


def ok(c: TestCluster, *args: str) -> str:
    out = c.cli(*args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def test_pools_check_the_nodes_merge_parameters_and_refuse_what_does_not_fit(
    tmp_path: Path,
) -> None:
    vols, own = tmp_path / "vols", tmp_path / "own"
    vols.mkdir()
    own.mkdir()
    with start_cluster("embedded", 2, tmp_path) as c:
        c.init(providers=("sharedfile",))
        source = recording_provider(tmp_path)
        for node in c.nodes:
            c.install_provider(node, "recfile", source)

        # add: a provider valid in no group is refused, saying what to run
        out = c.cli("storage", "pool", "add", "ghost", "nosuch", f"dir={vols}")
        assert out.returncode == 1
        assert "provider 'nosuch' is valid in no node group" in out.stderr
        assert "node1: not found in" in out.stderr
        assert "extjobs storage install" in out.stderr
        assert "extjobs storage diagnose nosuch" in out.stderr
        out = c.cli("storage", "pool", "add", "fast", "recfile", "colour=blue")
        assert out.returncode == 1
        assert "colour" in out.stderr

        # connect: refused while one node's copy of the provider is broken, naming it
        ok(c, "storage", "pool", "add", "fast", "recfile", f"dir={vols}")
        broken = c.search_path(c.node("node2")) / "recfile" / "grow"
        broken.chmod(0o644)
        out = c.cli("storage", "pool", "connect", "fast", "default")
        assert out.returncode == 1
        assert "node2: script grow is not executable" in out.stderr
        assert "extjobs storage install DIR --group default" in out.stderr
        broken.chmod(0o755)
        ok(c, "storage", "pool", "connect", "fast", "default")
        assert "pool fast: provider recfile" in ok(c, "cluster", "info")

        # capacity: the pool's directory, shared; the provider alone has no directory
        pool = json.loads(ok(c, "storage", "pool", "info", "fast", "--output", "json"))
        cap = pool["capacity"]["default"]
        assert cap["shared"] is True
        assert 0 < cap["free"] <= cap["total"]
        assert list(cap["nodes"]) == ["node1"]  # shared: asked once for the group
        assert "MiB free of" in ok(c, "storage", "pool", "list")
        missing = c.cli("storage", "info", "nosuch")
        assert missing.returncode == 3
        assert "provider nosuch was not found on any node (not found in" in missing.stderr
        info = c.cli("storage", "info", "sharedfile").stdout
        assert "capacity in default: unknown" in info
        assert "does not exist" in info

        # pool parameters reach create under the disk's own
        ok(
            c,
            "instance",
            "add",
            "web",
            "-n",
            "node1",
            "--no-start",
            "--disk",
            "0:size=4M,pool=fast",
            "--disk",
            f"1:size=4M,pool=fast,dir={own}",
        )
        disks = c.client.instance("web")["disks"]
        assert [(d["pool"], d["params"]) for d in disks] == [
            ("fast", {"dir": str(vols)}),
            ("fast", {"dir": str(own)}),
        ]
        env0 = (vols / f"{disks[0]['volume']}.env").read_text().splitlines()
        assert f"EXTP_DIR={vols}" in env0
        assert "EXTP_PROVIDER=recfile" in env0
        env1 = (own / f"{disks[1]['volume']}.env").read_text().splitlines()
        assert f"EXTP_DIR={own}" in env1

        # without -n the primary is chosen: node2 has fewer instances than node1
        out = ok(c, "instance", "add", "auto", "--no-start", "--disk", "0:size=4M,pool=fast")
        assert "primary node node2 chosen" in out
        assert "node1: primary of 1 instance(s)" in out
        assert c.client.instance("auto")["primary"] == "node2"

        # modify of a pool in use: future disks only, and it says so
        out = ok(c, "storage", "pool", "modify", "fast", f"dir={own}")
        assert "only disks created from now on" in out
        out = c.cli("storage", "pool", "remove", "fast")
        assert out.returncode == 1
        assert "web/disk0" in out.stderr

        # a disk larger than the free space is refused with the figures, nothing created
        before = sorted(p.name for p in own.iterdir())
        too_big = cap["free"] + 1024
        out = c.cli(
            "instance", "add", "big", "-n", "node1", "--disk", f"0:size={too_big}M,pool=fast"
        )
        assert out.returncode == 1
        assert f"disk 0 needs {too_big} MiB of provider recfile" in out.stderr
        assert "MiB free of" in out.stderr
        assert "nothing was created" in out.stderr
        assert sorted(p.name for p in own.iterdir()) == before
        assert "big" not in [
            i["name"] for i in c.client.request("GET", "/v1/instances")["instances"]
        ]
