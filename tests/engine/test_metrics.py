"""The daemon's metrics, measured on the engine with the scripted runner (no process):
what each event moves, the scrape-time gauges, and labels that stay bounded."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anyio
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from extjobs.daemon import bind_metrics
from extjobs.engine.metrics import Metrics
from extjobs.engine.queue import JobQueue
from extjobs.errors import CommandTimeoutError, ConfigError
from extjobs.model.config import config_from_dict
from extjobs.model.jobs import LogKind
from extjobs.model.opcodes import OpInstanceGrowDisk, OpInstanceMigrate, OpTestDelay
from extjobs.testing import open_test_cluster
from tests.lus.scenario import PROVIDERS, create_op, ok


def scrape(metrics: Metrics) -> list[Sample]:
    """Every sample of one scrape, parsed by Prometheus's own parser."""
    text = generate_latest(metrics.registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


async def test_events_and_states_move_as_the_cluster_works() -> None:
    metrics = Metrics()
    async with open_test_cluster(2, providers=PROVIDERS, metrics=metrics) as cluster:
        before = scrape(metrics)
        # Cluster init and two node adds so far; the process collector is there.
        assert value(before, "extjobs_jobs_finished_total", status="success") == 3
        assert "process_cpu_seconds_total" in names(before)
        assert value(before, "extjobs_leader") == 1

        assert ok(await cluster.run(create_op("web", provider="sharedfile", disks=1)))
        grown = OpInstanceGrowDisk(instance_name="web", disk=0, amount=8)
        assert ok(await cluster.run(grown))
        assert ok(await cluster.run(OpInstanceMigrate(instance_name="web", target_node="node2")))
        after = scrape(metrics)
        for opcode in ("OP_INSTANCE_CREATE", "OP_INSTANCE_GROW_DISK", "OP_INSTANCE_MIGRATE"):
            assert value(after, "extjobs_jobs_finished_total", status="success", opcode=opcode) == 1
            assert value(after, "extjobs_job_duration_seconds_count", opcode=opcode) == 1
        # The gauge counts unfinished jobs only: none now.
        assert value(after, "extjobs_jobs") == 0
        assert value(after, "extjobs_jobs_submitted_total") == 6
        assert value(after, "extjobs_job_start_latency_seconds_count") == 6
        # Provider steps by provider, action and node: create on node1, attach on both
        # (the migration's target), grow once.
        step = "extjobs_step_duration_seconds_count"
        assert value(after, step, provider="sharedfile", action="create", node="node1") == 1
        assert value(after, step, provider="sharedfile", action="grow", node="node1") == 1
        assert value(after, step, provider="sharedfile", action="attach", node="node2") >= 1
        assert value(after, step, kind="hypervisor", action="start", node="node1") >= 1
        assert value(after, "extjobs_step_failures_total") == 0
        assert value(after, "extjobs_lock_wait_seconds_count", opcode="OP_INSTANCE_MIGRATE") == 1

        # A failing provider script: a failed step and a failed job, counted by opcode.
        cluster.runner.fail("grow", stderr="pool is full")
        assert not ok(await cluster.run(grown))
        failed = scrape(metrics)
        assert (
            value(failed, "extjobs_step_failures_total", provider="sharedfile", action="grow") == 1
        )
        assert value(failed, "extjobs_jobs_finished_total", status="error", opcode=grown.OP_ID) == 1
        assert value(failed, "extjobs_step_timeouts_total") == 0

        # A script that runs over its timeout: a failure, a timeout and a kill.
        timeout = CommandTimeoutError("grow timed out", node="node2", timeout=1.0)
        cluster.runner.on(kind="provider", action="grow", error=timeout)
        assert not ok(await cluster.run(grown))
        timed = scrape(metrics)
        labels = {"provider": "sharedfile", "action": "grow"}
        assert value(timed, "extjobs_step_failures_total", **labels) == 2
        assert value(timed, "extjobs_step_timeouts_total", **labels) == 1
        assert value(timed, "extjobs_step_kills_total", **labels) == 1


async def test_queue_depth_running_and_lock_waiters_are_read_at_scrape_time() -> None:
    metrics = Metrics(process=False)
    async with open_test_cluster(1, metrics=metrics) as cluster:
        idle = scrape(metrics)
        assert value(idle, "extjobs_queue_depth") == 0
        assert value(idle, "extjobs_jobs_running") == 0
        assert "process_cpu_seconds_total" not in names(idle)
        # One job holds instance lock "x" for a while; two more want it.
        holder = cluster.submit(OpTestDelay(duration=30, lock_instances=("x",)))
        waiters = [cluster.submit(OpTestDelay(lock_instances=("x",))) for _ in range(2)]
        queue = cluster.engine.queue  # type: ignore[union-attr]
        await queue.flush()
        for job_id in waiters:
            await wait_logged(queue, job_id, LogKind.WAITING)
        busy = scrape(metrics)
        assert value(busy, "extjobs_jobs_waiting_for_locks") == 2
        # One runs; the two others have a worker but wait for the lock.
        assert value(busy, "extjobs_jobs_running") == 1
        assert value(busy, "extjobs_jobs", status="running", opcode="OP_TEST_DELAY") == 1
        assert value(busy, "extjobs_jobs", status="waiting", opcode="OP_TEST_DELAY") == 2
        assert value(busy, "extjobs_queue_depth") == 2
        queue.cancel(holder)
        for job_id in waiters:
            assert ok(await cluster.wait(job_id))
        done = scrape(metrics)
        assert value(done, "extjobs_jobs_waiting_for_locks") == 0
        assert value(done, "extjobs_queue_depth") == 0
        assert value(done, "extjobs_jobs_finished_total", status="canceled") == 1
        # The waiters waited for their locks; the holder did not.
        assert value(done, "extjobs_lock_wait_seconds_count", opcode="OP_TEST_DELAY") == 3


async def wait_logged(queue: JobQueue, job_id: int, kind: LogKind) -> None:
    """Return once the job's log has an entry of ``kind``."""
    since = 0
    with anyio.fail_after(10):
        while True:
            _, entries = await queue.wait_for_change(job_id, since, 5.0)
            if any(e.kind is kind for e in entries):
                return
            since = entries[-1].serial if entries else since


def series(samples: list[Sample]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for s in samples}


def label_values(samples: list[Sample]) -> Iterator[str]:
    for s in samples:
        yield from s.labels.values()


async def test_labels_stay_bounded_whatever_the_names_and_the_number_of_jobs() -> None:
    metrics = Metrics(process=False)
    async with open_test_cluster(2, providers=PROVIDERS, metrics=metrics) as cluster:

        async def round_of(name: str) -> None:
            assert ok(await cluster.run(create_op(name, provider="sharedfile", disks=2)))
            grown = OpInstanceGrowDisk(instance_name=name, disk=1, amount=4)
            assert ok(await cluster.run(grown))
            moved = OpInstanceMigrate(instance_name=name, target_node="node2")
            assert ok(await cluster.run(moved))

        await round_of("first")
        shape = series(scrape(metrics))
        for i in range(5):
            await round_of(f"inst{i}")
        samples = scrape(metrics)
        # Five more instances, fifteen more jobs: not one more series.
        assert series(samples) == shape
        config = cluster.config
        forbidden = set(config.instances)
        for instance in config.instances.values():
            forbidden.add(instance.uuid)
            for disk in instance.disks:
                forbidden.update((disk.uuid, f"{disk.uuid}.ext.disk0", disk.params["dir"]))
        forbidden.update(str(job_id) for job_id in range(1, 40))
        assert not forbidden & set(label_values(samples))
        # Every label value is a known opcode, status, kind, provider, action or node.
        allowed_labels = {"status", "opcode", "kind", "provider", "action", "node", "le"}
        assert {k for s in samples for k in s.labels} <= allowed_labels


def test_metrics_listen_is_checked_when_the_file_is_read() -> None:
    assert config_from_dict({}).metrics.listen is None
    config = config_from_dict({"metrics": {"listen": "127.0.0.1:9187"}})
    assert config.metrics.host_port == ("127.0.0.1", 9187)
    with pytest.raises(ConfigError, match=r"\[metrics\].*listen must be HOST:PORT"):
        config_from_dict({"metrics": {"listen": "9187"}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[metrics\]: port"):
        config_from_dict({"metrics": {"port": 9187}})


def test_a_busy_metrics_address_is_refused_naming_the_key() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"\[metrics\] listen 127.0.0.1:{port}: cannot listen"
        ):
            bind_metrics(f"127.0.0.1:{port}")
    free = bind_metrics(f"127.0.0.1:{port}")
    free.close()


def test_two_daemons_in_one_process_keep_their_own_numbers() -> None:
    one, two = Metrics(), Metrics()
    one.jobs_submitted(3)
    assert value(scrape(one), "extjobs_jobs_submitted_total") == 3
    assert value(scrape(two), "extjobs_jobs_submitted_total") == 0
