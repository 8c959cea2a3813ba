"""The journal ledger and the storage findings of verify, on synthetic journals."""

from __future__ import annotations

import attrs

from extjobs.lus.ledger import build_ledger
from extjobs.lus.verify import storage_findings
from extjobs.model.cluster import ClusterConfig, Disk, Instance, Node
from extjobs.model.journal import JournalRecord, StepStatus
from extjobs.model.steps import FenceRun, ProviderCall
from extjobs.model.volume import Action, Volume

UUID = "0b2c1f4e-2f0e-4b7e-9a53-6d9d9a6f1e11"
VOL = f"{UUID}.ext.disk0"


def record(
    n: int, node: str, action: str, status: str = "done", *, exclusive: bool | None = None
) -> JournalRecord:
    volume = Volume(name=VOL, uuid=UUID, size=4, provider="strict", open_exclusive=exclusive)
    call = ProviderCall(
        instance="web",
        disk=0,
        action=Action(action),
        provider_dir=f"/srv/{node}/strict",
        volume=volume,
        optional=("open", "close"),
    )
    return JournalRecord(
        id=n,
        job_id=1,
        op_index=0,
        seq=n,
        node=node,
        description=action,
        status=StepStatus(status),
        payload=call,
        started=float(n),
    )


def config(
    primary: str = "n1", *, offline: tuple[str, ...] = (), owned: bool = True
) -> ClusterConfig:
    cfg = ClusterConfig()
    for name in ("n1", "n2", "n3"):
        cfg = cfg.with_node(Node(name, "127.0.0.1", offline=name in offline))
    if owned:
        disk = Disk(uuid=UUID, index=0, size=4, provider="strict")
        cfg = cfg.with_instance(Instance("web", primary, disks=(disk,)))
    return cfg


def test_replay_of_a_migration() -> None:
    journal = [
        record(1, "n1", "create"),
        record(2, "n1", "attach"),
        record(3, "n1", "open", exclusive=True),
        record(4, "n1", "open", exclusive=False),
        record(5, "n2", "attach"),
        record(6, "n2", "open", exclusive=False),
        record(7, "n1", "close"),
        record(8, "n1", "detach"),
        record(9, "n2", "open", exclusive=True),
    ]
    state = build_ledger(reversed(journal))[VOL]
    assert state.exists
    assert state.attached == {"n2"}
    assert state.opened == {"n2": "exclusive"}
    assert state.providers["n1"] == ("/srv/n1/strict", ("open", "close"))
    assert storage_findings(config("n2"), {VOL: state}) == []
    # The config still says n1: the attachment on n2 is a stray, n1 is clean.
    [finding] = storage_findings(config("n1"), {VOL: state})
    assert finding.kind == "stray-attach"
    assert finding.repair == {
        "OP_ID": "OP_VOLUME_CLEANUP",
        "volume": VOL,
        "detach_nodes": ["n2"],
        "remove": False,
    }


def test_uncertain_steps_count_as_done_only_when_they_attach() -> None:
    journal = [
        record(1, "n1", "create"),
        record(2, "n1", "attach"),
        record(3, "n2", "attach", status="interrupted"),
        record(4, "n2", "detach", status="failed"),
        record(5, "n3", "attach", status="failed"),
    ]
    state = build_ledger(journal)[VOL]
    assert state.attached == {"n1", "n2", "n3"}
    findings = storage_findings(config("n1", offline=("n3",)), {VOL: state})
    assert sorted(f.kind for f in findings) == ["offline-attached", "stray-attach"]
    stray = next(f for f in findings if f.kind == "stray-attach")
    assert stray.repair is not None
    assert stray.repair["detach_nodes"] == ["n2"]


def test_leaked_and_removed_volumes() -> None:
    leaked = build_ledger([record(1, "n1", "create"), record(2, "n1", "attach")])
    [finding] = storage_findings(config(owned=False), leaked)
    assert finding.kind == "leaked-volume"
    assert finding.repair is not None
    assert finding.repair["remove"] is True
    assert finding.repair["detach_nodes"] == ["n1"]
    gone = build_ledger(
        [record(1, "n1", "create"), record(2, "n1", "attach"), record(3, "n1", "remove")]
    )
    assert storage_findings(config(owned=False), gone) == []
    failed_remove = build_ledger([record(1, "n1", "create"), record(2, "n1", "remove", "failed")])
    assert [f.kind for f in storage_findings(config(owned=False), failed_remove)] == [
        "leaked-volume"
    ]


def test_a_fenced_node_holds_nothing() -> None:
    fence = JournalRecord(
        id=3,
        job_id=2,
        op_index=0,
        seq=1,
        node="master",
        description="fence n2",
        status=StepStatus.DONE,
        payload=FenceRun("n2"),
        started=3.0,
    )
    failed_fence = attrs.evolve(fence, id=4, status=StepStatus.FAILED, payload=FenceRun("n1"))
    journal = [
        record(1, "n2", "create"),
        record(2, "n2", "attach"),
        fence,
        failed_fence,
        record(5, "n1", "attach"),
    ]
    state = build_ledger(journal)[VOL]
    assert state.attached == {"n1"}
    assert storage_findings(config("n1", offline=("n2",)), {VOL: state}) == []
    # Without the fence, the offline node still counts.
    unfenced = build_ledger([r for r in journal if r is not fence])[VOL]
    assert [f.kind for f in storage_findings(config("n1", offline=("n2",)), {VOL: unfenced})] == [
        "offline-attached"
    ]


def test_a_detached_disk_is_owned_and_belongs_attached_nowhere() -> None:
    disk = Disk(uuid=UUID, index=0, size=4, provider="strict")
    cfg = config(owned=False).with_instance(Instance("web", "n1", detached_disks=(disk,)))
    created = [record(1, "n1", "create"), record(2, "n1", "attach"), record(3, "n1", "detach")]
    assert storage_findings(cfg, build_ledger(reversed(created))) == []
    still = build_ledger(reversed(created[:2]))
    [finding] = storage_findings(cfg, still)
    assert finding.kind == "stray-attach"
    assert finding.repair is not None
    assert finding.repair["detach_nodes"] == ["n1"]
