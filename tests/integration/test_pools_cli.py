"""Storage pools, capacity, placement and change-group through the CLI and the daemon,
on embedded and on OpenSSH nodes (``node_kind``), with the shipped sharedfile provider
(and copies of it: one that records what create received, one whose capacity script is
broken)."""

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
    node_kind: str, tmp_path: Path
) -> None:
    vols, own = tmp_path / "vols", tmp_path / "own"
    vols.mkdir()
    own.mkdir()
    with start_cluster(node_kind, 2, tmp_path) as c:
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


def copy_of_sharedfile(tmp_path: Path, name: str, **scripts: str) -> Path:
    """A copy of sharedfile called ``name`` with some scripts replaced."""
    source = tmp_path / name
    shutil.copytree(PROVIDERS / "sharedfile", source)
    for script, body in scripts.items():
        (source / script).write_text(body)
        (source / script).chmod(0o755)
    return source


def images(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.img"))


def test_two_pools_on_one_provider_groups_placement_and_change_group(
    node_kind: str, tmp_path: Path
) -> None:
    a, b, bad = tmp_path / "a", tmp_path / "b", tmp_path / "bad"
    for directory in (a, b, bad):
        directory.mkdir()
    run_dir = tmp_path / "hv"
    with start_cluster(node_kind, 3, tmp_path) as c:
        c.init(providers=("sharedfile",))
        ok(c, "cluster", "modify", "--hypervisor-run-dir", str(run_dir))
        # node3 alone in group g2
        ok(c, "group", "add", "g2")
        ok(c, "node", "remove", "node3")
        c.add_node(c.node("node3"), group="g2")

        # add: refused when the provider is missing on one node of every group
        half = copy_of_sharedfile(tmp_path, "half")
        c.install_provider(c.node("node1"), "half", half)
        out = c.cli("storage", "pool", "add", "hp", "half", f"dir={a}")
        assert out.returncode == 1, out.stdout
        assert "provider 'half' is valid in no node group" in out.stderr
        assert "node2: not found in" in out.stderr
        assert "node3: not found in" in out.stderr
        # connect: refused where one node lacks it, naming that node
        c.install_provider(c.node("node2"), "half", half)
        ok(c, "storage", "pool", "add", "hp", "half", f"dir={a}")
        out = c.cli("storage", "pool", "connect", "hp", "g2")
        assert out.returncode == 1
        assert "node3: not found in" in out.stderr
        assert "extjobs storage install DIR --group g2" in out.stderr
        # bad input: unknown pool, unknown group
        out = c.cli("storage", "pool", "info", "nosuch")
        assert out.returncode != 0
        assert "unknown storage pool 'nosuch'" in out.stderr
        out = c.cli("storage", "pool", "connect", "hp", "nosuch")
        assert out.returncode != 0
        assert "unknown node group 'nosuch'" in out.stderr
        groups = json.loads(ok(c, "storage", "pool", "info", "hp", "--output", "json"))["groups"]
        assert groups == []

        # two pools on one provider, two directories: disks land where their pool says
        ok(c, "storage", "pool", "add", "pa", "sharedfile", f"dir={a}")
        ok(c, "storage", "pool", "add", "pb", "sharedfile", f"dir={b}")
        ok(c, "storage", "pool", "connect", "pa", "default")
        ok(c, "storage", "pool", "connect", "pa", "g2")
        ok(c, "storage", "pool", "connect", "pb", "default")
        disks = ["--disk", "0:size=4M,pool=pa", "--disk", "1:size=4M,pool=pb"]
        ok(c, "instance", "add", "web", "-n", "node1", "--no-start", *disks)
        web = c.client.instance("web")["disks"]
        assert images(a) == [f"{web[0]['volume']}.img"]
        assert images(b) == [f"{web[1]['volume']}.img"]

        # change-group: refused naming the disk whose pool is not connected there
        out = c.cli("instance", "change-group", "web", "g2")
        assert out.returncode == 1
        assert "disk 1 (pool pb) not connected there" in out.stderr
        assert c.client.instance("web")["primary"] == "node1"
        # a running instance live-migrates into g2; a stopped one just moves
        ok(c, "instance", "add", "mob", "-n", "node1", "--disk", "0:size=4M,pool=pa")
        out = ok(c, "instance", "change-group", "mob", "g2")
        assert "instance mob migrated from node1 to node3 (group g2)" in out
        mob = c.client.instance("mob")
        assert (mob["primary"], mob["group"], mob["state"]) == ("node3", "g2", "up")
        ok(c, "instance", "add", "cold", "-n", "node2", "--no-start", "--disk", "0:size=4M,pool=pa")
        out = ok(c, "instance", "change-group", "cold", "g2")
        assert "instance cold moved (stopped) from node2 to node3 (group g2)" in out
        assert json.loads(ok(c, "verify", "--output", "json"))["findings"] == []

        # placement by memory: node1 and node3 offer 100 MiB, node2 enough
        for node, mib in (("node1", 100), ("node2", 4096), ("node3", 100)):
            (run_dir / node).mkdir(parents=True, exist_ok=True)
            (run_dir / node / "fake-node-memory").write_text(f"{mib}\n")
        out = ok(c, "instance", "add", "auto", "--memory", "512M", "--disk", "0:size=4M,pool=pa")
        assert "primary node node2 chosen" in out
        assert "node1: not enough memory: needs 512 MiB, node has 100 MiB free of 100" in out
        assert "node3: not enough memory: needs 512 MiB" in out
        assert c.client.instance("auto")["primary"] == "node2"
        before = images(a)
        out = c.cli("instance", "add", "huge", "--memory", "4G", "--disk", "0:size=4M,pool=pa")
        assert out.returncode == 1
        assert "no node can take instance huge" in out.stderr
        assert "node2: not enough memory: needs 4096 MiB, node has 3584 MiB free" in out.stderr
        assert images(a) == before
        # a pinned migration target without room is refused with the figures
        out = c.cli("instance", "migrate", "auto", "-n", "node1")
        assert out.returncode == 1
        assert "node node1 cannot receive auto: not enough memory" in out.stderr
        assert c.client.instance("auto")["primary"] == "node2"

        # a capacity script printing garbage: a clear error, nothing created
        garbage = "#!/bin/sh\necho 'plenty of room'\n"
        broken = copy_of_sharedfile(tmp_path, "badcap", capacity=garbage)
        for node in c.nodes:
            c.install_provider(node, "badcap", broken)
        out = c.cli(
            "instance", "add", "x", "-n", "node1", "--no-start",
            "--disk", f"0:size=4M,provider=badcap,dir={bad}",
        )  # fmt: skip
        assert out.returncode == 1
        assert "capacity of provider badcap on node node1: expected 'TOTAL FREE'" in out.stderr
        assert "plenty of room" in out.stderr
        assert images(bad) == []
        assert "x" not in [i["name"] for i in c.client.instances()]
