"""The remote API against a running daemon on embedded and on OpenSSH nodes, driven by
a client written from Ganeti's documented protocol (doc/rapi.rst): HTTPS with Basic
authentication, mutations answering a job id, jobs followed with ``/2/jobs/ID/wait``.
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.procs import free_port
from tests.instances.conftest import KINDS, Cluster, open_cluster
from tests.integration.test_access import make_cert

pytestmark = pytest.mark.spawns

FINAL = ("success", "error", "canceled")


class RapiClient:
    """Just enough of a Ganeti RAPI client: requests, and following a job to its end."""

    def __init__(self, base_url: str, cert: Path, user: str, password: str) -> None:
        tls = ssl.create_default_context(cafile=str(cert))
        self.http = httpx.Client(base_url=base_url, verify=tls, auth=(user, password), timeout=30)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, path, json=body)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        response = self.request(method, path, body)
        assert response.status_code == 200, (method, path, response.text)
        return response.json()

    def wait_for_job(self, job_id: int, timeout: float = 90.0) -> list[list[Any]]:
        """Follow the job as Ganeti's clients do until it ends; return the log entries."""
        previous_info: list[Any] | None = None
        previous_serial: int | None = None
        entries: list[list[Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = {
                "fields": ["status"],
                "previous_job_info": previous_info,
                "previous_log_serial": previous_serial,
            }
            answer = self.ok("GET", f"/2/jobs/{job_id}/wait", body)
            if answer is None:
                continue
            previous_info = answer["job_info"]
            for entry in answer["log_entries"]:
                assert previous_serial is None or entry[0] > previous_serial
                previous_serial = entry[0]
                entries.append(entry)
            if previous_info[0] in FINAL:
                return entries
        raise TimeoutError(f"job {job_id} did not end")

    def run(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Submit, follow the job to its end, and return ``/2/jobs/ID``."""
        job_id = self.ok(method, path, body)
        assert isinstance(job_id, int)
        log = self.wait_for_job(job_id)
        job: dict[str, Any] = self.ok("GET", f"/2/jobs/{job_id}")
        assert [e for op_log in job["oplog"] for e in op_log] == log
        return job


@pytest.fixture(scope="module", params=KINDS)
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, str, Path, Path]]:
    kind = str(request.param)
    base = tmp_path_factory.mktemp(f"rapi-{kind}")
    cert, key = make_cert(base)
    users = base / "rapi-users"
    users.write_text("admin {cleartext}adminpw write\nviewer viewerpw\n")
    users.chmod(0o600)
    port = free_port()
    section = (
        f'[rapi]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'users_file = "{users}"\nwait_timeout = 1.0\n'
    )
    with open_cluster(kind, base / "c", nodes=2, sections=section) as cluster:
        yield cluster, f"https://127.0.0.1:{port}", cert, users


@pytest.fixture
def admin(setup: tuple[Cluster, str, Path, Path]) -> Iterator[RapiClient]:
    _, url, cert, _ = setup
    client = RapiClient(url, cert, "admin", "adminpw")
    yield client
    client.close()


def check_times(job: dict[str, Any]) -> None:
    stamps = [job["received_ts"], job["start_ts"], job["end_ts"]]
    for stamp in stamps:
        assert isinstance(stamp, list)
        assert len(stamp) == 2
        assert 0 <= stamp[1] < 1_000_000
    assert stamps == sorted(stamps)


def test_instance_lifecycle_through_rapi(
    setup: tuple[Cluster, str, Path, Path], admin: RapiClient
) -> None:
    cluster = setup[0]
    vols = cluster.vol_dir("rapi")
    assert admin.ok("GET", "/version") == 2
    assert "instance-create-reqv1" in admin.ok("GET", "/2/features")
    assert admin.ok("GET", "/2/info")["name"] == "test"
    assert [n["id"] for n in admin.ok("GET", "/2/nodes")] == ["node1", "node2"]
    assert admin.ok("GET", "/2/groups?bulk=1")[0]["node_list"] == ["node1", "node2"]

    create = {
        "__version__": 1,
        "mode": "create",
        "instance_name": "rapi1",
        "pnode": "node1",
        "disk_template": "ext",
        "disks": [
            {"size": 16, "provider": "sharedfile", "dir": str(vols), "name": "root"},
            {"size": 8, "provider": "sharedfile", "dir": str(vols)},
        ],
        "nics": [],
        "os_type": "debootstrap+default",
        "beparams": {"maxmem": 32, "vcpus": 1},
    }
    # A dry run checks and queues nothing.
    jobs_before = admin.ok("GET", "/2/jobs")
    assert admin.ok("POST", "/2/instances?dry-run=1", create) is None
    assert admin.ok("GET", "/2/jobs") == jobs_before
    assert admin.ok("GET", "/2/instances") == []

    job = admin.run("POST", "/2/instances?reason=ticket%20OPS-12", create)
    assert job["status"] == "success", job
    # Who did what, as the /v1 API and the CLI show it.
    v1 = cluster.tc.client.job(job["id"])
    assert (v1["submitter"], v1["reason"]) == ("rapi:admin", "ticket OPS-12")
    shown = cluster.ok("job", "info", str(job["id"]))
    assert "submitted by rapi:admin" in shown
    assert "reason: ticket OPS-12" in shown
    assert "rapi:admin" in cluster.ok("job", "list")
    assert job["opstatus"] == ["success"]
    assert job["summary"] == ["INSTANCE_CREATE(rapi1 on node1, 2 disk(s))"]
    assert job["ops"][0]["OP_ID"] == "OP_INSTANCE_CREATE"
    assert job["ops"][0]["instance_name"] == "rapi1"
    assert job["ops"][0]["reason"][0][:2] == ["rapi:admin", "ticket OPS-12"]
    check_times(job)
    info = admin.ok("GET", "/2/instances/rapi1")
    assert (info["pnode"], info["status"], info["admin_state"]) == ("node1", "running", "up")
    assert (info["disk_template"], info["disk.sizes"]) == ("ext", [16, 8])
    assert info["disk.names"] == ["root", None]
    assert info["beparams"]["maxmem"] == 32
    assert admin.ok("GET", "/2/instances") == [{"id": "rapi1", "uri": "/2/instances/rapi1"}]
    assert admin.ok("GET", "/2/instances?bulk=1") == [info]
    assert admin.ok("GET", "/2/nodes/node1")["pinst_list"] == ["rapi1"]

    job = admin.run("POST", "/2/instances/rapi1/disk/1/grow", {"amount": 8})
    assert job["status"] == "success", job
    assert admin.ok("GET", "/2/instances/rapi1")["disk.sizes"] == [16, 16]

    job = admin.run("PUT", "/2/instances/rapi1/migrate", {"target_node": "node2"})
    assert job["status"] == "success", job
    assert job["summary"] == ["INSTANCE_MIGRATE(rapi1 → node2)"]
    assert admin.ok("GET", "/2/instances/rapi1")["pnode"] == "node2"
    assert cluster.guest_pid("rapi1", "node2") is not None

    job = admin.run("PUT", "/2/instances/rapi1/failover", {"target_node": "node1"})
    assert job["status"] == "success", job
    info = admin.ok("GET", "/2/instances/rapi1")
    assert (info["pnode"], info["status"]) == ("node1", "running")

    job = admin.run("PUT", "/2/instances/rapi1/shutdown", {"timeout": 10})
    assert job["status"] == "success", job
    info = admin.ok("GET", "/2/instances/rapi1")
    assert (info["status"], info["admin_state"], info["oper_state"]) == (
        "ADMIN_down",
        "down",
        False,
    )

    # Rename the stopped instance: the volumes keep their names on the storage.
    volumes = sorted(p.name for p in vols.iterdir())
    uuids = info["disk.uuids"]
    job = admin.run("PUT", "/2/instances/rapi1/rename", {"new_name": "rapi2"})
    assert job["status"] == "success", job
    assert job["summary"] == ["INSTANCE_RENAME(rapi1->rapi2)"]
    assert admin.request("GET", "/2/instances/rapi1").status_code == 404
    info = admin.ok("GET", "/2/instances/rapi2")
    assert (info["status"], info["disk.uuids"]) == ("ADMIN_down", uuids)
    assert sorted(p.name for p in vols.iterdir()) == volumes
    # A name in use is refused by the opcode's checks, in Ganeti's error shape.
    job = admin.run("PUT", "/2/instances/rapi2/rename", {"new_name": "rapi2"})
    assert (job["status"], job["opresult"][0][0]) == ("error", "OpPrereqError")
    assert job["opresult"][0][1][1] == "wrong_state"
    assert "already exists" in job["opresult"][0][1][0]

    job = admin.run("PUT", "/2/instances/rapi2/startup")
    assert job["status"] == "success", job
    assert admin.ok("GET", "/2/instances/rapi2")["status"] == "running"

    job = admin.run("DELETE", "/2/instances/rapi2")
    assert job["status"] == "success", job
    assert admin.request("GET", "/2/instances/rapi2").status_code == 404
    assert admin.ok("GET", "/2/instances") == []
    assert sorted(p.name for p in vols.iterdir()) == []

    # The CLI's --reason reaches the job too, and the socket names the local user.
    ops = '[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]'
    made = cluster.tc.cli("submit", "--reason", "smoke test", "-", stdin=ops)
    assert made.returncode == 0, made.stderr
    local = cluster.tc.client.job(int(made.stdout.split()[0]))
    assert (local["submitter"], local["reason"]) == ("unix:root", "smoke test")


def test_failed_opcode_has_ganetis_error_tuple(admin: RapiClient) -> None:
    job = admin.run("PUT", "/2/instances/ghost/startup")
    assert (job["status"], job["opstatus"]) == ("error", ["error"])
    kind, (message, code) = job["opresult"][0]
    assert (kind, code) == ("OpPrereqError", "unknown_entity")
    assert "ghost" in message
    assert job["end_ts"] is not None


def test_wait_answers_null_while_nothing_changes_and_jobs_cancel(
    setup: tuple[Cluster, str, Path, Path], admin: RapiClient
) -> None:
    cluster = setup[0]
    (job_id,) = cluster.tc.client.submit({"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 30}]})
    deadline = time.monotonic() + 20
    while admin.ok("GET", f"/2/jobs/{job_id}")["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = admin.ok("GET", f"/2/jobs/{job_id}")
    last = job["oplog"][0][-1][0]
    body = {"fields": ["status"], "previous_job_info": ["running"], "previous_log_serial": last}
    started = time.monotonic()
    assert admin.ok("GET", f"/2/jobs/{job_id}/wait", body) is None
    assert time.monotonic() - started >= 0.9
    assert admin.ok("DELETE", f"/2/jobs/{job_id}") == [True, f"Job {job_id} will be canceled"]
    admin.wait_for_job(job_id)
    assert admin.ok("GET", f"/2/jobs/{job_id}")["status"] == "canceled"
    done, message = admin.ok("DELETE", f"/2/jobs/{job_id}")
    assert done is False
    assert "already ended" in message
    ids = [j["id"] for j in admin.ok("GET", "/2/jobs")]
    assert job_id in ids
    bulk = admin.ok("GET", "/2/jobs?bulk=1")
    assert [j["id"] for j in bulk] == ids


def test_rights_and_users_reloaded_on_sighup(setup: tuple[Cluster, str, Path, Path]) -> None:
    cluster, url, cert, users = setup
    viewer = RapiClient(url, cert, "viewer", "viewerpw")
    wrong = RapiClient(url, cert, "admin", "not-the-password")
    try:
        assert viewer.ok("GET", "/2/instances") == []
        assert wrong.request("GET", "/2/instances").status_code == 401
        denied = viewer.request("PUT", "/2/instances/x/startup")
        assert denied.status_code == 403
        assert denied.json()["code"] == 403
        body = {"fields": ["status"]}
        assert viewer.request("GET", "/2/jobs/1/wait", body).status_code == 403
        # Give viewer write, take admin out; SIGHUP applies it without a restart.
        users.write_text("viewer viewerpw read,write\n")
        os.kill(cluster.tc.daemon.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while viewer.request("GET", "/2/jobs/1/wait", body).status_code == 403:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert viewer.request("GET", "/2/jobs/1/wait", body).status_code == 200
        admin = RapiClient(url, cert, "admin", "adminpw")
        try:
            assert admin.request("GET", "/2/info").status_code == 401
        finally:
            admin.close()
    finally:
        users.write_text("admin {cleartext}adminpw write\nviewer viewerpw\n")
        os.kill(cluster.tc.daemon.pid, signal.SIGHUP)
        viewer.close()
        wrong.close()


def test_day2_operations_through_rapi(
    setup: tuple[Cluster, str, Path, Path], admin: RapiClient
) -> None:
    """Reboot, disk activation, node maintenance (drain, migrate, evacuate) and the
    refusals a Ganeti client meets, each followed as a Ganeti client follows jobs."""
    cluster = setup[0]
    vols = cluster.vol_dir("day2")
    for name in ("d2a", "d2b"):
        create = {
            "__version__": 1,
            "mode": "create",
            "instance_name": name,
            "pnode": "node1",
            "disk_template": "ext",
            "disks": [{"size": 8, "provider": "sharedfile", "dir": str(vols)}],
            "beparams": {"maxmem": 32},
        }
        assert admin.run("POST", "/2/instances", create)["status"] == "success"

    # Ganeti's default reboot type is hard: a new guest process.
    pid = cluster.guest_pid("d2a", "node1")
    job = admin.run("POST", "/2/instances/d2a/reboot")
    assert (job["status"], job["summary"]) == ("success", ["INSTANCE_REBOOT(d2a)"])
    assert job["ops"][0]["hard"] is True
    assert job["opresult"][0]["method"] == "hard"
    assert cluster.guest_pid("d2a", "node1") not in (None, pid)
    job = admin.run("POST", "/2/instances/d2a/reboot?type=soft", {"shutdown_timeout": 5})
    assert job["status"] == "success", job
    assert job["ops"][0]["hard"] is False
    assert admin.ok("GET", "/2/instances/d2a")["status"] == "running"

    # Disks of a stopped instance activated for a repair, then deactivated.
    assert admin.run("PUT", "/2/instances/d2b/shutdown")["status"] == "success"
    job = admin.run("PUT", "/2/instances/d2b/activate-disks")
    assert job["status"] == "success", job
    [disk] = job["opresult"][0]["disks"]
    assert (job["opresult"][0]["node"], disk["index"]) == ("node1", 0)
    assert disk["path"]
    assert admin.ok("GET", "/2/instances/d2b")["disks_active"] is True
    # Verify leaves them attached, and moves refuse until they are deactivated.
    cluster.ok("verify")
    job = admin.run("PUT", "/2/instances/d2b/failover", {"target_node": "node2"})
    assert (job["status"], job["opresult"][0][0]) == ("error", "OpPrereqError")
    assert "deactivate them first" in job["opresult"][0][1][0]
    job = admin.run("POST", "/2/nodes/node1/migrate", {"mode": "live"})
    assert job["status"] == "error", job
    assert "d2b: the disks of d2b are activated on node1" in job["opresult"][0][1][0]
    assert admin.ok("GET", "/2/nodes/node1")["pinst_list"] == ["d2a", "d2b"]
    # The guest of d2a runs: its disks cannot be deactivated (a job error, not a 400).
    job = admin.run("PUT", "/2/instances/d2a/deactivate-disks")
    assert (job["status"], job["opresult"][0][0]) == ("error", "OpPrereqError")
    assert "shut it down first" in job["opresult"][0][1][0]
    assert admin.run("PUT", "/2/instances/d2b/deactivate-disks")["status"] == "success"
    assert admin.ok("GET", "/2/instances/d2b")["disks_active"] is False

    # The maintenance recipe: drain, migrate everything off, undrain.
    assert admin.run("POST", "/2/nodes/node1/modify", {"drained": True})["status"] == "success"
    assert admin.ok("GET", "/2/nodes/node1/role") == "drained"
    job = admin.run("POST", "/2/nodes/node1/migrate", {"mode": "live"})
    assert (job["status"], job["summary"]) == ("success", ["NODE_MIGRATE(node1)"]), job
    result = job["opresult"][0]
    assert [ok for ok, _ in result["jobs"]] == [True, True]
    assert sorted((m["instance"], m["target"]) for m in result["moves"]) == [
        ("d2a", "node2"),
        ("d2b", "node2"),
    ]
    for _ok, job_id in result["jobs"]:
        admin.wait_for_job(job_id)
        assert admin.ok("GET", f"/2/jobs/{job_id}")["status"] == "success"
    assert admin.ok("GET", "/2/nodes/node1")["pinst_cnt"] == 0
    assert admin.ok("GET", "/2/instances/d2a")["status"] == "running"
    assert admin.ok("GET", "/2/instances/d2b")["status"] == "ADMIN_down"
    assert cluster.guest_pid("d2a", "node2") is not None

    # node1 is drained: evacuating node2 has nowhere to go, and nothing moves.
    job = admin.run("POST", "/2/nodes/node2/evacuate", {"mode": "all"})
    assert (job["status"], job["opresult"][0][0]) == ("error", "OpPrereqError")
    assert "nothing was moved" in job["opresult"][0][1][0]
    assert admin.ok("GET", "/2/nodes/node2")["pinst_cnt"] == 2
    assert admin.run("PUT", "/2/nodes/node1/role", "regular")["status"] == "success"
    assert admin.ok("GET", "/2/nodes/node1/role") == "regular"
    job = admin.run("POST", "/2/nodes/node2/evacuate", {"mode": "primary-only"})
    assert job["status"] == "success", job
    for _ok, job_id in job["opresult"][0]["jobs"]:
        admin.wait_for_job(job_id)
        assert admin.ok("GET", f"/2/jobs/{job_id}")["status"] == "success"
    assert admin.ok("GET", "/2/nodes/node1")["pinst_list"] == ["d2a", "d2b"]
    assert admin.ok("GET", "/2/instances/d2a")["status"] == "running"

    # change-group to a group that does not exist fails the job naming it.
    job = admin.run("PUT", "/2/instances/d2a/change-group", {"target_groups": ["nosuch"]})
    assert (job["status"], job["opresult"][0][0]) == ("error", "OpPrereqError")
    assert "nosuch" in job["opresult"][0][1][0]
    # Refused requests queue nothing.
    jobs_before = admin.ok("GET", "/2/jobs")
    assert (
        admin.request("POST", "/2/nodes/node1/evacuate", {"mode": "secondary-only"}).status_code
        == 400
    )
    assert admin.request("PUT", "/2/instances/d2a/deactivate-disks?force=1").status_code == 400
    assert admin.ok("GET", "/2/jobs") == jobs_before

    for name in ("d2a", "d2b"):
        assert admin.run("DELETE", f"/2/instances/{name}")["status"] == "success"
    assert sorted(p.name for p in vols.iterdir()) == []
    cluster.ok("verify")
