"""storage install (SFTP copy with modes) and storage info, on both node kinds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.harness.cluster import PROVIDERS, start_cluster

pytestmark = pytest.mark.spawns


def test_install_then_info(node_kind: str, tmp_path: Path) -> None:
    with start_cluster(node_kind, 2, tmp_path) as c:
        c.init(providers=())
        for node in c.nodes:
            c.search_path(node).mkdir(parents=True)
        out = c.cli("storage", "install", str(PROVIDERS / "sharedfile"), "--group", "default")
        assert out.returncode == 0, out.stderr
        for node in c.nodes:
            dest = c.search_path(node) / "sharedfile"
            assert f"{node.name}: {dest}" in out.stdout
            for script in ("create", "attach", "verify"):
                assert (dest / script).stat().st_mode & 0o777 == (
                    PROVIDERS / "sharedfile" / script
                ).stat().st_mode & 0o777
            assert (dest / "parameters.list").read_bytes() == (
                PROVIDERS / "sharedfile" / "parameters.list"
            ).read_bytes()
        info = json.loads(c.cli("storage", "info", "sharedfile", "--output", "json").stdout)
        assert info["sharedfile"]["valid_groups"] == ["default"]
        params = info["sharedfile"]["parameters"]
        assert "dir" in params
        assert params["dir"]
        text = c.cli("storage", "info").stdout
        assert "valid in: default" in text


def test_install_refuses_an_invalid_provider_before_copying(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init(providers=())
        broken = tmp_path / "broken"
        shutil.copytree(PROVIDERS / "sharedfile", broken)
        (broken / "grow").unlink()
        (broken / "attach").chmod(0o644)
        out = c.cli("storage", "install", str(broken), "--node", "node1")
        assert out.returncode == 1
        assert "grow (missing or not executable)" in out.stderr
        assert "attach (missing or not executable)" in out.stderr
        assert not (c.search_path(c.nodes[0]) / "broken").exists()
        bad_name = tmp_path / "bad name"
        shutil.copytree(PROVIDERS / "sharedfile", bad_name)
        out = c.cli("storage", "install", str(bad_name))
        assert out.returncode == 1
        assert "bad name" in out.stderr


def test_install_refuses_a_fifo_by_name_copies_nothing_and_keeps_the_daemon_answering(
    tmp_path: Path,
) -> None:
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init(providers=())
        source = tmp_path / "fifoprov"
        shutil.copytree(PROVIDERS / "sharedfile", source)
        os.mkfifo(source / "pipe")  # reading it would block until someone writes
        (source / "create").chmod(0o777)
        out = c.cli("storage", "install", str(source), "--node", "node1")
        assert out.returncode == 1
        assert f"{source / 'pipe'} (a FIFO)" in out.stderr
        assert not (c.search_path(c.nodes[0]) / "fifoprov").exists()
        assert c.cli("job", "list").returncode == 0
        # Without the FIFO it installs, and no script keeps group or other write.
        (source / "pipe").unlink()
        out = c.cli("storage", "install", str(source), "--node", "node1")
        assert out.returncode == 0, out.stderr
        installed = c.search_path(c.nodes[0]) / "fifoprov" / "create"
        assert installed.stat().st_mode & 0o777 == 0o755


def test_provider_text_with_markup_and_escapes_is_printed_literally(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init(providers=())
        source = tmp_path / "loud"
        shutil.copytree(PROVIDERS / "sharedfile", source)
        with (source / "parameters.list").open("a") as f:
            f.write("colour paints [/x] the \x1b[31mterminal\x1b[0m red\n")
        assert c.cli("storage", "install", str(source), "--node", "node1").returncode == 0
        for args in (("storage", "info", "loud"), ("storage", "diagnose")):
            out = c.cli(*args)
            assert out.returncode == 0, (args, out.stderr)
            assert "Traceback" not in out.stderr
            assert "\x1b" not in out.stdout
        info = c.cli("storage", "info", "loud").stdout
        assert "paints [/x] the \\x1b[31mterminal\\x1b[0m red" in info


def test_an_oversized_value_is_refused_at_submit_and_never_touches_a_running_job(
    tmp_path: Path,
) -> None:
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init()
        delay = {"OP_ID": "OP_TEST_DELAY", "duration": 1, "on_nodes": ["node1"]}
        running = c.client.submit_ops([delay])
        out = c.cli(
            "instance",
            "add",
            "big",
            "-n",
            "node1",
            "--disk",
            f"0:size=4M,provider=sharedfile,dir={'x' * 100_000}",
        )
        assert out.returncode != 0
        assert "at most 4096" in out.stderr
        assert c.wait(running)["status"] == "success"
        assert [j["id"] for j in c.client.jobs()][-1] == running


def test_the_api_answers_within_a_second_while_a_copy_is_stalled(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path) as c:
        c.init(providers=())
        source = tmp_path / "bulky"
        shutil.copytree(PROVIDERS / "sharedfile", source)
        for i in range(40):  # sparse here, 640 MiB on the wire
            with (source / f"blob{i:02d}").open("wb") as f:
                f.truncate(16 * 1024 * 1024)
        node = c.nodes[0]
        [job_id] = c.client.submit(
            {"ops": [{"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": str(source), "nodes": ["node1"]}]}
        )
        deadline = time.monotonic() + 30
        root = c.search_path(node)
        while not (root.exists() and any(p.name.startswith(".bulky.") for p in root.iterdir())):
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.01)
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGSTOP)  # the node stops reading mid-copy
        try:
            slowest = 0.0
            for _ in range(15):
                started = time.monotonic()
                assert c.client.job(job_id)["status"] == "running"
                c.client.jobs()
                c.client.info()
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.2)
        finally:
            os.kill(node.process.pid, signal.SIGCONT)
        assert slowest < 1.0, f"the API took {slowest:.2f}s while the copy was stalled"
        job = c.wait(job_id, timeout=120)
        assert job["status"] in ("success", "error")
        # Either way, nothing half-copied is left beside the providers.
        assert [p.name for p in c.search_path(node).iterdir() if p.name.startswith(".")] == []
