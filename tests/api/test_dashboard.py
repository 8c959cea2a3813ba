"""The dashboard in process: sessions and the login form (CSRF, origin, redirects), pages
and 404s, what a step's output may hold (escaped), and the loopback-only plain-HTTP
listener's configuration. The browser test (tests/integration/test_dashboard_browser.py)
drives it live."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from extjobs.api.auth import Token
from extjobs.api.dashboard import build_dashboard
from extjobs.api.dashboard_auth import SESSION_SECONDS, DashboardGate, Sessions, safe_next
from extjobs.api.dashboard_pages import job_fragment
from extjobs.api.server import build_app
from extjobs.api.views import job_view
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.errors import ConfigError
from extjobs.model.cluster import Cluster, ClusterConfig, Disk, Instance, Node, NodeGroup
from extjobs.model.config import Config, config_from_dict
from extjobs.model.jobs import Job, LogEntry, LogKind, OpState
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.sqlite import SqliteStore

TOKEN = "t" * 32
TOKENS = {TOKEN: Token("ops", "read")}


def test_a_session_cookie_is_bound_to_its_token_and_expires() -> None:
    sessions = Sessions(TOKENS, secure=True)
    cookie = sessions.cookie_for(Token("ops", "read"), now=1000.0)
    assert sessions.check(cookie, now=1000.0) == "ops"
    assert sessions.check(cookie, now=1000.0 + SESSION_SECONDS + 1) is None
    name, expiry, mac = cookie.split(".")
    assert sessions.check(f"{name}.{int(expiry) + 3600}.{mac}", now=1000.0) is None
    assert sessions.check(f"other.{expiry}.{mac}", now=1000.0) is None
    # Another daemon with another token for the same name does not take it.
    assert Sessions({"u" * 32: Token("ops", "read")}, secure=True).check(cookie, 1000.0) is None
    for junk in ("", "ops", "ops.x.y", "a.b.c.d", "ops..", "ops.1e9.00"):
        assert sessions.check(junk, now=1000.0) is None


@pytest.mark.parametrize(
    ("target", "went"),
    [
        ("/ui/nodes", "/ui/nodes"),
        ("/ui/jobs?status=error", "/ui/jobs?status=error"),
        ("https://evil.example/ui/", "/ui/jobs"),
        ("//evil.example/ui/", "/ui/jobs"),
        ("/v1/jobs", "/ui/jobs"),
        (None, "/ui/jobs"),
    ],
)
def test_after_the_login_only_dashboard_pages(target: str | None, went: str) -> None:
    assert safe_next(target) == went


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(state_dir=tmp_path)
    store = SqliteStore(tmp_path / "db.sqlite")
    manager = ConfigManager(store)
    web1 = Instance(name="web1", primary="n1", disks=(Disk("u1", 0, 2048, "sharedfile"),))
    manager.update(
        lambda _old: ClusterConfig(
            cluster=Cluster("c1"),
            groups={"default": NodeGroup("default")},
            nodes={"n1": Node("n1", "127.0.0.1")},
            instances={"web1": web1},
        )
    )
    queue = JobQueue(store, manager, SSHRunner(config.ssh), config)
    sessions = Sessions(TOKENS, secure=False)
    gate = DashboardGate(
        build_dashboard(queue, sessions, journal=store.load_journal_kinds),
        build_app(queue),
        sessions,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gate), base_url="http://ui.test"
    ) as client:
        made = await client.post(
            "/v1/jobs",
            json=[{"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1", "target_node": "n2"}],
        )
        assert made.status_code == 201
        yield client
    store.close()


async def log_in(ui: httpx.AsyncClient) -> None:
    form = await ui.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    done = await ui.post(
        "/ui/login",
        data={"csrf": csrf[1], "token": TOKEN, "next": "/ui/instances"},
        headers={"Origin": "http://ui.test"},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/ui/instances"
    assert "httponly" in done.headers["set-cookie"].lower()
    assert "samesite=strict" in done.headers["set-cookie"].lower()


async def test_pages_need_a_session_and_show_the_cluster(ui: httpx.AsyncClient) -> None:
    away = await ui.get("/ui/jobs?instance=web1")
    assert away.status_code == 303
    assert away.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Finstance%3Dweb1"
    assert (await ui.get("/ui/events/jobs")).status_code == 401
    await log_in(ui)
    jobs = await ui.get("/ui/jobs?instance=web1")
    assert jobs.status_code == 200
    assert "OP_INSTANCE_MIGRATE(web1 → n2)" in jobs.text
    assert 'data-events="/ui/events/jobs?instance=web1"' in jobs.text
    instances = await ui.get("/ui/instances")
    assert "2 GiB" in instances.text
    assert "sharedfile" in instances.text
    # Nothing journalled about the disk yet: the page says so rather than guess.
    assert "no record" in instances.text
    nodes = await ui.get("/ui/nodes")
    assert "No storage diagnose has run yet" in nodes.text
    bad = await ui.get("/ui/jobs?since=yesterday")
    assert bad.status_code == 200
    assert "since must be a duration" in bad.text


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/ui/jobs/4242", "job 4242 does not exist"),
        ("/ui/jobs/%3Cscript%3E", "does not exist"),
        ("/ui/jobs/99999999999999999999999", "does not exist"),
        ("/ui/instances/nosuch", "instance &#x27;nosuch&#x27; does not exist"),
        ("/ui/static/..%2F..%2Fetc%2Fpasswd", "no such"),
        ("/ui/static/secret.py", "no such file"),
        ("/ui/what", "no such page"),
    ],
)
async def test_unknown_objects_are_404_pages(ui: httpx.AsyncClient, path: str, words: str) -> None:
    await log_in(ui)
    answer = await ui.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert words in answer.text
    assert "<script>" not in answer.text


async def test_a_login_without_the_forms_csrf_token_or_from_elsewhere_is_refused(
    ui: httpx.AsyncClient,
) -> None:
    form = await ui.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    for data, origin in (
        ({"token": TOKEN}, "http://ui.test"),
        ({"token": TOKEN, "csrf": "guessed"}, "http://ui.test"),
        ({"token": TOKEN, "csrf": csrf[1]}, "https://evil.example"),
    ):
        answer = await ui.post("/ui/login", data=data, headers={"Origin": origin})
        assert answer.status_code == 403
        assert "extjobs_ui" not in answer.headers.get("set-cookie", "")
    wrong = await ui.post(
        "/ui/login",
        data={"token": "x" * 32, "csrf": csrf[1]},
        headers={"Origin": "http://ui.test"},
    )
    assert wrong.status_code == 401
    assert "unknown token" in wrong.text
    # The API's own token check is untouched: a dashboard session is no bearer token.
    await log_in(ui)
    assert (await ui.get("/v1/jobs")).status_code == 200  # no TokenAuth in this app
    assert (await ui.get("/ui/jobs")).status_code == 200


def test_what_a_step_printed_is_shown_escaped() -> None:
    job = Job(id=7, ops=(OpState(0, {"OP_ID": "OP_CLUSTER_VERIFY"}),))
    hostile = "<script>alert(1)</script>&amp;"
    entries = [
        LogEntry(
            7,
            1,
            1.0,
            LogKind.STEP,
            f"n1: attach disk0 (p): exit 1 in 2.0 ms {hostile}",
            {"node": "n1", "exit_status": 1, "stderr_tail": hostile, "duration": 0.002},
        )
    ]
    html = job_fragment(job_view(job), job, entries)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp;" in html
    assert '<span class="badge failed">failed</span> 1' in html
    assert "2 ms" in html


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:8080", "192.0.2.1:8080", "example.com:80", "127.0.0.1"]
)
def test_the_plain_http_dashboard_listens_only_on_loopback(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"\[dashboard\]"):
        config_from_dict({"dashboard": {"listen": listen}})


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"])
def test_a_loopback_dashboard_is_accepted(listen: str) -> None:
    config = config_from_dict({"dashboard": {"listen": listen}})
    assert config.dashboard is not None
    assert config.dashboard.host_port[1] == 8080


def test_the_observed_state_is_shown_when_the_instance_view_has_one() -> None:
    from extjobs.api.dashboard_pages import instances_fragment

    base = {
        "name": "web1",
        "state": "up",
        "primary": "n1",
        "group": "default",
        "hypervisor": "fake",
        "disks": [{"index": 0, "provider": "p", "pool": None, "size": 64, "volume": "u.ext.disk0"}],
    }
    without = instances_fragment([base], {"u.ext.disk0": ["n1", "n2"]})
    assert "not observed" in without
    # Attached on two nodes at once is shown as such (only a migration may do that).
    assert '<span class="attached two">n1, n2</span>' in without
    # The shape of the watcher's observation (extjobs.engine.watcher.Observation.view).
    observation = {
        "state": "ERROR_wrongnode",
        "at": 0.0,
        "age": 3.0,
        "running_on": ["n2"],
        "disks_attached_on": ["n2"],
        "message": "runs on n2, not on its primary n1",
    }
    seen = instances_fragment([{**base, "observed": observation}], {})
    assert '<span class="badge ERROR_wrongnode">ERROR_wrongnode</span> on n2' in seen
    assert "runs on n2, not on its primary n1" in seen
    assert "no record" in seen
    plain = instances_fragment([{**base, "observed": "running"}], {"u.ext.disk0": []})
    assert '<span class="badge running">running</span>' in plain
    assert "not attached" in plain


def test_nodes_and_groups_show_diagnose_validity_per_provider_and_pool() -> None:
    from extjobs.api.dashboard_pages import nodes_fragment

    nodes = [
        {
            "name": "n1",
            "group": "g1",
            "host": "10.0.0.1",
            "port": 22,
            "user": "root",
            "instances": ["web1"],
        },
        {
            "name": "n2",
            "group": "g1",
            "host": "10.0.0.2",
            "port": 22,
            "user": "root",
            "drained": True,
            "instances": [],
        },
        {
            "name": "n3",
            "group": "g2",
            "host": "10.0.0.3",
            "port": 22,
            "user": "root",
            "offline": True,
            "instances": [],
        },
    ]
    diagnose = {
        "nodes": {"n1": {"providers": {}}, "n2": {"error": "node n2 did not answer"}},
        "groups": {
            "g1": {
                "rbd": {"valid": False, "reasons": {"n2": "node did not answer"}},
                "sharedfile": {"valid": True, "reasons": {}},
            }
        },
    }
    job = Job(id=9, ops=(OpState(0, {"OP_ID": "OP_EXTSTORAGE_DIAGNOSE"}),), ended=5.0)
    html = nodes_fragment(
        nodes,
        {"g1": {"pools": ["fast", "ceph"]}, "g2": {"pools": []}},
        {"n1": 1},
        diagnose,
        job,
        {"fast": "sharedfile", "ceph": "rbd"},
    )
    assert 'fast → sharedfile <span class="badge valid">valid</span>' in html
    assert 'ceph → rbd <span class="badge invalid">invalid</span>' in html
    assert "rbd (n2: node did not answer)" in html
    assert 'last diagnose: <span class="failed">node n2 did not answer</span>' in html
    assert '<span class="badge drained">drained</span>' in html
    assert '<span class="badge offline">offline</span>' in html
    assert '<a href="/ui/jobs/9">9</a>' in html
    assert "no diagnose yet" in html  # g2


def test_nodes_show_the_watchers_verdict_on_reachability() -> None:
    from extjobs.api.dashboard_pages import nodes_fragment

    nodes = [
        {"name": name, "group": "g1", "host": "10.0.0.1", "port": 22, "instances": []}
        for name in ("n1", "n2", "n3")
    ]
    # The shape of the watcher's status report (extjobs.engine.watcher, "nodes").
    watched = {
        "n1": {"state": "ok", "last_answer": 100.0, "error": None},
        "n2": {"state": "unreachable, not fenced", "last_answer": 50.0, "error": "timed out"},
        "n3": {"state": "not asked yet", "last_answer": None, "error": None},
    }
    html = nodes_fragment(nodes, {}, {"n1": 1}, None, None, {}, watched=watched)
    rows = {name: html[html.index(f"<td>{name}</td>") :] for name in ("n1", "n2", "n3")}
    assert '<span class="badge reachable">reachable</span>' in rows["n1"].split("</tr>")[0]
    n2 = rows["n2"].split("</tr>")[0]
    assert '<span class="badge unreachable">unreachable, not fenced</span>' in n2
    assert "timed out" in n2
    n3 = rows["n3"].split("</tr>")[0]
    assert "reachable" not in n3
    assert "no open connection" in n3
