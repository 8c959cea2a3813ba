"""What the operator sees through the real command line, with stdout piped, when a
provider fails: the stderr of a step that timed out in ``job watch`` and ``job info``,
the stderr of a create that exited 0 after failing in the job's error, and lines that
are never wrapped or cut at 80 columns.

One daemon and one embedded node for the module; each test installs the providers it
needs (copies of ``sharedfile`` with a script replaced).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.cluster import PROVIDERS, TestCluster, start_cluster

pytestmark = pytest.mark.spawns

CREATE_TIMEOUT = 1.5
HANGS = """#!/bin/sh
echo "hangs create: asking the array for $VOL_SIZE MiB" >&2
echo "hangs create: array controller busy, retrying" >&2
exec sleep 60
"""
LIES = """#!/bin/sh
echo "lies create: pool is full, nothing created" >&2
exit 0
"""
#: A provider name long enough that its path on the node is over 80 characters alone.
LONG_NAME = "sharedfile-" + "with-a-name-long-enough-to-need-more-than-eighty-columns"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    base = tmp_path_factory.mktemp("operator-output")
    timeouts = f"[storage.timeouts]\ncreate = {CREATE_TIMEOUT}\n"
    with start_cluster("embedded", 1, base, sections=timeouts) as c:
        c.init()
        (base / "vols").mkdir()
        yield c


def install_variant(c: TestCluster, name: str, create: str | None = None) -> None:
    source = c.base / "variants" / name
    if not source.exists():
        shutil.copytree(PROVIDERS / "sharedfile", source)
        if create is not None:
            (source / "create").write_text(create)
    for node in c.nodes:
        c.install_provider(node, name, source)


def add_instance(c: TestCluster, name: str, provider: str) -> dict[str, Any]:
    op = {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": name,
        "pnode": "node1",
        "start": False,
        "disks": [{"size": 8, "provider": provider, "params": {"dir": str(c.base / "vols")}}],
    }
    return c.run_job([op])


def piped(c: TestCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr piped, as in a script or a log, and the narrow
    ``COLUMNS`` a terminal-less environment often carries."""
    env = {**os.environ, "EXTJOBS_SOCKET": str(c.daemon.socket), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "extjobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_timed_out_step_shows_its_stderr_in_job_watch_and_job_info(cluster: TestCluster) -> None:
    c = cluster
    install_variant(c, "hangs", HANGS)
    job = add_instance(c, "slow1", "hangs")
    assert job["status"] == "error"
    assert "timed out" in job["ops"][0]["error"]["message"]
    for args in (("job", "watch", str(job["id"])), ("job", "info", str(job["id"]))):
        out = piped(c, *args)
        assert out.returncode == (1 if args[1] == "watch" else 0), out.stderr
        lines = out.stdout.splitlines()
        step = next(
            i for i, line in enumerate(lines) if "create disk0" in line and "timed out" in line
        )
        assert "stderr: hangs create: asking the array for 8 MiB" in lines[step + 1], lines
        assert lines[step + 2].strip() == "hangs create: array controller busy, retrying"


def test_a_create_that_exits_0_after_failing_is_named_by_its_stderr(cluster: TestCluster) -> None:
    c = cluster
    install_variant(c, "lies", LIES)
    job = add_instance(c, "lied1", "lies")
    assert job["status"] == "error"
    message = job["ops"][0]["error"]["message"]
    assert "attach disk0 (lies) on node node1 failed" in message
    assert "create had exited 0 but said on stderr: 'lies create: pool is full" in message
    messages = [e["message"] for e in job["log"]]
    assert not [m for m in messages if ": created" in m], messages
    out = piped(c, "job", "info", str(job["id"]))
    assert "lies create: pool is full, nothing created" in out.stdout


def test_piped_tables_and_errors_are_full_width(cluster: TestCluster) -> None:
    c = cluster
    install_variant(c, LONG_NAME)
    path = str(c.search_path(c.nodes[0]) / LONG_NAME)
    assert len(path) > 80
    out = piped(c, "storage", "diagnose")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if LONG_NAME in line)
    assert path in row
    assert row.split()[:3] == ["│", "node1", "│"]
    # Errors go to stderr, also unwrapped.
    sock = c.base / ("run-" + "x" * 90) / "api.sock"
    out = subprocess.run(
        [sys.executable, "-m", "extjobs", "--socket", str(sock), "job", "list"],
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert f"cannot reach the extjobs daemon at {sock}" in out.stderr
