"""Access control: the 0600 Unix socket, and the TCP listener with TLS and bearer tokens."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.harness.cluster import start_cluster
from tests.harness.procs import free_port

READ = "r" * 32
WRITE = "w" * 32


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.spawns
def test_unix_socket_is_private(tmp_path: Path) -> None:
    with start_cluster("embedded", 1, tmp_path) as c:
        mode = c.daemon.socket.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        parent = c.daemon.socket.parent.stat()
        assert parent.st_uid == os.getuid()
        assert not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


@pytest.mark.spawns
def test_tcp_listener_needs_tls_and_tokens_with_roles(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    tokens = tmp_path / "tokens"
    # An old-style read token, and a write token named ci.
    tokens.write_text(f"# operators\n{READ} read\nci:{WRITE} write\n")
    tokens.chmod(0o600)
    port = free_port()
    extra = (
        f'tcp_listen = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'token_file = "{tokens}"\n'
    )
    with start_cluster("embedded", 1, tmp_path / "c", daemon_extra=extra) as c:
        c.init()
        tls = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=url, verify=tls) as http:
            assert http.get("/v1/jobs").status_code == 401
            bad = http.get("/v1/jobs", headers={"Authorization": "Bearer " + "x" * 32})
            assert bad.status_code == 401
            reader = {"Authorization": f"Bearer {READ}"}
            writer = {"Authorization": f"Bearer {WRITE}"}
            assert http.get("/v1/jobs", headers=reader).status_code == 200
            job = {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]}
            denied = http.post("/v1/jobs", json=job, headers=reader)
            assert denied.status_code == 403
            assert "write token" in denied.json()["error"]["message"]
            assert http.get("/v1/jobs/1/wait", headers=reader).status_code == 403
            made = http.post("/v1/jobs", json=job, headers=writer)
            assert made.status_code == 201
            job_id = made.json()["job_ids"][0]
            assert http.get(f"/v1/jobs/{job_id}/wait", headers=writer).status_code == 200
            # The token's holder is the job's submitter, whatever the body says.
            assert c.client.job(job_id)["submitter"] == "token:ci"
            listed = http.get("/v1/jobs?user=ci", headers=reader).json()["jobs"]
            assert [j["id"] for j in listed] == [job_id]
        # Plain HTTP on the TLS port gets nowhere.
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as plain,
            pytest.raises(httpx.HTTPError),
        ):
            plain.get("/v1/jobs", headers={"Authorization": f"Bearer {WRITE}"})


def test_tcp_listener_without_tls_is_refused(tmp_path: Path) -> None:
    from extjobs.errors import ConfigError
    from extjobs.model.config import config_from_dict

    with pytest.raises(ConfigError, match="missing: tls_cert, tls_key, token_file"):
        config_from_dict({"daemon": {"tcp_listen": "127.0.0.1:8443"}})


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    from extjobs.api.auth import load_tokens
    from extjobs.errors import ConfigError

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{WRITE} write\n")
    tokens.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_tokens(tokens)
    tokens.chmod(0o600)
    tokens.write_text("short write\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_tokens(tokens)


@pytest.mark.spawns
def test_jobs_record_the_local_user_of_the_unix_socket() -> None:
    """Two local users submit through the socket: each job names its user, as the kernel
    reports the peer (SO_PEERCRED), and ``job list --user`` tells them apart."""
    nobody = pwd.getpwnam("nobody")
    # Outside pytest's private temporary tree, so that nobody can reach the socket.
    base = Path(tempfile.mkdtemp(prefix="xjpeer", dir="/tmp"))
    try:
        with start_cluster("embedded", 1, base) as c:
            sock = c.daemon.socket
            # The operator lets another local user in (the daemon keeps 0600 itself).
            for directory in (base, sock.parent):
                directory.chmod(0o711)
            sock.chmod(0o666)
            body = json.dumps({"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]})
            as_nobody = subprocess.run(
                [
                    "setpriv",
                    f"--reuid={nobody.pw_uid}",
                    f"--regid={nobody.pw_gid}",
                    "--clear-groups",
                    "curl",
                    "--silent",
                    "--show-error",
                    "--unix-socket",
                    str(sock),
                    "--data",
                    body,
                    "http://x/v1/jobs",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            assert as_nobody.returncode == 0, as_nobody.stderr
            (theirs,) = json.loads(as_nobody.stdout)["job_ids"]
            mine = c.client.submit(json.loads(body))[0]
            assert c.client.job(theirs)["submitter"] == "unix:nobody"
            assert c.client.job(mine)["submitter"] == f"unix:{pwd.getpwuid(os.getuid()).pw_name}"
            listed = c.cli("job", "list", "--user", "nobody", "--output", "json")
            assert listed.returncode == 0, listed.stderr
            assert [j["id"] for j in json.loads(listed.stdout)] == [theirs]
            listed = c.cli("job", "list", "--user", "unix:nobody")
            assert "unix:nobody" in listed.stdout
            shown = c.cli("job", "info", str(theirs))
            assert "submitted by unix:nobody" in shown.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
