"""Instance add, in process: the per-disk step order and the undo of a partial add."""

from __future__ import annotations

import pytest

from extjobs.model.opcodes import OpInstanceCreate
from tests.lus.scenario import create_op, error, ok, scripted_cluster

pytestmark = pytest.mark.usefixtures("engine_backend")

PER_DISK = ["verify", "create", "attach", "open {} exclusive", "setinfo"]


def disk_steps(disk: int) -> list[str]:
    return [f"{s.split(' ')[0]} disk{disk}" + (" exclusive" if "{}" in s else "") for s in PER_DISK]


async def test_each_disk_is_verified_created_attached_opened_and_labelled_in_that_order() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(create_op(disks=2))
        assert ok(job), error(job)
        assert cluster.runner.labels("node1") == [*disk_steps(0), *disk_steps(1), "hv start"]
        assert cluster.runner.trace(node="node2") == []
        assert "web" in cluster.config.instances


async def test_the_scripts_get_the_volume_environment() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(create_op(disks=1))
        assert ok(job), error(job)
        disk = cluster.config.instances["web"].disks[0]
        calls = {c.action: c for c in cluster.runner.select(kind="provider")}
        assert calls["create"].argv == ("/srv/extjobs/extstorage/strict/create",)
        assert calls["create"].command is not None
        assert calls["create"].command.cwd == "/srv/extjobs/extstorage/strict"
        env = calls["create"].env
        assert env["VOL_NAME"] == f"{disk.uuid}.ext.disk0"
        assert env["VOL_SIZE"] == "8"
        assert env["EXTP_DIR"] == "/vols"
        assert env["EXTP_PROVIDER"] == "strict"
        # verify sees the volume as create will, before create runs
        for name in ("VOL_NAME", "VOL_UUID", "EXTP_DIR", "EXTP_PROVIDER", "EXTP_ACCESS"):
            assert calls["verify"].env[name] == env[name]
        assert calls["open"].env["VOL_OPEN_EXCLUSIVE"] == "True"
        assert calls["setinfo"].env["VOL_METADATA"] == "originstname+web"


async def test_an_undeclared_parameter_is_refused_before_any_script_runs() -> None:
    async with scripted_cluster() as cluster:
        op = create_op(disks=1)
        spec = op.disks[0]
        bad = OpInstanceCreate(
            instance_name="web",
            pnode="node1",
            disks=(type(spec)(size=8, provider="strict", params={"colour": "blue"}),),
        )
        job = await cluster.run(bad)
        assert not ok(job)
        assert "colour" in error(job)
        assert cluster.runner.select(kind="provider") == []


@pytest.mark.parametrize(
    ("failing", "undo"),
    [
        pytest.param(
            "create",
            ["remove disk1", "close disk0", "detach disk0", "remove disk0"],
            id="create-of-disk1",
        ),
        pytest.param(
            "open",
            [
                "close disk1",
                "detach disk1",
                "remove disk1",
                "close disk0",
                "detach disk0",
                "remove disk0",
            ],
            id="open-of-disk1",
        ),
    ],
)
async def test_a_failure_on_disk1_undoes_everything_in_reverse(
    failing: str, undo: list[str]
) -> None:
    async with scripted_cluster() as cluster:
        runner = cluster.runner
        runner.fail(failing, node="node1", disk=1, stderr="no space left")
        job = await cluster.run(create_op(disks=2))
        assert not ok(job)
        assert "no space left" in error(job)
        labels = runner.labels("node1")
        failed_at = next(
            i for i, label in enumerate(labels) if label.startswith(f"{failing} disk1")
        )
        assert labels[failed_at + 1 :] == undo
        assert runner.storage.volumes == {}
        assert runner.guests == {}
        assert "web" not in cluster.config.instances


async def test_a_stopped_instance_is_added_with_its_disks_released() -> None:
    async with scripted_cluster() as cluster:
        job = await cluster.run(create_op(disks=1, start=False))
        assert ok(job), error(job)
        assert cluster.runner.labels("node1") == [*disk_steps(0), "close disk0", "detach disk0"]
        assert cluster.runner.storage.attached_anywhere() == {}
