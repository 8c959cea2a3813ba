"""The daemon and ``[store] url``: it refuses to start on a store it cannot use, naming the
setting and never the password, and it runs jobs over PostgreSQL that outlive it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cluster import TestCluster, start_cluster
from tests.harness.postgres import PASSWORD, PostgresServer
from tests.harness.procs import free_port

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]


def start_daemon(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "extjobs.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nsocket = "{tmp_path / "run" / "api.sock"}"\n'
        f'[store]\nurl = "{url}"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "extjobs", "daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        pytest.param("wrong-password", "password authentication failed", id="wrong-password"),
        pytest.param("unreachable", "Connection refused", id="unreachable"),
        pytest.param("malformed", "is not a valid URL", id="malformed"),
    ],
)
def test_the_daemon_refuses_a_store_it_cannot_use(
    postgres_server: PostgresServer, tmp_path: Path, what: str, expected: str
) -> None:
    secret = "sekrit-in-url"
    url = {
        "wrong-password": postgres_server.url("postgres", password=secret),
        "unreachable": f"postgresql://extjobs:{secret}@127.0.0.1:{free_port()}/extjobs",
        "malformed": f"postgresql://extjobs:{secret}@127.0.0.1:port/extjobs",
    }[what]
    done = start_daemon(tmp_path, url)
    said = " ".join(done.stderr.split())  # the CLI wraps its message to the terminal
    assert done.returncode == 2, said
    assert said.startswith("error: store.url"), said
    assert expected in said
    assert secret not in done.stderr + done.stdout
    assert not (tmp_path / "run" / "api.sock").exists()


def test_jobs_run_over_postgres_and_outlive_the_daemon(pg_url: str, tmp_path: Path) -> None:
    extra = f'[store]\nurl = "{pg_url}"\n'
    with start_cluster("embedded", 1, tmp_path, config_extra=extra) as cluster:
        cluster.init()
        job = cluster.run_job([{"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_nodes": ["node1"]}])
        assert job["status"] == "success", job
        cluster.restart_daemon(kill=True)
        assert_jobs_kept(cluster, job["id"])
    # The state directory holds no store of its own: it is all in the database.
    assert not (tmp_path / "state" / "extjobs.db").exists()
    assert PASSWORD in pg_url


def assert_jobs_kept(cluster: TestCluster, last: int) -> None:
    jobs = cluster.client.jobs()
    assert [j["id"] for j in jobs] == list(range(1, last + 1))
    assert {j["status"] for j in jobs} == {"success"}
    nodes = cluster.run_job([{"OP_ID": "OP_NODE_QUERY"}])
    assert [n["name"] for n in nodes["ops"][0]["result"]] == ["node1"]
    assert nodes["id"] == last + 1
