"""Who submitted a job: the token file's names, the TCP listener's token holder, the
Unix socket's peer, and listing jobs by submitter. In-process, on a real store with no
dispatcher (nothing runs: a submitted job only has to be recorded)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from extjobs.api.auth import (
    Token,
    TokenAuth,
    WithSubmitter,
    derived_name,
    load_tokens,
    unix_submitter,
)
from extjobs.api.server import build_app, submitted_by
from extjobs.daemon import peer_uid
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.errors import ConfigError
from extjobs.model.config import Config
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.sqlite import SqliteStore

CI = "c" * 24
OLD = "o" * 24
VIEWER = "v" * 24
JOB = {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]}


def token_file(tmp: Path, text: str) -> Path:
    path = tmp / "tokens"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_token_lines_name_their_holder_and_old_lines_get_a_derived_name(tmp_path: Path) -> None:
    # An old token with a colon, too short after it to be a named one.
    colon = "abc:" + "x" * 12
    text = f"# operators\nci:{CI} write\n{OLD} write\nviewer:{VIEWER} read\n{colon} read\n"
    tokens = load_tokens(token_file(tmp_path, text))
    assert tokens[CI] == Token("ci", "write")
    assert tokens[VIEWER] == Token("viewer", "read")
    assert tokens[OLD] == Token(derived_name(OLD), "write")
    assert tokens[colon] == Token(derived_name(colon), "read")
    # Stable, and no part of the token itself.
    assert derived_name(OLD) == derived_name(OLD)
    assert derived_name(OLD).startswith("token-")
    assert OLD[:8] not in derived_name(OLD)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(f"ci:{CI} write\nci:{OLD} read\n", "name 'ci'", id="same-name"),
        pytest.param(f"ci:{CI} write\nops:{CI} read\n", "this token", id="same-token"),
        pytest.param("ci:short write\n", "line 1", id="short-named-token"),
        pytest.param(f"ci:{CI} admin\n", "line 1", id="role"),
    ],
)
def test_bad_token_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_tokens(token_file(tmp_path, text))


@pytest.mark.parametrize(
    ("submitter", "user", "matches"),
    [
        pytest.param("unix:alice", "alice", True, id="name"),
        pytest.param("unix:alice", "unix:alice", True, id="whole"),
        pytest.param("token:alice", "alice", True, id="any-api"),
        pytest.param("unix:alice", "token:alice", False, id="other-api"),
        pytest.param("unix:alice", "ali", False, id="prefix"),
        pytest.param("unix:alice", "unix", False, id="source"),
        pytest.param(None, "alice", False, id="unknown"),
    ],
)
def test_submitted_by(submitter: str | None, user: str, matches: bool) -> None:
    assert submitted_by(submitter, user) is matches


def test_unix_users_by_name_or_uid() -> None:
    assert unix_submitter(0) == "unix:root"
    assert unix_submitter(2_000_000_123) == "unix:2000000123"


def test_the_kernel_names_the_peer_of_a_unix_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    tcp = socket.socket(socket.AF_INET)
    try:
        assert peer_uid(left) == peer_uid(right) == os.getuid()
        assert peer_uid(tcp) is None
        assert peer_uid(None) is None
    finally:
        for s in (left, right, tcp):
            s.close()


class App:
    def __init__(self, tmp: Path) -> None:
        config = Config(state_dir=tmp)
        self.store = SqliteStore(tmp / "db.sqlite")
        self.queue = JobQueue(self.store, ConfigManager(self.store), SSHRunner(config.ssh), config)
        self.app = build_app(self.queue)
        tokens = {CI: Token("ci", "write"), OLD: Token(derived_name(OLD), "write")}
        self.tcp = self.client(TokenAuth(self.app, tokens))
        self.unix = self.client(WithSubmitter(self.app, "unix:alice"))
        self.plain = self.client(self.app)

    @staticmethod
    def client(app: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")  # type: ignore[arg-type]

    async def aclose(self) -> None:
        for client in (self.tcp, self.unix, self.plain):
            await client.aclose()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    instance = App(tmp_path)
    yield instance
    await instance.aclose()


async def submit(client: httpx.AsyncClient, body: object, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    made = await client.post("/v1/jobs", json=body, headers=headers)
    assert made.status_code == 201, made.text
    return int(made.json()["job_ids"][0])


async def test_each_api_records_who_asked_never_the_body(app: App) -> None:
    by_ci = await submit(app.tcp, JOB, CI)
    by_old = await submit(app.tcp, JOB, OLD)
    by_alice = await submit(app.unix, JOB)
    # A body naming a submitter is refused, not believed.
    forged = await app.unix.post("/v1/jobs", json={**JOB, "submitter": "unix:root"})
    assert forged.status_code == 400
    assert "submitter" in forged.json()["error"]["message"]
    assert app.queue.get(by_ci).submitter == "token:ci"
    assert app.queue.get(by_old).submitter == f"token:{derived_name(OLD)}"
    assert app.queue.get(by_alice).submitter == "unix:alice"
    batch = await app.unix.post("/v1/jobs", json={"jobs": [JOB, JOB]})
    for job_id in batch.json()["job_ids"]:
        assert app.queue.get(job_id).submitter == "unix:alice"
    shown = (await app.plain.get(f"/v1/jobs/{by_ci}")).json()
    assert shown["submitter"] == "token:ci"


async def test_jobs_are_listed_by_submitter(app: App) -> None:
    by_ci = await submit(app.tcp, JOB, CI)
    by_alice = await submit(app.unix, JOB)
    nobody = await submit(app.plain, JOB)

    async def listed(query: str) -> list[int]:
        answer = await app.plain.get(f"/v1/jobs{query}")
        assert answer.status_code == 200, answer.text
        return [j["id"] for j in answer.json()["jobs"]]

    # Newest first (a search page, docs/api.md).
    assert await listed("") == [nobody, by_alice, by_ci]
    assert await listed("?user=ci") == [by_ci]
    assert await listed("?user=token:ci") == [by_ci]
    assert await listed("?user=unix:ci") == []
    assert await listed("?user=alice") == [by_alice]
    assert await listed("?user=unix:alice&status=queued") == [by_alice]
    assert await listed("?user=alice&status=success") == []
    assert await listed("?user=") == []
