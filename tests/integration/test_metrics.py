"""``GET /metrics`` of a real daemon, scraped while a scenario runs on embedded SSH nodes:
instance add, grow, migrate, a failing provider script, one that runs over its timeout,
a node killed and started again, one stopped and continued -- each scrape parsed by Prometheus's own parser. And
who may scrape: the Unix socket, the TCP listener with a token, the plain-HTTP
``[metrics] listen`` address (which serves nothing else)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.harness.cluster import start_cluster
from tests.harness.procs import free_port
from tests.instances.conftest import Cluster, open_cluster
from tests.integration.test_access import READ, make_cert

pytestmark = pytest.mark.spawns

FAILING_CREATE = 'echo "pool exhausted" >&2\nexit 3\n'
HANGING_CREATE = "sleep 47.25\n"


class Scrape:
    """One scrape of ``/metrics``, parsed."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def __call__(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0: none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
            for s in self.samples
        )


def scrape_unix(cluster: Cluster) -> Scrape:
    return scrape_socket(cluster.tc.daemon.socket)


def scrape_socket(socket: Path) -> Scrape:
    """``/metrics`` of the daemon serving the Unix socket ``socket``."""
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://extjobs") as http:
        answer = http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(answer.text)


def add(cluster: Cluster, name: str, provider: str) -> dict[str, object]:
    vols = cluster.vol_dir(name)
    disk = {"size": 4, "provider": provider, "params": {"dir": str(vols)}}
    op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": name, "pnode": "node1", "disks": [disk]}
    return cluster.tc.run_job([op])


def delay_on(node: str) -> list[dict[str, object]]:
    return [{"OP_ID": "OP_TEST_DELAY", "duration": 0, "on_master": False, "on_nodes": [node]}]


def test_values_move_as_the_scenario_runs(tmp_path: Path) -> None:
    port = free_port()
    sections = (
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        # The hanging provider's create is killed after 2 s; the others finish in time.
        "[storage.timeouts]\ncreate = 2.0\n"
    )
    with open_cluster("embedded", tmp_path, nodes=2, sections=sections) as cluster:
        tc = cluster.tc
        start = scrape_unix(cluster)
        # Init and two node adds: both nodes answered over SSH.
        assert start("extjobs_jobs_finished_total", status="success", opcode="OP_NODE_ADD") == 2
        for node in ("node1", "node2"):
            assert start("extjobs_node_reachable", node=node) == 1
            assert start("extjobs_ssh_connects_total", node=node) >= 1
            assert start("extjobs_node_last_seen_timestamp_seconds", node=node) > 0
        assert start("extjobs_ssh_connect_failures_total") == 0
        assert start("process_resident_memory_bytes") > 0
        assert start("extjobs_leader") == 1

        # Add, grow, migrate: counted by opcode; provider steps by provider/action/node.
        assert add(cluster, "m1", "sharedfile")["status"] == "success"
        cluster.ok("instance", "grow-disk", "m1", "0", "4M")
        cluster.ok("instance", "migrate", "m1", "-n", "node2")
        moved = scrape_unix(cluster)
        for opcode in ("OP_INSTANCE_CREATE", "OP_INSTANCE_GROW_DISK", "OP_INSTANCE_MIGRATE"):
            assert moved("extjobs_jobs_finished_total", status="success", opcode=opcode) == 1
            assert moved("extjobs_job_duration_seconds_count", opcode=opcode) == 1
        step = "extjobs_step_duration_seconds_count"
        where = {"kind": "provider", "provider": "sharedfile"}
        assert moved(step, **where, action="create", node="node1") == 1
        assert moved(step, **where, action="grow", node="node1") == 1
        assert moved(step, **where, action="attach", node="node2") >= 1
        assert moved(step, **where, action="detach", node="node1") >= 1
        assert moved(step, kind="hypervisor", provider="fake", node="node2") >= 1
        assert moved("extjobs_step_failures_total") == 0
        submitted = moved("extjobs_jobs_submitted_total")
        assert moved("extjobs_job_start_latency_seconds_count") == submitted
        assert moved("extjobs_queue_depth") == 0

        # A provider whose create fails: a step failure, a failed job, no timeout.
        cluster.install_copy("broken", "sharedfile", {"create": FAILING_CREATE})
        assert add(cluster, "m2", "broken")["status"] == "error"
        failed = scrape_unix(cluster)
        broken = {"provider": "broken", "action": "create"}
        assert failed("extjobs_step_failures_total", **broken) == 1
        assert failed("extjobs_step_timeouts_total", **broken) == 0
        assert failed("extjobs_step_kills_total", **broken) == 0
        assert (
            failed("extjobs_jobs_finished_total", status="error", opcode="OP_INSTANCE_CREATE") == 1
        )

        # A provider whose create hangs: killed at its timeout, and counted so.
        cluster.install_copy("hanging", "sharedfile", {"create": HANGING_CREATE})
        assert add(cluster, "m3", "hanging")["status"] == "error"
        timed = scrape_unix(cluster)
        hanging = {"provider": "hanging", "action": "create"}
        assert timed("extjobs_step_failures_total", **hanging) == 1
        assert timed("extjobs_step_timeouts_total", **hanging) == 1
        assert timed("extjobs_step_kills_total", **hanging) == 1
        assert (
            timed("extjobs_jobs_finished_total", status="error", opcode="OP_INSTANCE_CREATE") == 2
        )

        # node1 killed: the next command there finds it unreachable.
        seen = timed("extjobs_node_last_seen_timestamp_seconds", node="node1")
        tc.node("node1").kill()
        assert tc.run_job(delay_on("node1"))["status"] == "error"
        down = scrape_unix(cluster)
        assert down.has("extjobs_node_reachable", node="node1")
        assert down("extjobs_node_reachable", node="node1") == 0
        assert down("extjobs_node_reachable", node="node2") == 1
        assert down("extjobs_ssh_connect_failures_total", node="node1") >= 1
        assert down("extjobs_ssh_connections", node="node1") == 0
        assert down("extjobs_node_last_seen_timestamp_seconds", node="node1") == seen
        # ... and back: it answers again.
        tc.node("node1").start()
        assert tc.run_job(delay_on("node1"))["status"] == "success"
        up = scrape_unix(cluster)
        assert up("extjobs_node_reachable", node="node1") == 1
        assert up("extjobs_node_last_seen_timestamp_seconds", node="node1") > seen
        assert up("extjobs_ssh_connects_total", node="node1") > down(
            "extjobs_ssh_connects_total", node="node1"
        )

        # node2 stopped (SIGSTOP): its pooled connection stops answering keepalives, the
        # command on it is lost; thawed, it answers again.
        seen = up("extjobs_node_last_seen_timestamp_seconds", node="node2")
        tc.node("node2").freeze()
        try:
            assert tc.run_job(delay_on("node2"))["status"] == "error"
            frozen = scrape_unix(cluster)
            assert frozen("extjobs_node_reachable", node="node2") == 0
            assert frozen("extjobs_node_reachable", node="node1") == 1
            assert frozen("extjobs_node_last_seen_timestamp_seconds", node="node2") == seen
        finally:
            tc.node("node2").thaw()
        assert tc.run_job(delay_on("node2"))["status"] == "success"
        thawed = scrape_unix(cluster)
        assert thawed("extjobs_node_reachable", node="node2") == 1
        assert thawed("extjobs_node_last_seen_timestamp_seconds", node="node2") > seen

        # The plain-HTTP address serves the same registry, and nothing else.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as plain:
            answer = plain.get("/metrics")
            assert answer.status_code == 200
            local = Scrape(answer.text)
            assert local("extjobs_node_reachable", node="node1") == 1
            assert local("extjobs_jobs_finished_total") == thawed("extjobs_jobs_finished_total")
            # OpenMetrics for a scraper that asks for it.
            om = plain.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.rstrip().endswith("# EOF")
            for path in ("/v1/jobs", "/v1/info", "/"):
                refused = plain.get(path)
                assert refused.status_code == 404, path
                assert "only GET /metrics" in refused.json()["error"]["message"]
            assert plain.post("/metrics").status_code == 405


def test_tcp_listener_needs_a_token_to_scrape(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"prometheus:{READ} read\n")
    tokens.chmod(0o600)
    port = free_port()
    extra = (
        f'tcp_listen = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f'token_file = "{tokens}"\n'
    )
    with start_cluster("embedded", 1, tmp_path / "c", daemon_extra=extra) as c:
        c.init()
        tls = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=tls) as http:
            assert http.get("/metrics").status_code == 401
            wrong = http.get("/metrics", headers={"Authorization": "Bearer " + "x" * 32})
            assert wrong.status_code == 401
            answer = http.get("/metrics", headers={"Authorization": f"Bearer {READ}"})
            assert answer.status_code == 200
            scraped = Scrape(answer.text)
            assert scraped("extjobs_node_reachable", node="node1") == 1
            assert scraped("extjobs_jobs_finished_total", opcode="OP_NODE_ADD") == 1
            assert "extjobs_step_duration_seconds" in scraped.families
