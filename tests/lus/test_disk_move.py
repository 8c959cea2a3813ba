"""A detached disk of one instance attached to another (``--disk attach:from=…``), in
process: where the scripts run, the one configuration change, the refusals and the undo."""

from __future__ import annotations

from typing import Any

import pytest

from extjobs.extstorage.diagnose import FORMAT_HEADER
from extjobs.model.opcodes import DiskModification, OpClusterVerify, OpInstanceSetParams
from extjobs.model.remote import CommandResult
from extjobs.testing import TestCluster
from tests.lus.scenario import add_instance, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")


def _change(instance: str, action: str, disk: str, **extra: Any) -> OpInstanceSetParams:
    return OpInstanceSetParams(
        instance_name=instance, disk=DiskModification(action=action, disk=disk, **extra)
    )


async def _two_instances(cluster: TestCluster) -> None:
    """web (node1) with its disk 1 detached, db (node2) running with disks 0 and 1."""
    await add_instance(cluster, "web")
    await add_instance(cluster, "db", node="node2")
    job = await cluster.run(_change("web", "detach", "1"))
    assert ok(job), error(job)
    cluster.runner.forget()


async def _findings(cluster: TestCluster) -> list[dict[str, Any]]:
    job = await cluster.run(OpClusterVerify())
    assert ok(job), error(job)
    return list(job.ops[0].result["findings"])


async def test_a_detached_disk_moves_to_a_running_instance_on_another_node() -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        [disk] = cluster.config.instances["web"].detached_disks
        volume = disk.volume_name
        assert volume.endswith(".ext.disk1")
        job = await cluster.run(
            _change("db", "attach", "1", source_instance="web", new_name="moved")
        )
        assert ok(job), error(job)
        web, db = cluster.config.instances["web"], cluster.config.instances["db"]
        assert web.detached_disks == ()
        assert [d.index for d in web.disks] == [0]
        moved = db.disks[-1]
        assert (moved.index, moved.uuid, moved.name, moved.volume_name) == (
            2,
            disk.uuid,
            "moved",
            volume,
        )
        # The same volume, now attached and open on db's node only; nothing on node1.
        assert cluster.runner.storage.attached_anywhere()[volume] == {"node2"}
        assert cluster.runner.labels("node1", "provider") == []
        calls = cluster.runner.select(
            kind="provider", node="node2", where=lambda c: c.volume == volume
        )
        assert [c.action for c in calls] == ["attach", "open", "setinfo"]
        assert calls[-1].env["VOL_METADATA"] == "originstname+db"
        result = job.ops[0].result
        assert (result["source"], result["hotplugged"], result["disk"]["volume"]) == (
            "web",
            True,
            volume,
        )
        assert "detached disk1 of web" in " ".join(e.message for e in cluster.engine.log(job.id))
        assert await _findings(cluster) == []


async def test_a_disk_that_is_attached_does_not_move() -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        before = cluster.config
        job = await cluster.run(_change("db", "attach", "0", source_instance="web"))
        assert not ok(job)
        assert "disk 0 of web is attached, not detached; detach it first" in error(job)
        assert cluster.config.instances == before.instances
        assert cluster.runner.trace() == []


@pytest.mark.parametrize(
    ("source", "disk", "says"),
    [
        pytest.param("nosuch", "1", "unknown instance 'nosuch'", id="unknown-instance"),
        pytest.param("web", "7", "instance web has no detached disk 7", id="unknown-disk"),
    ],
)
async def test_bad_sources_are_refused_and_change_nothing(
    source: str, disk: str, says: str
) -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        before = cluster.config
        job = await cluster.run(_change("db", "attach", disk, source_instance=source))
        assert not ok(job)
        assert says in error(job)
        assert cluster.config.instances == before.instances
        assert cluster.runner.trace() == []


async def test_a_name_the_receiver_has_is_refused() -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        job = await cluster.run(_change("db", "attach", "1", source_instance="web", new_name="x"))
        assert ok(job), error(job)
        await add_instance(cluster, "app", node="node3")
        job = await cluster.run(_change("app", "detach", "1"))
        assert ok(job), error(job)
        before = cluster.config
        cluster.runner.forget()
        job = await cluster.run(_change("db", "attach", "1", source_instance="app", new_name="x"))
        assert not ok(job)
        assert "instance db already has a disk named 'x'" in error(job)
        assert cluster.config.instances == before.instances
        assert cluster.runner.trace() == []


async def test_a_provider_not_valid_in_the_receivers_group_is_refused() -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        before = cluster.config
        broken = f"{FORMAT_HEADER}\nprovider strict\nreason script attach is missing\nend\ndone"
        cluster.runner.on(kind="diagnose", node="node3", result=CommandResult(0, broken + "\n"))
        job = await cluster.run(_change("db", "attach", "1", source_instance="web"))
        assert not ok(job)
        text = error(job)
        assert "detached disk 1 of web cannot move to db" in text
        assert "node3: script attach is missing" in text
        assert cluster.config.instances == before.instances
        assert cluster.runner.trace("provider") == []


async def test_a_parameter_the_receivers_group_does_not_declare_is_refused() -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        before = cluster.config
        # node3 (db's group) has a strict provider whose parameters.list lacks "dir".
        other = (
            f"{FORMAT_HEADER}\nprovider strict\npath /srv/extstorage/strict\noptional\n"
            "param size_hint a size\nend\ndone\n"
        )
        cluster.runner.on(kind="diagnose", node="node3", result=CommandResult(0, other))
        job = await cluster.run(_change("db", "attach", "1", source_instance="web"))
        assert not ok(job)
        text = error(job)
        assert "detached disk 1 of web cannot move to db" in text
        assert "dir" in text
        assert cluster.config.instances == before.instances
        assert cluster.runner.trace("provider") == []


async def test_a_failed_open_undoes_the_attach_and_the_disk_stays_with_its_source() -> None:
    async with scripted_cluster() as cluster:
        await _two_instances(cluster)
        before = cluster.config
        [disk] = before.instances["web"].detached_disks
        cluster.runner.fail(
            "open",
            node="node2",
            where=lambda c: c.volume == disk.volume_name,
            stderr="open refused",
        )
        job = await cluster.run(_change("db", "attach", "1", source_instance="web"))
        assert not ok(job)
        assert "open refused" in error(job)
        assert cluster.config.instances == before.instances
        assert disk.volume_name not in cluster.runner.storage.attached_anywhere()
        labels = cluster.runner.labels("node2", "provider")
        assert (labels[0], labels[-1]) == ("attach disk1", "detach disk1")
