"""The remote API in-process: users file, authentication and rights, and bad input.

The app runs on a real store with no dispatcher (as in test_hostile_input), so every
answer is the RAPI layer's own: Ganeti's status codes and error bodies, never a 500,
and no job queued by a refused request.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extjobs.api.rapi import build_rapi_app
from extjobs.api.rapi_users import REALM, BasicAuth, load_users, parse_users
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.errors import ConfigError
from extjobs.model.config import Config, RapiOptions, config_from_dict
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.sqlite import SqliteStore


def ha1(user: str, password: str) -> str:
    return hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()


USERS = (
    f"# operators\nalice {{HA1}}{ha1('alice', 'apw')} write\nbob {{cleartext}}bpw read\ncarol cpw\n"
)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


WRITER = basic("alice", "apw")
READER = basic("bob", "bpw")


class App:
    def __init__(self, tmp: Path) -> None:
        users = tmp / "users"
        users.write_text(USERS)
        users.chmod(0o600)
        options = RapiOptions(
            listen="127.0.0.1:5080",
            tls_cert="/x/cert.pem",
            tls_key="/x/key.pem",
            users_file=str(users),
            wait_timeout=0.2,
        )
        config = Config(state_dir=tmp, rapi=options)
        self.users = users
        self.store = SqliteStore(tmp / "db.sqlite")
        self.queue = JobQueue(self.store, ConfigManager(self.store), SSHRunner(config.ssh), config)
        self.auth = BasicAuth(build_rapi_app(self.queue, config), users)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.auth), base_url="http://t"
        )

    def job_count(self) -> int:
        return len(self.store.load_jobs(include_archived=True))


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setattr("extjobs.api.rapi_users.FAILED_LOGIN_DELAY", 0.0)
    instance = App(tmp_path)
    yield instance
    await instance.client.aclose()
    instance.store.close()


def ganeti_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "explain"}, body
    assert body["code"] == status
    return str(body["message"])


# -- users file --------------------------------------------------------------------------


def test_users_file_schemes_and_options() -> None:
    users = parse_users(USERS)
    assert sorted(users) == ["alice", "bob", "carol"]
    assert users["alice"].check_password("apw")
    assert not users["alice"].check_password("bpw")
    assert users["alice"].can_write
    assert users["bob"].check_password("bpw")
    assert not users["bob"].can_write
    assert users["carol"].check_password("cpw")
    assert not users["carol"].can_write
    # Scheme prefixes are case-insensitive.
    assert parse_users(f"dan {{ha1}}{ha1('dan', 'x').upper()}")["dan"].check_password("x")


@pytest.mark.parametrize(
    ("line", "text"),
    [
        pytest.param("alice", "expected", id="no-password"),
        pytest.param("alice pw write extra", "expected", id="four-fields"),
        pytest.param("alice pw admin", "unknown option", id="unknown-option"),
        pytest.param("alice {md5}abc", "{HA1} or {cleartext}", id="unknown-scheme"),
        pytest.param("alice {HA1}abc", "32 hex digits", id="short-ha1"),
        pytest.param("alice {cleartext}", "empty password", id="empty"),
        pytest.param("a x\na y", "listed twice", id="duplicate"),
    ],
)
def test_users_file_bad_lines_are_refused(line: str, text: str) -> None:
    with pytest.raises(ConfigError, match="line") as caught:
        parse_users(line)
    assert text in caught.value.message


def test_users_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice pw write\n")
    users.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_users(users)


def test_rapi_config_section() -> None:
    base = {"listen": "127.0.0.1:5080", "tls_cert": "/c", "tls_key": "/k", "users_file": "/u"}
    assert config_from_dict({}).rapi is None
    rapi = config_from_dict({"rapi": base}).rapi
    assert rapi is not None
    assert rapi.host_port == ("127.0.0.1", 5080)
    assert rapi.wait_timeout == 10.0
    with pytest.raises(ConfigError, match="missing: users_file"):
        config_from_dict({"rapi": {k: v for k, v in base.items() if k != "users_file"}})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        config_from_dict({"rapi": {**base, "listen": "5080"}})
    with pytest.raises(ConfigError, match="absolute path"):
        config_from_dict({"rapi": {**base, "tls_cert": "cert.pem"}})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"rapi": {**base, "anonymous_reads": True}})


# -- authentication and rights -------------------------------------------------------------


async def test_reads_need_a_user_and_mutations_need_write(app: App) -> None:
    assert ganeti_error(await app.client.get("/2/info"), 401)
    response = await app.client.get("/2/info", headers=basic("alice", "wrong"))
    ganeti_error(response, 401)
    assert response.headers["www-authenticate"] == f'Basic realm="{REALM}"'
    ganeti_error(await app.client.get("/2/info", headers=basic("nobody", "apw")), 401)
    ganeti_error(await app.client.get("/2/info", headers={"Authorization": "Basic !!"}), 401)
    for who in (READER, basic("carol", "cpw"), WRITER):
        assert (await app.client.get("/version", headers=who)).json() == 2
    body = {"amount": 8}
    denied = await app.client.post("/2/instances/web/disk/0/grow", json=body, headers=READER)
    assert "needs write" in ganeti_error(denied, 403)
    ganeti_error(await app.client.get("/2/jobs/1/wait", headers=READER), 403)
    ganeti_error(await app.client.delete("/2/jobs/1", headers=READER), 403)
    assert app.job_count() == 0


async def test_without_require_authentication_reads_are_anonymous_and_changes_are_not(
    app: App,
) -> None:
    app.auth.require_authentication = False  # [rapi] require_authentication = false
    assert (await app.client.get("/2/info")).status_code == 200
    assert (await app.client.get("/2/jobs")).status_code == 200
    # Changes and waits still need a user with write; wrong credentials are still refused.
    ganeti_error(await app.client.post("/2/instances/web/disk/0/grow", json={"amount": 8}), 401)
    ganeti_error(await app.client.get("/2/jobs/1/wait"), 401)
    ganeti_error(await app.client.get("/2/info", headers=basic("alice", "wrong")), 401)
    assert app.job_count() == 0


async def test_failed_logins_are_logged(app: App, caplog: pytest.LogCaptureFixture) -> None:
    await app.client.get("/2/info", headers=basic("alice", "guess"))
    assert "RAPI login failed for user 'alice'" in caplog.text
    assert "guess" not in caplog.text


async def test_reload_applies_a_changed_file_and_keeps_users_on_a_bad_one(app: App) -> None:
    app.users.write_text("bob {cleartext}new write\n")
    assert app.auth.reload()
    ganeti_error(await app.client.get("/2/info", headers=WRITER), 401)
    assert (await app.client.get("/2/info", headers=basic("bob", "new"))).status_code == 200
    app.users.write_text("bob\n")
    assert not app.auth.reload()
    assert (await app.client.get("/2/info", headers=basic("bob", "new"))).status_code == 200


# -- resources and bad input -------------------------------------------------------------


async def test_read_only_resources(app: App) -> None:
    get = app.client.get
    assert (await get("/2/features", headers=READER)).json() == [
        "instance-create-reqv1",
        "node-migrate-reqv1",
        "node-evac-res1",
    ]
    assert (await get("/2/os", headers=READER)).json() == []
    assert (await get("/2/instances", headers=READER)).json() == []
    assert (await get("/2/nodes?bulk=1", headers=READER)).json() == []
    assert (await get("/2/jobs", headers=READER)).json() == []
    ganeti_error(await get("/2/instances/nope", headers=READER), 404)
    ganeti_error(await get("/2/nodes/nope", headers=READER), 404)
    ganeti_error(await get("/2/groups/nope", headers=READER), 404)
    ganeti_error(await get("/2/jobs/12", headers=READER), 404)
    ganeti_error(await get("/2/jobs/abc", headers=READER), 404)
    ganeti_error(await get("/2/nodes?bulk=yes", headers=READER), 400)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/2/networks", id="networks"),
        pytest.param("PUT", "/2/instances/web/reboot", id="reboot-put"),
        pytest.param("PUT", "/2/instances/web/modify", id="modify"),
        pytest.param("GET", "/2/instances/web/rename", id="rename-get"),
        pytest.param("PUT", "/2/nodes/n1/evacuate", id="evacuate-put"),
        pytest.param("PUT", "/2/nodes/n1/modify", id="node-modify-put"),
        pytest.param("POST", "/2/instances/web/activate-disks", id="activate-post"),
        pytest.param("PUT", "/2/info", id="wrong-method"),
    ],
)
async def test_unsupported_resources_answer_501(app: App, method: str, path: str) -> None:
    response = await app.client.request(method, path, headers=WRITER)
    assert "not implemented by extjobs" in ganeti_error(response, 501)
    assert app.job_count() == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"disks": [["add", {"size": 8}]]}, id="add-disk"),
        pytest.param({"beparams": {"maxmem": 128}}, id="beparams"),
        pytest.param({}, id="empty"),
        pytest.param("not json", id="garbage"),
    ],
)
async def test_modify_is_501_naming_what_is_missing(app: App, body: Any) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = await app.client.put("/2/instances/web/modify", content=content, headers=WRITER)
    message = ganeti_error(response, 501)
    assert "no opcode that modifies an instance" in message
    assert "/disk/N/grow" in message
    assert app.job_count() == 0


async def test_rename_submits_the_rename_opcode(app: App) -> None:
    body = {"new_name": "web2", "ip_check": False, "name_check": False}
    made = await app.client.put("/2/instances/web/rename?reason=naming", json=body, headers=WRITER)
    assert made.status_code == 200, made.text
    job = app.queue.get(made.json())
    assert [op.input for op in job.ops] == [
        {"OP_ID": "OP_INSTANCE_RENAME", "instance_name": "web", "new_name": "web2"}
    ]
    assert (job.submitter, job.reason) == ("rapi:alice", "naming")
    fields = (await app.client.get(f"/2/jobs/{job.id}", headers=READER)).json()
    assert fields["summary"] == ["INSTANCE_RENAME(web->web2)"]
    # Who and why, as Ganeti's reason trail: [source, reason, nanoseconds].
    trail = [["rapi:alice", "naming", round(job.received * 1e9)]]
    assert fields["ops"] == [{**job.ops[0].input, "reason": trail}]
    # Ganeti's defaults for the checks (both true) are accepted too.
    made = await app.client.put("/2/instances/web/rename", json={"new_name": "w3"}, headers=WRITER)
    assert made.status_code == 200, made.text
    denied = await app.client.put("/2/instances/web/rename", json=body, headers=READER)
    ganeti_error(denied, 403)
    assert app.job_count() == 2


def create_body(**change: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "__version__": 1,
        "mode": "create",
        "instance_name": "web1",
        "pnode": "node1",
        "disk_template": "ext",
        "disks": [{"size": 16, "provider": "sharedfile", "dir": "/tmp/v"}],
        "nics": [],
    }
    body.update(change)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "text"),
    [
        pytest.param(create_body(__version__=...), "'__version__' is missing", id="no-version"),
        pytest.param(create_body(__version__=0), "version 0", id="version-0"),
        pytest.param(create_body(__version__=2), "Unsupported request data", id="version-2"),
        pytest.param(create_body(__version__=True), "Unsupported", id="version-true"),
        pytest.param(
            create_body(disk_template="drbd"),
            "'drbd' does not exist here: only 'ext' exists",
            id="drbd",
        ),
        pytest.param(
            create_body(disk_template="plain"),
            "'plain' does not exist here: only 'ext' exists",
            id="plain",
        ),
        pytest.param(create_body(mode="import"), "mode 'import'", id="import"),
        pytest.param(create_body(instance_name=...), "'instance_name' is missing", id="no-name"),
        pytest.param(create_body(colour="red"), "unknown parameter(s) colour", id="unknown"),
        pytest.param(create_body(nics=[{"mac": "auto"}]), "nics is not supported", id="nics"),
        pytest.param(create_body(disks="x"), "disks must be list", id="disks-str"),
        pytest.param(create_body(disks=[]), "at least one disk", id="no-disks"),
        pytest.param(create_body(disks=[{"provider": "p"}]), "has no size", id="no-size"),
        pytest.param(create_body(disks=[{"size": "1G", "provider": "p"}]), "integer", id="size"),
        pytest.param(create_body(disks=[{"size": 8}]), "provider= or a pool=", id="no-provider"),
        pytest.param(
            create_body(disks=[{"size": 8, "provider": "../x"}]), "provider name", id="provider"
        ),
        pytest.param(
            create_body(disks=[{"size": 8, "provider": "p", "dir": 5}]), "string", id="param-int"
        ),
        pytest.param(
            create_body(disks=[{"size": 8, "provider": "p", "mode": "ro"}]), "'rw'", id="ro"
        ),
        pytest.param(create_body(instance_name="a b"), "instance name", id="bad-name"),
        pytest.param(create_body(start="yes"), "start must be bool", id="start-str"),
        pytest.param(create_body(beparams={"maxmem": "1G"}), "integer", id="maxmem-str"),
        pytest.param(create_body(beparams={"spindle_use": 1}), "beparams", id="beparam"),
        pytest.param(create_body(hypervisor="xen-pvm"), "hypervisor", id="hypervisor"),
    ],
)
async def test_bad_create_requests_are_refused_with_ganeti_errors(
    app: App, body: dict[str, Any], text: str
) -> None:
    response = await app.client.post("/2/instances", json=body, headers=WRITER)
    assert text in ganeti_error(response, 400)
    assert app.job_count() == 0


async def test_a_create_without_pnode_submits_one_to_be_placed(app: App) -> None:
    response = await app.client.post(
        "/2/instances", json=create_body(pnode=..., iallocator=None), headers=WRITER
    )
    assert response.status_code == 200, response.text
    [job] = app.store.load_jobs(include_archived=True)
    [op] = job.ops
    assert op.op_id == "OP_INSTANCE_CREATE"
    assert op.input.get("pnode") is None


async def test_migrate_and_failover_take_ignore_ipolicy(app: App) -> None:
    for action in ("migrate", "failover"):
        response = await app.client.put(
            f"/2/instances/web/{action}", json={"ignore_ipolicy": True}, headers=WRITER
        )
        assert response.status_code == 200, response.text
    ops = [job.ops[0] for job in app.store.load_jobs(include_archived=True)]
    assert [(o.op_id, o.input["force"]) for o in ops] == [
        ("OP_INSTANCE_MIGRATE", True),
        ("OP_INSTANCE_FAILOVER", True),
    ]


@pytest.mark.parametrize(
    ("content", "text"),
    [
        pytest.param(b"{", "Unable to parse JSON", id="truncated"),
        pytest.param(b"[1, 2]", "not a dictionary", id="list"),
        pytest.param(b'"x"', "not a dictionary", id="string"),
        pytest.param(b"\xff\xfe", "Unable to parse JSON", id="binary"),
        pytest.param(b"[" * 100_000, "nested too deeply", id="deep"),
        pytest.param(
            b'{"__version__": 1, "instance_name": "w", "reason": "x\\ud800"}',
            "lone surrogate",
            id="surrogate",
        ),
        pytest.param(b'{"__version__": 1, "x": "a\\u0000b"}', "NUL", id="nul"),
    ],
)
async def test_malformed_bodies_are_400(app: App, content: bytes, text: str) -> None:
    for method, path in (
        ("POST", "/2/instances"),
        ("PUT", "/2/instances/web/migrate"),
        ("POST", "/2/instances/web/disk/0/grow"),
    ):
        response = await app.client.request(method, path, content=content, headers=WRITER)
        assert text in ganeti_error(response, 400)
    assert app.job_count() == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "text"),
    [
        pytest.param("POST", "/2/instances/w/disk/0/grow", {}, "'amount' is missing", id="grow"),
        pytest.param("POST", "/2/instances/w/disk/0/grow", {"amount": "8"}, "integer", id="amt"),
        pytest.param("POST", "/2/instances/w/disk/0/grow", {"amount": -8}, "negative", id="neg"),
        pytest.param("PUT", "/2/instances/w/migrate", {"mode": "fast"}, "mode", id="mode"),
        pytest.param("PUT", "/2/instances/w/migrate", {"live": 1}, "live must be bool", id="live"),
        pytest.param(
            "PUT", "/2/instances/w/migrate", {"live": True, "mode": "live"}, "Only one", id="both"
        ),
        pytest.param("PUT", "/2/instances/w/migrate", {"cleanup": 1}, "bool", id="cleanup"),
        pytest.param("PUT", "/2/instances/w/failover", {"iallocator": "h"}, "iallocator", id="ia"),
        pytest.param("PUT", "/2/instances/w/shutdown", {"timeout": "x"}, "timeout", id="timeout"),
        pytest.param("PUT", "/2/instances/w/startup", {"force": True}, "unknown", id="force"),
        pytest.param("DELETE", "/2/instances/a%20b", {}, "instance name", id="name"),
        pytest.param("PUT", "/2/instances/w/rename", {}, "'new_name' is missing", id="no-new"),
        pytest.param("PUT", "/2/instances/w/rename", {"new_name": 5}, "str", id="new-int"),
        pytest.param(
            "PUT", "/2/instances/w/rename", {"new_name": "a b"}, "instance name", id="new-bad"
        ),
        pytest.param(
            "PUT", "/2/instances/a%20b/rename", {"new_name": "ok"}, "instance name", id="old-bad"
        ),
        pytest.param(
            "PUT",
            "/2/instances/w/rename",
            {"new_name": "x", "ip_check": "yes"},
            "ip_check must be bool",
            id="ip-check",
        ),
        pytest.param(
            "PUT", "/2/instances/w/rename", {"new_name": "x", "mac": "y"}, "unknown", id="extra"
        ),
    ],
)
async def test_bad_instance_requests_are_400(
    app: App, method: str, path: str, body: dict[str, Any], text: str
) -> None:
    response = await app.client.request(method, path, json=body, headers=WRITER)
    assert text in ganeti_error(response, 400)
    assert app.job_count() == 0


async def test_dry_run_checks_and_queues_nothing(app: App) -> None:
    response = await app.client.post(
        "/2/instances/web/disk/0/grow?dry-run=1", json={"amount": 8}, headers=WRITER
    )
    assert "unknown instance 'web'" in ganeti_error(response, 400)
    response = await app.client.put(
        "/2/instances/web/rename?dry-run=1", json={"new_name": "db"}, headers=WRITER
    )
    assert "unknown instance 'web'" in ganeti_error(response, 400)
    assert app.job_count() == 0


async def test_wait_checks_its_body_and_answers_null_when_nothing_changed(app: App) -> None:
    made = await app.client.put("/2/instances/web/startup", headers=WRITER)
    assert made.status_code == 200, made.text
    job_id = made.json()
    assert isinstance(job_id, int)
    wait = f"/2/jobs/{job_id}/wait"
    for body, text in (
        ({}, "'fields'"),
        ({"fields": "status"}, "'fields'"),
        ({"fields": ["colour"]}, "Unknown job field"),
        ({"fields": ["status"], "previous_log_serial": -1}, "previous_log_serial"),
        ({"fields": ["status"], "previous_job_info": "x"}, "previous_job_info"),
        ({"fields": ["status"], "since": 1}, "unknown parameter"),
    ):
        response = await app.client.request("GET", wait, json=body, headers=WRITER)
        assert text in ganeti_error(response, 400)
    # Nothing runs the job here: the first wait answers at once, the next one with the
    # same information answers null once the wait timeout has passed.
    first = await app.client.request(
        "GET", wait, json={"fields": ["status", "opstatus"]}, headers=WRITER
    )
    assert first.json()["job_info"] == ["queued", ["queued"]]
    serial = first.json()["log_entries"][-1][0]
    again = {"fields": ["status", "opstatus"], "previous_job_info": ["queued", ["queued"]]}
    again["previous_log_serial"] = serial
    response = await app.client.request("GET", wait, json=again, headers=WRITER)
    assert response.status_code == 200
    assert response.json() is None
    ganeti_error(
        await app.client.request("GET", "/2/jobs/999/wait", json=again, headers=WRITER), 404
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
create_keys = st.sampled_from(
    [
        "__version__",
        "mode",
        "instance_name",
        "pnode",
        "disk_template",
        "disks",
        "beparams",
        "hypervisor",
        "start",
        "nics",
        "os",
        "tags",
        "x",
    ]
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.dictionaries(create_keys, json_values | st.just(...), max_size=4))
async def test_random_create_bodies_never_500(app: App, changes: dict[str, Any]) -> None:
    before = app.job_count()
    body = create_body(**changes)
    response = await app.client.post(
        "/2/instances", content=json.dumps(body, default=str), headers=WRITER
    )
    if response.status_code == 200:
        assert app.job_count() == before + 1
        return
    ganeti_error(response, 400)
    assert app.job_count() == before


async def test_jobs_record_their_submitter_and_reason(app: App) -> None:
    made = await app.client.put("/2/instances/web/startup?reason=kernel%20update", headers=WRITER)
    job = app.queue.get(made.json())
    assert (job.submitter, job.reason) == ("rapi:alice", "kernel update")
    made = await app.client.put("/2/instances/web/startup", headers=WRITER)
    assert app.queue.get(made.json()).reason is None
    response = await app.client.put("/2/instances/web/startup?reason=a%0Ab", headers=WRITER)
    assert "control characters" in ganeti_error(response, 400)
    assert app.job_count() == 2


# -- day-2 operations ---------------------------------------------------------------------


async def submitted(app: App, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The opcode one accepted request queued."""
    before = app.job_count()
    response = await app.client.request(method, path, json=body, headers=WRITER)
    assert response.status_code == 200, response.text
    job = app.queue.get(response.json())
    assert app.job_count() == before + 1
    [op] = job.ops
    return dict(op.input)


async def test_reboot_maps_ganeti_types_onto_the_reboot_opcode(app: App) -> None:
    # Ganeti's default type is hard.
    op = await submitted(app, "POST", "/2/instances/web/reboot")
    assert (op["OP_ID"], op["instance_name"], op["hard"]) == ("OP_INSTANCE_REBOOT", "web", True)
    op = await submitted(app, "POST", "/2/instances/web/reboot?type=soft", {"shutdown_timeout": 12})
    assert (op["hard"], op["timeout"]) == (False, 12)
    op = await submitted(app, "POST", "/2/instances/web/reboot?type=full&ignore_secondaries=1")
    assert op["hard"] is True
    fields = (await app.client.get("/2/jobs/1", headers=READER)).json()
    assert fields["summary"] == ["INSTANCE_REBOOT(web)"]


async def test_disk_activation_and_change_group_submit_their_opcodes(app: App) -> None:
    op = await submitted(app, "PUT", "/2/instances/web/activate-disks?ignore_size=1")
    assert op == {"OP_ID": "OP_INSTANCE_ACTIVATE_DISKS", "instance_name": "web"}
    op = await submitted(app, "PUT", "/2/instances/web/deactivate-disks")
    assert op == {"OP_ID": "OP_INSTANCE_DEACTIVATE_DISKS", "instance_name": "web"}
    body = {"target_groups": ["g2"], "iallocator": "hail", "early_release": False}
    op = await submitted(app, "PUT", "/2/instances/web/change-group", body)
    assert (op["OP_ID"], op["instance_name"], op["group_name"]) == (
        "OP_INSTANCE_CHANGE_GROUP",
        "web",
        "g2",
    )
    assert op.get("target_node") is None


async def test_node_migrate_evacuate_modify_and_role(app: App) -> None:
    op = await submitted(app, "POST", "/2/nodes/n1/migrate", {"mode": "non-live"})
    assert (op["OP_ID"], op["node_name"], op["mode"]) == ("OP_NODE_MIGRATE", "n1", "non-live")
    op = await submitted(app, "POST", "/2/nodes/n1/migrate", {"live": True, "target_node": "n2"})
    assert (op["mode"], op["target_node"]) == ("live", "n2")
    # Ganeti 2.4's query arguments.
    op = await submitted(app, "POST", "/2/nodes/n1/migrate?live=0")
    assert op["mode"] == "non-live"
    op = await submitted(app, "POST", "/2/nodes/n1/evacuate", {"mode": "all", "remote_node": "n3"})
    assert (op["OP_ID"], op["node_name"], op["target_node"]) == ("OP_NODE_EVACUATE", "n1", "n3")
    op = await submitted(app, "POST", "/2/nodes/n1/evacuate", {"mode": "primary-only"})
    assert op.get("target_node") is None
    op = await submitted(app, "POST", "/2/nodes/n1/modify", {"drained": True, "force": False})
    assert (op["OP_ID"], op["drained"], op.get("offline")) == ("OP_NODE_SET_PARAMS", True, None)
    op = await submitted(app, "PUT", "/2/nodes/n1/role", "regular")
    assert (op["drained"], op["offline"]) == (False, False)
    op = await submitted(app, "PUT", "/2/nodes/n1/role", "offline")
    assert (op["offline"], op.get("drained")) == (True, None)
    ganeti_error(await app.client.get("/2/nodes/n1/role", headers=READER), 404)


@pytest.mark.parametrize(
    ("method", "path", "body", "text"),
    [
        pytest.param("POST", "/2/instances/w/reboot?type=warm", {}, "'type'", id="reboot-type"),
        pytest.param(
            "POST", "/2/instances/w/reboot", {"shutdown_timeout": "x"}, "shutdown_timeout", id="st"
        ),
        pytest.param("POST", "/2/instances/w/reboot", {"reason": "x"}, "unknown", id="reboot-x"),
        pytest.param(
            "POST", "/2/instances/w/reboot", {"shutdown_timeout": -1}, "negative", id="st-neg"
        ),
        pytest.param(
            "PUT", "/2/instances/w/activate-disks", {"ignore_size": 1}, "bool", id="act-bool"
        ),
        pytest.param("PUT", "/2/instances/w/activate-disks", {"disks": []}, "unknown", id="act-x"),
        pytest.param(
            "PUT", "/2/instances/w/deactivate-disks", {"force": True}, "running", id="deact-force"
        ),
        pytest.param(
            "PUT", "/2/instances/w/deactivate-disks?force=1", {}, "running", id="deact-force-q"
        ),
        pytest.param("PUT", "/2/instances/w/change-group", {}, "target_groups", id="cg-none"),
        pytest.param(
            "PUT",
            "/2/instances/w/change-group",
            {"target_groups": ["a", "b"]},
            "exactly one",
            id="cg-two",
        ),
        pytest.param(
            "PUT", "/2/instances/w/change-group", {"target_groups": "a"}, "list", id="cg-str"
        ),
        pytest.param(
            "PUT",
            "/2/instances/w/change-group",
            {"target_groups": ["a b"]},
            "group name",
            id="cg-bad",
        ),
        pytest.param(
            "PUT",
            "/2/instances/w/change-group",
            {"target_groups": ["a"], "target_node": "n"},
            "unknown parameter(s) target_node",
            id="cg-node",
        ),
        pytest.param("POST", "/2/nodes/n/migrate", {"mode": "warp"}, "mode", id="nm-mode"),
        pytest.param(
            "POST", "/2/nodes/n/migrate", {"iallocator": "hail"}, "iallocator", id="nm-ia"
        ),
        pytest.param(
            "POST", "/2/nodes/n/migrate", {"ignore_ipolicy": True}, "ignore_ipolicy", id="nm-ip"
        ),
        pytest.param(
            "POST", "/2/nodes/n/migrate", {"max_downtime": 30}, "max_downtime", id="nm-extra"
        ),
        pytest.param(
            "POST", "/2/nodes/n/migrate", {"target_node": "n"}, "own target", id="nm-self"
        ),
        pytest.param("POST", "/2/nodes/n/migrate?mode=live&live=1", {}, "Only one", id="nm-both"),
        pytest.param("POST", "/2/nodes/n/evacuate", {}, "'mode' is missing", id="ne-none"),
        pytest.param(
            "POST", "/2/nodes/n/evacuate", {"mode": "secondary-only"}, "no secondary", id="ne-sec"
        ),
        pytest.param("POST", "/2/nodes/n/evacuate", {"mode": "some"}, "primary-only", id="ne-mode"),
        pytest.param(
            "POST",
            "/2/nodes/n/evacuate",
            {"mode": "all", "iallocator": "hail"},
            "iallocator",
            id="ne-ia",
        ),
        pytest.param(
            "POST",
            "/2/nodes/n/evacuate",
            {"mode": "all", "remote_node": 3},
            "remote_node",
            id="ne-rn",
        ),
        pytest.param("POST", "/2/nodes/n/modify", {}, "nothing to change", id="nmod-empty"),
        pytest.param("POST", "/2/nodes/n/modify", {"drained": "yes"}, "drained", id="nmod-str"),
        pytest.param(
            "POST", "/2/nodes/n/modify", {"master_candidate": True}, "master_candidate", id="mc"
        ),
        pytest.param(
            "POST", "/2/nodes/n/modify", {"secondary_ip": "10.0.0.1"}, "secondary_ip", id="sip"
        ),
        pytest.param("PUT", "/2/nodes/n/role", "master-candidate", "Can't set", id="role-mc"),
        pytest.param("PUT", "/2/nodes/n/role", {"role": "drained"}, "not a string", id="role-obj"),
    ],
)
async def test_bad_day2_requests_are_400(
    app: App, method: str, path: str, body: Any, text: str
) -> None:
    response = await app.client.request(method, path, json=body, headers=WRITER)
    assert text in ganeti_error(response, 400)
    assert app.job_count() == 0


async def test_day2_mutations_need_write(app: App) -> None:
    for method, path in (
        ("POST", "/2/instances/w/reboot"),
        ("PUT", "/2/instances/w/activate-disks"),
        ("PUT", "/2/instances/w/change-group"),
        ("POST", "/2/nodes/n/migrate"),
        ("POST", "/2/nodes/n/evacuate"),
        ("POST", "/2/nodes/n/modify"),
        ("PUT", "/2/nodes/n/role"),
    ):
        ganeti_error(await app.client.request(method, path, json={}, headers=READER), 403)
    assert app.job_count() == 0


async def test_day2_dry_run_checks_against_the_configuration(app: App) -> None:
    for method, path, body in (
        ("POST", "/2/instances/web/reboot?dry-run=1", None),
        ("PUT", "/2/instances/web/activate-disks?dry-run=1", None),
        ("PUT", "/2/instances/web/change-group?dry-run=1", {"target_groups": ["g"]}),
    ):
        response = await app.client.request(method, path, json=body, headers=WRITER)
        assert "unknown instance 'web'" in ganeti_error(response, 400)
    response = await app.client.post(
        "/2/nodes/n1/migrate?dry-run=1", json={"mode": "live"}, headers=WRITER
    )
    assert "unknown node 'n1'" in ganeti_error(response, 400)
    assert app.job_count() == 0
