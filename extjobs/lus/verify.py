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
- ``interrupted-removal`` an instance whose removal left disks — repair: remove again.

Verify holds the cluster lock exclusively, so no flow is half-way while it looks.
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import ExtJobsError, NotFoundError, PrerequisiteError
from extjobs.extstorage.diagnose import ProviderStatus
from extjobs.extstorage.env import Volume
from extjobs.extstorage.names import Action
from extjobs.hypervisors.base import parse_status, run_dir_for
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.cluster import require_cluster
from extjobs.lus.instance_hv import status_step
from extjobs.lus.instance_storage import provider_step, skipped
from extjobs.lus.ledger import LEDGER_KINDS, VolumeState, build_ledger
from extjobs.model.cluster import ClusterConfig
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
    return {
        disk.volume_name: (inst.name, disk.index)
        for inst in config.instances.values()
        for disk in inst.disks
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
        strays = [n for n in where if n != instance.primary]
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

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.EXCLUSIVE)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        findings = storage_findings(cfg, build_ledger(await ctx.journal_records(LEDGER_KINDS)))
        findings += await self._guests(ctx, cfg)
        for finding in findings:
            ctx.log(f"{finding.kind}: {finding.message}", kind=LogKind.FINDING)
        if not findings:
            ctx.log("the cluster is consistent: configuration, guests and disks agree")
        return {"findings": [f.to_dict() for f in findings], "clean": not findings}

    async def _guests(self, ctx: StepContext, cfg: ClusterConfig) -> list[Finding]:
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
        return findings


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
