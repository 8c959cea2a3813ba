"""storage install replaces a provider as a whole on each node, or not at all.

The copy goes to a hidden sibling directory (a name no provider can have), which then
replaces the installed one by renames: files gone from the source disappear from the
nodes, and a copy cut off half-way leaves the provider that was there, whole and valid.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from extjobs.api.client import Client
from tests.harness.cluster import PROVIDERS, TestCluster, start_cluster

pytestmark = pytest.mark.spawns


def _source(tmp_path: Path, name: str, version: str) -> Path:
    """A copy of sharedfile named ``name`` whose parameters.list says ``version``."""
    source = tmp_path / "sources" / version / name
    shutil.copytree(PROVIDERS / "sharedfile", source)
    with (source / "parameters.list").open("a") as f:
        f.write(f"version installed {version}\n")
    return source


def _valid_groups(c: TestCluster, name: str) -> list[str]:
    out = c.cli("storage", "info", name, "--output", "json")
    # Exit status 3: valid nowhere.
    assert out.returncode in (0, 3), out.stderr
    return list(json.loads(out.stdout)[name]["valid_groups"])


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_file_removed_from_the_source_is_gone_after_the_next_install(
    node_kind: str, tmp_path: Path
) -> None:
    with start_cluster(node_kind, 2, tmp_path / "cluster") as c:
        c.init(providers=())
        source = _source(tmp_path, "atomic", "v1")
        (source / "helper.sh").write_text("#!/bin/sh\n")
        (source / "lib").mkdir()
        (source / "lib" / "old.sh").write_text("# dropped in v2\n")
        out = c.cli("storage", "install", str(source), "--group", "default")
        assert out.returncode == 0, out.stderr
        for node in c.nodes:
            assert (c.search_path(node) / "atomic" / "helper.sh").exists()
            assert (c.search_path(node) / "atomic" / "lib" / "old.sh").exists()
            # The node's identity for the open markers, written on the node by hand.
            (c.search_path(node) / "atomic" / "node-id").write_text(f"{node.name}\n")
        (source / "helper.sh").unlink()
        shutil.rmtree(source / "lib")
        out = c.cli("storage", "install", str(source), "--group", "default")
        assert out.returncode == 0, out.stderr
        for node in c.nodes:
            installed = c.search_path(node) / "atomic"
            assert sorted(p.name for p in installed.iterdir()) == sorted(
                [p.name for p in source.iterdir()] + ["node-id"]
            ), node.name
            assert (installed / "node-id").read_text() == f"{node.name}\n"
            # Neither the staged copy nor the replaced tree is left beside it.
            assert _hidden(c.search_path(node)) == [], node.name
        assert _valid_groups(c, "atomic") == ["default"]


def _oversized(tmp_path: Path, blobs: int = 32) -> Path:
    """Version 2 of the provider with ``blobs`` files of 16 MiB (sparse) to copy
    before the rest: far more than the install timeout lets through."""
    source = _source(tmp_path, "atomic", "v2")
    for i in range(blobs):
        with (source / f"blob{i:02d}").open("wb") as f:
            f.truncate(16 * 1024 * 1024)
    # Copied last (the plan is sorted): a half copy would mix v1 and v2 scripts.
    (source / "verify").write_text("#!/bin/sh\necho v2\n")
    return source


def test_an_interrupted_copy_leaves_the_previous_provider_whole_and_valid(
    tmp_path: Path,
) -> None:
    with start_cluster("embedded", 1, tmp_path / "cluster") as c:
        c.init(providers=())
        node = c.nodes[0]
        first = _source(tmp_path, "atomic", "v1")
        out = c.cli("storage", "install", str(first), "--node", node.name)
        assert out.returncode == 0, out.stderr
        # Version 1 is in; from now on a copy may take a quarter of a second.
        with c.daemon.config.open("a") as f:
            f.write("\n[storage.timeouts]\ninstall = 0.25\n")
        c.restart_daemon(kill=False)
        installed = c.search_path(node) / "atomic"
        before = {p.name: p.read_bytes() for p in installed.iterdir()}
        out = c.cli("storage", "install", str(_oversized(tmp_path)), "--node", node.name)
        assert out.returncode == 1, out.stdout
        assert "took longer than 0.25s" in out.stderr
        # The provider is exactly version 1, and still valid.
        assert {p.name: p.read_bytes() for p in installed.iterdir()} == before
        assert _valid_groups(c, "atomic") == ["default"]
        # The partial copy was removed.
        assert _hidden(c.search_path(node)) == []


def test_an_interrupted_first_install_leaves_no_provider(tmp_path: Path) -> None:
    sections = "[storage.timeouts]\ninstall = 0.25\n"
    with start_cluster("embedded", 1, tmp_path / "cluster", sections=sections) as c:
        c.init(providers=())
        node = c.nodes[0]
        out = c.cli("storage", "install", str(_oversized(tmp_path)), "--node", node.name)
        assert out.returncode == 1, out.stdout
        search = c.search_path(node)
        # Nothing half-copied under the provider's name, nothing staged left behind.
        assert not (search / "atomic").exists()
        assert not search.exists() or _hidden(search) == []
        assert _valid_groups(c, "atomic") == []


def test_a_copy_cut_by_a_crash_is_cleared_and_the_install_finishes(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path / "cluster") as c:
        c.init(providers=())
        node = c.nodes[0]
        out = c.cli("storage", "install", str(_source(tmp_path, "atomic", "v1")), "--node", "node1")
        assert out.returncode == 0, out.stderr
        search = c.search_path(node)
        before = {p.name: p.read_bytes() for p in (search / "atomic").iterdir()}
        source = _oversized(tmp_path, blobs=16)
        [job_id] = c.client.submit(
            {"ops": [{"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": str(source), "nodes": ["node1"]}]}
        )
        deadline = time.monotonic() + 30
        while not _hidden(search) and time.monotonic() < deadline:
            time.sleep(0.01)
        [staged] = _hidden(search)
        c.daemon.kill()
        # Cut off half-way: the staged copy is there, the installed provider untouched.
        assert (search / staged).is_dir()
        assert {p.name: p.read_bytes() for p in (search / "atomic").iterdir()} == before
        c.client.close()
        c.daemon.start()
        c.client = Client(c.daemon.socket)
        job = c.wait(job_id)
        assert job["status"] == "success", job
        assert sorted(p.name for p in (search / "atomic").iterdir()) == sorted(
            p.name for p in source.iterdir()
        )
        assert (search / "atomic" / "verify").read_text() == "#!/bin/sh\necho v2\n"
        assert _hidden(search) == []


def test_a_cancelled_install_removes_its_copy_and_keeps_the_provider(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path / "cluster") as c:
        c.init(providers=())
        node = c.nodes[0]
        out = c.cli("storage", "install", str(_source(tmp_path, "atomic", "v1")), "--node", "node1")
        assert out.returncode == 0, out.stderr
        search = c.search_path(node)
        before = {p.name: p.read_bytes() for p in (search / "atomic").iterdir()}
        source = _oversized(tmp_path, blobs=32)
        [job_id] = c.client.submit(
            {"ops": [{"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": str(source), "nodes": ["node1"]}]}
        )
        deadline = time.monotonic() + 30
        while not _hidden(search) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _hidden(search)
        c.client.cancel(job_id)
        assert c.wait(job_id)["status"] == "canceled"
        assert {p.name: p.read_bytes() for p in (search / "atomic").iterdir()} == before
        assert _hidden(search) == []
