"""State safety of the embedded store, with real daemon processes: one daemon per state
directory (and its restart after SIGKILL), a store file that is not a store refused,
a backup taken while jobs are written, and a restore into a new state directory."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.api.client import Client
from extjobs.errors import ExtJobsError
from extjobs.testing.processes import DaemonProcess, daemon_env, write_daemon_config
from tests.harness.cluster import REPO, TestCluster, start_cluster

pytestmark = pytest.mark.spawns


def run_daemon(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``extjobs daemon`` that is expected to refuse: it must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "extjobs", "daemon", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def another_config(cluster: TestCluster, name: str, state_dir: Path | None = None) -> Path:
    """The cluster's daemon configuration with its own socket (and state directory)."""
    original = cluster.daemon.config.read_text()
    run = cluster.base / f"run-{name}"
    run.mkdir(mode=0o700)
    text = original.replace(str(cluster.daemon.socket), str(run / "api.sock"))
    if state_dir is not None:
        text = text.replace(str(cluster.base / "state"), str(state_dir))
    path = cluster.base / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def cluster1(tmp_path: Path) -> Iterator[TestCluster]:
    with start_cluster("embedded", 1, tmp_path) as cluster:
        cluster.init()
        yield cluster


def test_a_second_daemon_on_the_state_directory_refuses_and_a_killed_one_restarts(
    cluster1: TestCluster,
) -> None:
    state = cluster1.base / "state"
    first = cluster1.daemon.pid
    jobs = cluster1.client.jobs()
    held = f"state directory {state} is in use by another extjobs daemon (pid {first})"
    # Same state directory, another socket: the lock refuses, not the socket check.
    other = another_config(cluster1, "second")
    refused = run_daemon(other)
    assert refused.returncode == 2, refused.stderr
    assert held in " ".join(refused.stderr.split())
    assert not (cluster1.base / "run-second" / "api.sock").exists()
    # Same configuration: the first daemon's socket is left alone and still answers.
    inode = cluster1.daemon.socket.stat().st_ino
    again = run_daemon(cluster1.daemon.config)
    assert again.returncode == 2
    assert held in " ".join(again.stderr.split())
    assert cluster1.daemon.socket.stat().st_ino == inode
    assert cluster1.client.jobs() == jobs
    # A restore needs the lock too: refused while the daemon runs, store untouched.
    restore = run_daemon(other, "--restore", str(state / "extjobs.db"))
    assert restore.returncode == 2
    assert held in " ".join(restore.stderr.split())
    assert sorted(p.name for p in state.glob("extjobs.db.replaced-*")) == []

    cluster1.restart_daemon(kill=True)  # SIGKILL: the kernel drops the lock
    assert cluster1.daemon.pid != first
    assert cluster1.client.jobs() == jobs
    assert (state / "lock").read_text().strip() == str(cluster1.daemon.pid)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(b"", "is empty (0 bytes): it is not an extjobs store", id="empty"),
        pytest.param(b"\x00garbage" * 512, "is not a SQLite database", id="garbage"),
    ],
)
def test_a_daemon_refuses_a_store_file_that_is_not_a_store(
    tmp_path: Path, content: bytes, says: str
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    store = state / "extjobs.db"
    store.write_bytes(content)
    socket = tmp_path / "run" / "api.sock"
    config = tmp_path / "extjobs.toml"
    write_daemon_config(config, state_dir=state, socket=socket, identity_file=tmp_path / "key")
    refused = run_daemon(config)
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert f"store file {store} {says}" in message
    assert "restore a backup (extjobs daemon --restore BACKUP)" in message
    assert store.read_bytes() == content
    assert not socket.exists()


def test_backup_while_jobs_run_then_restore_into_a_new_state_directory(
    tmp_path: Path,
) -> None:
    backup = tmp_path / "backups" / "extjobs-backup.db"
    backup.parent.mkdir()
    with start_cluster("embedded", 2, tmp_path) as cluster:
        cluster.init()
        vols = tmp_path / "vols"
        vols.mkdir()
        add = cluster.cli(
            "instance", "add", "web", "-n", "node1", "--disk",
            f"0:size=4M,dir={vols},provider=sharedfile",
        )  # fmt: skip
        assert add.returncode == 0, add.stderr
        finished = {j["id"]: cluster.client.job(j["id"]) for j in cluster.client.jobs()}
        delay = {"OP_ID": "OP_TEST_DELAY", "duration": 0.3, "on_nodes": ["node1", "node2"]}
        running = [cluster.client.submit_ops([delay]) for _ in range(12)]
        out = cluster.cli("backup", str(backup), "--output", "json")
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        after = cluster.client.submit_ops([delay])
        assert answer["path"] == str(backup)
        assert answer["jobs"] >= len(finished)
        assert backup.stat().st_mode & 0o777 == 0o600
        again = cluster.cli("backup", str(backup))
        assert again.returncode == 1
        assert f"backup path {backup} exists" in again.stderr
        nowhere = cluster.cli("backup", str(tmp_path / "missing" / "b.db"))
        assert nowhere.returncode == 1
        assert "does not exist" in nowhere.stderr
        cluster_before = cluster.client.cluster()
        nodes_before = cluster.client.nodes()
        instances_before = cluster.client.instances()
        for job_id in [*running, after]:
            cluster.wait(job_id)
        config = another_config(cluster, "restored", state_dir=tmp_path / "state2")
        # The master is lost; a new one starts from the backup on the same nodes.
        cluster.client.close()
        cluster.daemon.stop()
        restored = DaemonProcess(
            config,
            tmp_path / "run-restored" / "api.sock",
            log=tmp_path / "restored.log",
            cwd=REPO,
        )
        restored.args = ["--restore", str(backup)]
        restored.start(timeout=30)
        try:
            with Client(restored.socket) as client:
                ids = {j["id"] for j in client.jobs()}
                assert set(finished) <= ids
                assert after not in ids
                assert ids <= {*finished, *running}
                for job_id, job in finished.items():
                    assert client.job(job_id) == job
                assert client.cluster() == cluster_before
                assert client.nodes() == nodes_before
                assert client.instances() == instances_before
                # Jobs that were running at backup time are recovered and end.
                deadline = time.monotonic() + 60
                while any(
                    j["status"] not in ("success", "error", "canceled") for j in client.jobs()
                ):
                    assert time.monotonic() < deadline, client.jobs()
                    time.sleep(0.1)
            verify = subprocess.run(
                [sys.executable, "-m", "extjobs", "verify"],
                capture_output=True,
                text=True,
                timeout=120,
                env=daemon_env(restored.socket),
                cwd=REPO,
                check=False,
            )
            assert verify.returncode == 0, verify.stdout + verify.stderr
            assert "consistent" in verify.stdout
            assert list((tmp_path / "state2").glob("extjobs.db.replaced-*")) == []
        finally:
            restored.stop()


def test_an_unreadable_row_is_named_and_can_be_set_aside_to_start(cluster1: TestCluster) -> None:
    ids = [cluster1.run_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])["id"] for _ in range(3)]
    bad = ids[1]
    cluster1.daemon.stop()
    store = cluster1.base / "state" / "extjobs.db"
    with sqlite3.connect(store) as db:
        db.execute("UPDATE jobs SET doc = ? WHERE id = ?", ('{"v": 2, "job": {"id": "x', bad))
    refused = run_daemon(cluster1.daemon.config)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2, said
    assert f"the store's jobs row {bad} cannot be read" in said
    assert f"extjobs daemon --quarantine jobs:{bad}" in said
    assert "Traceback" not in refused.stderr
    # A key that names no row moves nothing and says so.
    missing = run_daemon(cluster1.daemon.config, "--quarantine", "jobs:999999")
    assert missing.returncode == 2
    assert "the store has no jobs row 999999" in " ".join(missing.stderr.split())
    cluster1.daemon.args = ["--quarantine", f"jobs:{bad}"]
    cluster1.daemon.start()
    cluster1.client.close()
    cluster1.client = Client(cluster1.daemon.socket)
    try:
        listed = [j["id"] for j in cluster1.client.jobs()]
        assert bad not in listed
        assert {ids[0], ids[2]} <= set(listed)
        with sqlite3.connect(store) as db:
            kept = db.execute("SELECT tbl, key, row FROM quarantine").fetchall()
        assert [(t, k) for t, k, _ in kept] == [("jobs", str(bad))]
        assert json.loads(kept[0][2])["id"] == bad
        # The daemon runs jobs again, and their ids never reuse the one set aside.
        after = cluster1.run_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
        assert after["status"] == "success"
        assert after["id"] > ids[-1]
    finally:
        cluster1.daemon.args = []


def test_a_damaged_store_file_is_named_with_what_to_do(cluster1: TestCluster) -> None:
    for _ in range(40):  # enough rows for the jobs table to span several pages
        cluster1.run_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
    cluster1.daemon.stop()
    store = cluster1.base / "state" / "extjobs.db"
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='jobs'").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(store.read_bytes())
    start = (root - 1) * page
    data[start : start + page] = b"\xa5" * page  # the jobs table's root page, overwritten
    store.write_bytes(bytes(data))
    refused = run_daemon(cluster1.daemon.config)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2, said
    assert f"the store {store} cannot be read" in said
    assert "extjobs daemon --restore FILE" in said
    assert ".recover" in said
    assert "Traceback" not in refused.stderr


@pytest.mark.root
def test_a_state_directory_whose_filesystem_fills_during_a_job(tmp_path: Path) -> None:
    """The state directory on a small tmpfs of its own, filled while a job runs: the
    daemon keeps answering, refuses submissions naming the cause, and once space is back
    the interrupted job is recovered and new jobs run."""
    base = tmp_path / "cluster"
    state = base / "state"
    state.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(state)], check=True
    )
    filler = state / "filler"
    try:
        with start_cluster("embedded", 1, base) as c:
            c.init(providers=())
            delay = {"OP_ID": "OP_TEST_DELAY", "duration": 1, "repeat": 4, "on_nodes": ["node1"]}
            [job_id] = c.client.submit({"ops": [delay]})
            deadline = time.monotonic() + 30
            while not any(e["type"] == "step" for e in c.client.job(job_id)["log"]):
                assert time.monotonic() < deadline, "the job's first step never ended"
                time.sleep(0.05)
            with filler.open("wb", buffering=0) as f:  # every byte the filesystem has left
                for size in (1 << 20, 4096, 512):
                    with contextlib.suppress(OSError):
                        while f.write(b"\0" * size):
                            pass
            # The daemon answers; a submission is refused with the store's reason.
            assert c.client.info()
            with pytest.raises(ExtJobsError, match="full"):
                c.client.submit({"ops": [delay]})
            # The running job cannot journal its next step: it stops, and the daemon says why.
            deadline = time.monotonic() + 30
            while not c.client.info()["statistics"]["store_trouble"]:
                assert time.monotonic() < deadline, c.client.info()
                time.sleep(0.1)
            assert "full" in c.client.info()["statistics"]["store_trouble"]
            assert c.daemon.process is not None
            assert c.daemon.process.poll() is None
            filler.unlink()
            job = c.wait(job_id, timeout=120)
            assert job["status"] == "success", json.dumps(job["log"][-5:], indent=1)
            assert any(e["type"] == "recovery" for e in job["log"]), job["log"]
            assert c.run_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0}])["status"] == "success"
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
