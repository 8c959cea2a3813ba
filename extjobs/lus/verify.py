"""``extjobs verify``: compare the configuration with what the nodes and the journal say.

Findings (each with a ``kind``, a message, and — where a safe fix exists — the opcode
that applies it, which ``verify --repair`` submits as a job):

- ``unreachable``       a node did not answer;
- ``wrong-node``        a guest runs on a node that is not its instance's primary;
- ``not-running``       an instance marked up whose guest does not run on its primary;
- ``running-down``      an instance marked down whose guest runs;
- ``stray-attach``      a disk attached (or open) on a node other than its primary —
                        repair: close+detach it there;
- ``offline-attached``  a disk attached on an offline node (reported, not repaired:
                        the node must come back or be fenced);
- ``leaked-volume``     a volume the journal created that is neither in the
                        configuration nor removed — repair: detach everywhere, remove;
- ``interrupted-removal`` an instance whose removal left disks — repair: remove again;
- ``missing-volume``    a configured disk that its provider cannot attach on the
                        instance's primary (the volume is gone from the storage), or
                        whose device or file, as attach printed it, cannot be read there;
- ``size-mismatch``     a configured disk whose size on the primary (the block device,
                        or the file a userspace URI names) is not the configured size;
- ``provider-unusable`` a provider not valid on a primary whose instances use it (their
                        disks could not be checked);
- ``disk-unchecked``    a disk whose check failed for another reason (a timeout …).

Disks are checked on each instance's primary (online, answering) through the provider:
``attach`` (idempotent) says where the volume is, and the size of what it printed is
read there. A disk of an instance marked down whose guest does not run there is
detached again afterwards, so verify leaves every disk attached where it found it. A
size is compared in whole MiB (a volume a provider rounded up by less than 1 MiB
matches). None of these four has a repair: what is right is the operator's call.

Verify holds the cluster lock exclusively, so no flow is half-way while it looks.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from extjobs.errors import ExtJobsError, NotFoundError, PrerequisiteError, ProviderError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.env import Volume
from extjobs.extstorage.names import Action
from extjobs.hypervisors import get_hypervisor
from extjobs.hypervisors.base import parse_status, run_dir_for
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.cluster import require_cluster
from extjobs.lus.instance_hv import status_step
from extjobs.lus.instance_storage import (
    MIB,
    attach_disk,
    diagnose_on,
    disk_volume,
    provider_step,
    run_provider,
    size_check_command,
    skipped,
)
from extjobs.lus.ledger import LEDGER_KINDS, VolumeState, build_ledger
from extjobs.model.cluster import ClusterConfig, Disk, Instance
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpClusterVerify, OpVolumeCleanup
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand
from extjobs.model.steps import HypervisorCall, Step


@attrs.frozen
class Finding:
    kind: str
    message: str
    repair: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "repair": self.repair}


def _config_volumes(config: ClusterConfig) -> dict[str, tuple[str, int]]:
    """Every volume the configuration owns: the instances' disks and detached disks."""
    return {
        disk.volume_name: (inst.name, disk.index)
        for inst in config.instances.values()
        for disk in inst.disks + inst.detached_disks
    }


def storage_findings(config: ClusterConfig, ledger: dict[str, VolumeState]) -> list[Finding]:
    """Findings about volumes, from the configuration and the journal's ledger (pure)."""
    owners = _config_volumes(config)
    findings: list[Finding] = []
    for name, state in sorted(ledger.items()):
        if not state.exists:
            continue
        where = sorted(state.attached | set(state.opened))
        owner = owners.get(name)
        if owner is None:
            findings.append(
                Finding(
                    "leaked-volume",
                    f"volume {name} ({state.provider}) was created by a job but is neither "
                    "in the configuration nor removed"
                    + (f"; attached on {', '.join(where)}" if where else ""),
                    {
                        "OP_ID": OpVolumeCleanup.OP_ID,
                        "volume": name,
                        "detach_nodes": [n for n in where if _online(config, n)],
                        "remove": True,
                    },
                )
            )
            continue
        instance = config.instances[owner[0]]
        # A detached disk belongs attached nowhere, not even on the primary.
        detached = any(d.volume_name == name for d in instance.detached_disks)
        strays = [n for n in where if detached or n != instance.primary]
        online = [n for n in strays if _online(config, n)]
        offline = [n for n in strays if not _online(config, n)]
        if online:
            findings.append(
                Finding(
                    "stray-attach",
                    f"disk {owner[1]} of {instance.name} ({name}) is attached on "
                    f"{', '.join(online)}, not only on its primary {instance.primary}",
                    {
                        "OP_ID": OpVolumeCleanup.OP_ID,
                        "volume": name,
                        "detach_nodes": online,
                        "remove": False,
                    },
                )
            )
        for node in offline:
            findings.append(
                Finding(
                    "offline-attached",
                    f"disk {owner[1]} of {instance.name} ({name}) may still be attached on "
                    f"offline node {node}; bring the node back or fence it, then verify again",
                )
            )
    for instance in sorted(config.instances.values(), key=lambda i: i.name):
        if instance.cleanup:
            findings.append(
                Finding(
                    "interrupted-removal",
                    f"instance {instance.name} was being removed and still has disks to "
                    "clean up: " + "; ".join(f"{d}: {why}" for d, why in instance.cleanup.items()),
                    {"OP_ID": "OP_INSTANCE_REMOVE", "instance_name": instance.name},
                )
            )
    return findings


def _online(config: ClusterConfig, node: str) -> bool:
    found = config.nodes.get(node)
    return found is not None and not found.offline


#: A login that does nothing: whether a node answers at all.
ALIVE = RemoteCommand(argv=("true",), env={"PATH": DEFAULT_PATH}, timeout=30.0)


class LUClusterVerify(LogicalUnit[OpClusterVerify]):
    OPCODE = OpClusterVerify

    def __init__(self, op: OpClusterVerify, options: Config) -> None:
        super().__init__(op, options)
        #: Disks attached only to be checked, not detached again yet (a cancel does it).
        self._to_detach: dict[tuple[str, int], tuple[Instance, Disk, ProviderStatus]] = {}

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        findings = storage_findings(cfg, build_ledger(await ctx.journal_records(LEDGER_KINDS)))
        guests, unreachable, running = await self._guests(ctx, cfg)
        findings += guests
        findings += await self._disks(ctx, cfg, unreachable, running)
        for finding in findings:
            ctx.log(f"{finding.kind}: {finding.message}", kind=LogKind.FINDING)
        if not findings:
            ctx.log("the cluster is consistent: configuration, guests and disks agree")
        return {"findings": [f.to_dict() for f in findings], "clean": not findings}

    async def _guests(
        self, ctx: StepContext, cfg: ClusterConfig
    ) -> tuple[list[Finding], set[str], dict[str, list[str]]]:
        """Findings about guests; the nodes that did not answer; where each guest runs."""
        steps: list[Step] = []
        for instance in sorted(cfg.instances.values(), key=lambda i: i.name):
            group = cfg.node(instance.primary).group
            for node in cfg.online_nodes(group):
                step = status_step(instance, node.name, run_dir_for(cfg.cluster, node.name))
                steps.append(attrs.evolve(step, check=True))
        # Every other online node is asked too (a plain login), so that a node no guest
        # could run on is still found unreachable.
        asked = {s.node for s in steps}
        steps += [
            Step(node=node.name, description="check that the node answers", command=ALIVE)
            for node in sorted(cfg.nodes.values(), key=lambda n: n.name)
            if not node.offline and node.name not in asked
        ]
        answers = await ctx.run_many(steps)
        findings: list[Finding] = []
        unreachable: dict[str, str] = {}
        running: dict[str, list[str]] = {}
        for step, answer in zip(steps, answers, strict=True):
            if isinstance(answer, ExtJobsError):
                unreachable.setdefault(step.node, answer.message)
                continue
            if not isinstance(step.payload, HypervisorCall):
                continue
            name = step.payload.instance
            try:
                status = parse_status(answer.stdout, node=step.node)
            except ExtJobsError as exc:
                unreachable.setdefault(step.node, exc.message)
                continue
            if status.running:
                running.setdefault(name, []).append(step.node)
        for node_name, why in sorted(unreachable.items()):
            findings.append(Finding("unreachable", f"node {node_name} could not be checked: {why}"))
        for instance in sorted(cfg.instances.values(), key=lambda i: i.name):
            where = running.get(instance.name, [])
            for node_name in where:
                if node_name != instance.primary:
                    findings.append(
                        Finding(
                            "wrong-node",
                            f"instance {instance.name} runs on {node_name} but its primary is "
                            f"{instance.primary}; use 'instance migrate --cleanup'",
                        )
                    )
            on_primary = instance.primary in where
            if (
                instance.admin_up
                and not on_primary
                and instance.primary not in unreachable
                and not instance.cleanup
                and not cfg.node(instance.primary).offline
            ):
                findings.append(
                    Finding(
                        "not-running",
                        f"instance {instance.name} should run on {instance.primary} "
                        "but does not; use 'instance startup'",
                    )
                )
            if not instance.admin_up and on_primary:
                findings.append(
                    Finding(
                        "running-down",
                        f"instance {instance.name} is marked down but runs on "
                        f"{instance.primary}; use 'instance shutdown'",
                    )
                )
        return findings, set(unreachable), running

    # -- disks: there, and of the configured size --------------------------------------

    async def _disks(
        self,
        ctx: StepContext,
        cfg: ClusterConfig,
        unreachable: set[str],
        running: dict[str, list[str]],
    ) -> list[Finding]:
        """Check every configured disk on its instance's primary (module docstring)."""
        instances = [
            inst
            for inst in sorted(cfg.instances.values(), key=lambda i: i.name)
            if inst.disks
            and not inst.cleanup
            and _online(cfg, inst.primary)
            and inst.primary not in unreachable
        ]
        if not instances:
            return []
        nodes = sorted({inst.primary for inst in instances})
        providers = sorted({d.provider for inst in instances for d in inst.disks})
        reports = await diagnose_on(ctx, [cfg.node(n) for n in nodes], providers)
        findings: list[Finding] = []
        unusable: dict[tuple[str, str, str], list[str]] = {}
        checks: list[tuple[Instance, list[tuple[Disk, ProviderStatus]]]] = []
        for node in nodes:
            report = reports[node]
            if isinstance(report, BaseException):
                why = report.message if isinstance(report, ExtJobsError) else str(report)
                findings.append(Finding("unreachable", f"node {node} could not be checked: {why}"))
        for inst in instances:
            report = reports[inst.primary]
            if isinstance(report, BaseException):
                continue
            usable = []
            for disk in inst.disks:
                status = report.get(disk.provider)
                if status is not None and status.valid:
                    usable.append((disk, status))
                    continue
                reason = (status.reason if status is not None else None) or "not reported"
                names = unusable.setdefault((inst.primary, disk.provider, reason), [])
                if inst.name not in names:
                    names.append(inst.name)
            checks.append((inst, usable))
        for (node, provider, why), names in sorted(unusable.items()):
            findings.append(
                Finding(
                    "provider-unusable",
                    f"provider {provider} is not usable on {node} ({why}); the disks of "
                    f"{', '.join(names)} there were not checked",
                )
            )
        results: list[list[Finding]] = [[] for _ in checks]

        async def check(
            index: int, inst: Instance, usable: list[tuple[Disk, ProviderStatus]]
        ) -> None:
            # Detached again unless it is meant to be attached there: a guest runs there,
            # the instance is marked up (its disks stay with its primary), or its disks
            # were activated for a repair (activate-disks).
            detach = (
                not inst.admin_up
                and not inst.disks_active
                and inst.primary not in running.get(inst.name, [])
            )
            for disk, status in usable:
                found = await self._check_disk(ctx, inst, disk, status, detach=detach)
                if found is not None:
                    results[index].append(found)

        async with anyio.create_task_group() as tg:
            for index, (inst, usable) in enumerate(checks):
                tg.start_soon(check, index, inst, usable)
        return findings + [f for found in results for f in found]

    async def _check_disk(
        self, ctx: StepContext, inst: Instance, disk: Disk, status: ProviderStatus, *, detach: bool
    ) -> Finding | None:
        """Attach ``disk`` on the primary and read its size there; a finding or None."""
        node = inst.primary
        what = f"disk {disk.index} of {inst.name} ({disk.volume_name})"
        volume = disk_volume(inst.name, disk)
        if detach:
            self._to_detach[(inst.name, disk.index)] = (inst, disk, status)
        try:
            try:
                info = await attach_disk(
                    ctx, node, status, volume, instance=inst.name, disk=disk.index
                )
            except ProviderError as exc:
                return Finding(
                    "missing-volume",
                    f"{what} cannot be attached on {node}; it may no longer exist in the "
                    f"storage: {exc.message}",
                )
            hv = get_hypervisor(inst.hypervisor)
            path = hv.disk_path(info, disk.access, node=node, provider=disk.provider)
            if not path.startswith("/"):
                ctx.log(f"{node}: the size of {what} cannot be read ({path!r} is no path)")
                return None
            result = await ctx.run(
                Step(
                    node=node,
                    description=f"check the size of {path}",
                    command=size_check_command(path, block=path == info.device),
                    check=True,
                )
            )
            text = result.stdout.strip()
            if not result.ok or not text.isdigit():
                why = result.stderr.strip()[-300:] or repr(text[:100])
                return Finding(
                    "missing-volume",
                    f"{what}: {path}, where attach says it is on {node}, cannot be read: {why}",
                )
            return _size_finding(what, inst, disk, node, path, int(text))
        except ExtJobsError as exc:
            return Finding(
                "disk-unchecked", f"{what} could not be checked on {node}: {exc.message}"
            )
        finally:
            if detach:
                await self._detach(ctx, inst, disk, status)

    async def _detach(
        self, ctx: StepContext, inst: Instance, disk: Disk, status: ProviderStatus
    ) -> None:
        self._to_detach.pop((inst.name, disk.index), None)
        try:
            await run_provider(
                ctx,
                inst.primary,
                status,
                Action.DETACH,
                disk_volume(inst.name, disk),
                instance=inst.name,
                disk=disk.index,
            )
        except ExtJobsError as exc:
            ctx.log(
                f"{inst.primary}: detaching disk {disk.index} of {inst.name} again after its "
                f"check failed: {exc.message}",
                kind=LogKind.WARNING,
            )

    async def compensate(self, ctx: StepContext) -> None:
        """After a cancel: detach what was attached only to be checked."""
        for inst, disk, status in list(self._to_detach.values()):
            await self._detach(ctx, inst, disk, status)


def _size_finding(
    what: str, inst: Instance, disk: Disk, node: str, path: str, size: int
) -> Finding | None:
    if size // MIB == disk.size:
        return None
    if size // MIB > disk.size:
        advice = (
            f"if it was grown, record it: 'extjobs instance grow-disk {inst.name} "
            f"{disk.index} {size // MIB}M --absolute'"
        )
    else:
        advice = "the guest cannot reach the end it was given; restore or grow the volume"
    return Finding(
        "size-mismatch",
        f"{what} is {size} bytes ({size // MIB} MiB) on {node} ({path}), but the "
        f"configuration says {disk.size} MiB; {advice}",
    )


class LUVolumeCleanup(LogicalUnit[OpVolumeCleanup]):
    """Close and detach a volume on the given nodes, and remove it if asked (repairs)."""

    OPCODE = OpVolumeCleanup

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)
        for node in self.op.detach_nodes:
            if config.node(node).offline:
                raise PrerequisiteError(f"node {node} is offline", node=node)
        owners = _config_volumes(config)
        if self.op.remove and self.op.volume in owners:
            inst, idx = owners[self.op.volume]
            raise PrerequisiteError(
                f"volume {self.op.volume} is disk {idx} of instance {inst}; "
                "it is not removed by a cleanup",
                volume=self.op.volume,
            )
        owner = owners.get(self.op.volume)
        if owner is not None and config.instances[owner[0]].primary in self.op.detach_nodes:
            raise PrerequisiteError(
                f"node {config.instances[owner[0]].primary} is the primary of "
                f"{owner[0]}; its disk stays attached there",
                volume=self.op.volume,
            )

    async def exec(self, ctx: StepContext) -> Any:
        ledger = build_ledger(await ctx.journal_records(LEDGER_KINDS))
        state = ledger.get(self.op.volume)
        if state is None:
            raise NotFoundError(
                f"the journal knows no volume {self.op.volume}", volume=self.op.volume
            )
        volume = state.volume
        done: list[str] = []
        for node in self.op.detach_nodes:
            status = self._provider(state, node)
            for action in (Action.CLOSE, Action.DETACH):
                if skipped(status, action):
                    continue
                await ctx.run(self._step(ctx, node, status, action, volume, state))
            done.append(f"detached on {node}")
        if self.op.remove:
            where = next((n for n in sorted(state.providers) if _online(ctx.config, n)), None)
            if where is None:
                raise PrerequisiteError(
                    f"no online node has run the provider of {self.op.volume}",
                    volume=self.op.volume,
                )
            status = self._provider(state, where)
            await ctx.run(self._step(ctx, where, status, Action.REMOVE, volume, state))
            done.append(f"removed from {where}")
        ctx.log(f"volume {self.op.volume}: " + ", ".join(done or ["nothing to do"]))
        return {"volume": self.op.volume, "done": done}

    def _provider(self, state: VolumeState, node: str) -> ProviderStatus:
        path, optional = state.providers.get(node) or next(iter(state.providers.values()))
        return ProviderStatus(
            name=state.provider, valid=True, path=path, reason=None, optional=optional
        )

    def _step(
        self,
        ctx: StepContext,
        node: str,
        status: ProviderStatus,
        action: Action,
        volume: Volume,
        state: VolumeState,
    ) -> Step:
        return provider_step(
            node,
            status,
            action,
            volume,
            instance=state.instance or "",
            disk=state.disk or 0,
            options=ctx.options,
        )
