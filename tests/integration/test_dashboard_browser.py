"""The dashboard end to end in a real headless browser: Debian's Chromium driven by
Playwright (never a browser Playwright downloads), against a daemon process with embedded
SSH nodes, on the TLS listener with tokens.

What an operator would see: the token asked for once; a migration submitted through the
API appears in the job list, its steps stream into the job page and the disk moves to
the new node on the instances page, all without a reload; unknown jobs and instances
are 404 pages; a page left open while the daemon restarts picks up again by itself.
Each page is saved as a screenshot (``EXTJOBS_SCREENSHOTS=DIR`` keeps them; docs/img
holds one of each)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.cluster import TestCluster, start_cluster
from tests.harness.procs import free_port
from tests.integration.test_access import make_cert

pytestmark = pytest.mark.spawns

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
READ = "operator:" + "r" * 32
WRITE = "w" * 32
#: How long the browser waits for a page to change by itself (milliseconds).
LIVE_MS = 30_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/system-deps installs Debian's chromium")
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class Shots:
    """Screenshots of each page, in the test's directory and ``EXTJOBS_SCREENSHOTS``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.keep = os.environ.get("EXTJOBS_SCREENSHOTS")

    def take(self, page: Any, name: str) -> None:
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        if self.keep:
            Path(self.keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.keep) / path.name)


def create(name: str, vols: Path) -> dict[str, Any]:
    return {
        "OP_ID": "OP_INSTANCE_CREATE",
        "instance_name": name,
        "pnode": "node1",
        "disks": [{"size": 4, "provider": "sharedfile", "params": {"dir": str(vols)}}],
    }


def tls_cluster(tmp_path: Path) -> tuple[Iterator[TestCluster], str, httpx.Client]:
    cert, key = make_cert(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READ} read\nci:{WRITE} write\n")
    tokens.chmod(0o600)
    port = free_port()
    extra = (
        f'tcp_listen = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'token_file = "{tokens}"\n'
    )
    url = f"https://127.0.0.1:{port}"
    api = httpx.Client(
        base_url=url,
        verify=ssl.create_default_context(cafile=str(cert)),
        headers={"Authorization": f"Bearer {WRITE}"},
        timeout=30,
    )
    return start_cluster("embedded", 2, tmp_path / "c", daemon_extra=extra), url, api


def mark(page: Any) -> None:
    """Leave a mark a reload would wipe out."""
    page.evaluate("window.__kept = 'no reload'")


def kept(page: Any) -> bool:
    return bool(page.evaluate("window.__kept === 'no reload'"))


def test_the_dashboard_follows_a_migration_live_and_survives_a_restart(
    tmp_path: Path, chromium: Any
) -> None:
    shots = Shots(tmp_path / "screenshots")
    vols = tmp_path / "vols"
    vols.mkdir()
    started, url, api = tls_cluster(tmp_path)
    with started as c, api:
        c.init()
        made = c.run_job([create("web1", vols)])
        assert made["status"] == "success", made
        diagnose = c.run_job([{"OP_ID": "OP_EXTSTORAGE_DIAGNOSE"}])
        assert diagnose["status"] == "success"

        # The API still wants its bearer token; the dashboard asks for one.
        assert httpx.get(f"{url}/v1/jobs", verify=False).status_code == 401
        browser = chromium.new_context(
            ignore_https_errors=True, viewport={"width": 1280, "height": 800}
        )
        jobs = browser.new_page()
        answer = jobs.goto(f"{url}/ui/jobs?instance=web1")
        assert "/ui/login" in jobs.url
        assert answer is not None
        assert answer.status == 200
        shots.take(jobs, "dashboard-login")
        jobs.fill("input[name=token]", "not-a-token-at-all-really")
        jobs.click("button[type=submit]")
        assert "unknown token" in jobs.inner_text("main")
        jobs.fill("input[name=token]", READ.partition(":")[2])
        jobs.click("button[type=submit]")
        jobs.wait_for_url(f"{url}/ui/jobs?instance=web1")
        assert "OP_INSTANCE_CREATE(web1 on node1, 1 disk(s))" in jobs.inner_text("#live")
        # The cookie is not for scripts.
        assert jobs.evaluate("document.cookie").find("extjobs_ui") == -1
        jobs.wait_for_selector("#conn.live", timeout=LIVE_MS)
        mark(jobs)

        instances = browser.new_page()
        instances.goto(f"{url}/ui/instances")
        disk_cell = "table.disks td:nth-child(5)"
        assert instances.inner_text(disk_cell) == "node1"
        instances.wait_for_selector("#conn.live", timeout=LIVE_MS)
        mark(instances)

        # A job holding web1's lock makes the migration wait, so that its page is open
        # before any of its steps ran.
        hold = api.post(
            "/v1/jobs",
            json=[{"OP_ID": "OP_TEST_DELAY", "duration": 4, "lock_instances": ["web1"]}],
        )
        assert hold.status_code == 201, hold.text
        migrate = {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "web1", "target_node": "node2"}
        answer = api.post("/v1/jobs", json=[migrate])
        assert answer.status_code == 201, answer.text
        (job_id,) = answer.json()["job_ids"]

        job = browser.new_page()
        job.goto(f"{url}/ui/jobs/{job_id}")
        assert job.inner_text("table.steps tbody") == "nothing to show"
        job.wait_for_selector("#conn.live", timeout=LIVE_MS)
        mark(job)

        # The list shows the new job, without a reload.
        jobs.wait_for_selector(f"#live a[href='/ui/jobs/{job_id}']", timeout=LIVE_MS)
        assert "OP_INSTANCE_MIGRATE(web1 → node2)" in jobs.inner_text("#live")
        assert kept(jobs)

        # Its steps stream in: node, duration, exit status, then the job's success.
        job.wait_for_selector("table.steps td:has-text('node2')", timeout=LIVE_MS)
        job.wait_for_selector("table.ops .badge.success", timeout=LIVE_MS)
        steps = job.inner_text("table.steps")
        for words in ("node1", "node2", " ms", "attach disk0", "detach disk0"):
            assert words in steps, steps
        assert kept(job)
        shots.take(job, "dashboard-job")

        # And the disk moved to node2 on the instances page, without a reload.
        # (A locator assertion: the page's CSP forbids the string evaluation that a
        # polled wait_for_function needs.)
        from playwright.sync_api import expect

        expect(instances.locator(disk_cell).first).to_have_text("node2", timeout=LIVE_MS)
        assert kept(instances)
        assert "node2" in instances.inner_text("table.instances td:nth-child(4)")
        shots.take(instances, "dashboard-instances")
        jobs.goto(f"{url}/ui/jobs")
        jobs.wait_for_selector("#conn.live", timeout=LIVE_MS)
        shots.take(jobs, "dashboard-jobs")
        mark(jobs)

        one = browser.new_page()
        one.goto(f"{url}/ui/instances/web1")
        assert "node2" in one.inner_text("dl.facts")
        shots.take(one, "dashboard-instance")
        nodes = browser.new_page()
        nodes.goto(f"{url}/ui/nodes")
        text = nodes.inner_text("#live")
        assert "valid sharedfile" in text, text
        assert "web1" in text, text
        shots.take(nodes, "dashboard-nodes")

        # Unknown objects are 404 pages, not tracebacks.
        for path, words in (
            ("/ui/jobs/999999", "job 999999 does not exist"),
            ("/ui/jobs/abc", "does not exist"),
            ("/ui/instances/nosuch", "instance 'nosuch' does not exist"),
            ("/ui/nowhere", "no such page"),
        ):
            answer = one.goto(f"{url}{path}")
            assert answer is not None, path
            assert answer.status == 404, path
            assert words in one.inner_text("main"), path
            assert "Traceback" not in one.content()
        shots.take(one, "dashboard-not-found")

        # The daemon restarts under an open page: it reconnects by itself.
        c.restart_daemon(kill=False)
        after = api.post("/v1/jobs", json=[{"OP_ID": "OP_TEST_DELAY", "duration": 0}])
        assert after.status_code == 201, after.text
        (later,) = after.json()["job_ids"]
        jobs.wait_for_selector(f"#live a[href='/ui/jobs/{later}']", timeout=LIVE_MS)
        jobs.wait_for_selector("#conn.live", timeout=LIVE_MS)
        assert kept(jobs)
        browser.close()


def test_a_session_needs_the_token_and_the_login_form_refuses_forgeries(
    tmp_path: Path, chromium: Any
) -> None:
    started, url, api = tls_cluster(tmp_path)
    with started as c, api:
        c.init()
        plain = httpx.Client(base_url=url, verify=False, follow_redirects=False)
        with plain:
            assert plain.get("/ui/jobs").status_code == 303
            assert plain.get("/ui/events/jobs").status_code == 401
            # A login posted without the form's CSRF token (another site's form).
            forged = plain.post(
                "/ui/login",
                data={"token": READ.partition(":")[2], "next": "/ui/jobs"},
                headers={"Origin": "https://evil.example"},
            )
            assert forged.status_code == 403
            assert "extjobs_ui" not in forged.cookies
            # A session cookie made up without the token.
            plain.cookies.set("extjobs_ui", "operator.99999999999.deadbeef", path="/ui")
            assert plain.get("/ui/jobs").status_code == 303
        browser = chromium.new_context(ignore_https_errors=True)
        page = browser.new_page()
        page.goto(f"{url}/ui/login?next=https://evil.example/")
        page.fill("input[name=token]", READ.partition(":")[2])
        page.click("button[type=submit]")
        # Never sent elsewhere after the login.
        page.wait_for_url(f"{url}/ui/jobs")
        page.click("form.who button")
        page.wait_for_url(f"{url}/ui/login")
        assert page.goto(f"{url}/ui/nodes") is not None
        assert "/ui/login" in page.url
        browser.close()


def test_the_plain_http_dashboard_on_loopback(tmp_path: Path) -> None:
    """Without tokens (a laptop demo) it shows everything at once; it never serves the
    JSON API; with the daemon's token file it asks for a token like the TLS one."""
    port = free_port()
    section = f'[dashboard]\nlisten = "127.0.0.1:{port}"\n'
    with start_cluster("embedded", 1, tmp_path / "open", sections=section) as c:
        c.init()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as plain:
            jobs = plain.get("/ui/jobs")
            assert jobs.status_code == 200
            assert "OP_NODE_ADD(node1)" in jobs.text
            assert plain.get("/ui/nodes").status_code == 200
            api = plain.get("/v1/jobs", follow_redirects=False)
            assert api.status_code == 303
            assert api.headers["location"] == "/ui/jobs"
        # The CLI's search, on the same cluster: one page, and how to get the next.
        listed = c.cli("job", "list", "--opcode", "OP_NODE_ADD", "--limit", "1")
        assert listed.returncode == 0, listed.stderr
        assert "OP_NODE_ADD(node1)" in listed.stdout
        assert "more jobs" not in listed.stderr
        listed = c.cli("job", "list", "--limit", "1", "--output", "json")
        assert listed.returncode == 0, listed.stderr
        (newest,) = json.loads(listed.stdout)
        assert f"more jobs: add --cursor {newest['id']}" in listed.stderr
        bad = c.cli("job", "list", "--since", "yesterday")
        assert bad.returncode == 1
        assert "since must be a duration" in bad.stderr
    cert, key = make_cert(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READ} read\n")
    tokens.chmod(0o600)
    extra = (
        f'tcp_listen = "127.0.0.1:{free_port()}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'token_file = "{tokens}"\n'
    )
    port = free_port()
    section = f'[dashboard]\nlisten = "127.0.0.1:{port}"\n'
    started = start_cluster(
        "embedded", 1, tmp_path / "tokens-c", daemon_extra=extra, sections=section
    )
    with started, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as plain:
        away = plain.get("/ui/jobs", follow_redirects=False)
        assert away.status_code == 303
        assert away.headers["location"].startswith("/ui/login")
        form = plain.get("/ui/login")
        assert form.status_code == 200
        # Plain HTTP: the session cookie cannot be Secure, or the browser would drop it.
        assert "secure" not in form.headers["set-cookie"].lower()
