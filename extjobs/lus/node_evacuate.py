"""``node migrate`` and ``node evacuate``: move every primary instance off a node.

The per-node batch is computed here, on the master, under the node's locks — not by
the client — so that the plan and the checks see one configuration that no other job
changes meanwhile::

    locks: cluster shared; the node exclusive; its group and the group's other nodes
           shared; each of its instances shared
    per instance: its target (``pick_target``, the selection of migrate and failover,
           with instances already planned for a node counted there, so they spread)
    any instance without a valid target  →  refused, naming each one; nothing submitted
    queue: one job per instance, one batch, journalled as a step of this opcode (its
           ``started`` record tells recovery that jobs may have been submitted) (``OP_INSTANCE_MIGRATE`` for a running
           instance, ``OP_INSTANCE_FAILOVER`` for a stopped one — it moves without
           starting — and for every instance of ``node evacuate``), target pinned

This opcode changes nothing itself; each instance's job moves it under its own locks
and journal, so one failing does not stop the others. The result lists the jobs; the
CLI follows them and prints where each instance landed.

Recovery after a crash: before the submission was journalled, run again (nothing was
submitted); after it, the jobs may exist: the opcode fails, saying so, rather than
risk submitting them twice.
"""

from __future__ import annotations

from typing import Any

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.instance_move import movable_instance, pick_target
from extjobs.lus.journal import Journal
from extjobs.model.cluster import ClusterConfig, Instance
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import (
    OpCode,
    OpInstanceFailover,
    OpInstanceMigrate,
    OpNodeEvacuate,
    OpNodeMigrate,
)
from extjobs.model.steps import SUBMIT_JOBS, LocalRun


def node_instances(config: ClusterConfig, node: str) -> list[Instance]:
    """The instances whose primary is ``node``, by name."""
    return sorted((i for i in config.instances.values() if i.primary == node), key=lambda i: i.name)


def _locks(config: ClusterConfig, node_name: str) -> list[LockRequest]:
    wanted = [LockRequest.cluster()]
    node = config.nodes.get(node_name)
    if node is None:
        return wanted
    wanted.append(LockRequest.group(node.group, Mode.SHARED))
    wanted += [LockRequest.instance(i.name, Mode.SHARED) for i in node_instances(config, node_name)]
    for other in sorted(config.nodes.values(), key=lambda n: n.name):
        if other.group == node.group:
            mode = Mode.EXCLUSIVE if other.name == node_name else Mode.SHARED
            wanted.append(LockRequest.node(other.name, mode))
    return wanted


class _NodeMoveLU(LogicalUnit[Any]):
    """What node migrate and evacuate share; subclasses say which opcode each
    instance's job runs."""

    verb = ""

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return _locks(config, self.op.node_name)

    def check(self, config: ClusterConfig) -> None:
        config.node(self.op.node_name)
        if self.op.target_node is not None:
            config.node(self.op.target_node)

    def job_for(self, inst: Instance, target: str) -> tuple[str, OpCode]:
        raise NotImplementedError

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        node = ctx.config.node(op.node_name)
        instances = node_instances(ctx.config, node.name)
        if not instances:
            ctx.log(f"node {node.name} is primary of no instance: nothing to move")
            return {"node": node.name, "jobs": []}
        self.check_source(node.offline)
        planned: dict[str, list[Instance]] = {}
        plan: list[tuple[Instance, str]] = []
        problems: list[str] = []
        for inst in instances:
            try:
                _inst, source = movable_instance(
                    ctx.config, inst.name, release_active=self.releases_active()
                )
                target, _reports = await pick_target(
                    ctx,
                    inst,
                    source,
                    op.target_node,
                    also=[] if source.offline else [source],
                    planned=planned,
                )
            except ExtJobsError as exc:
                problems.append(f"{inst.name}: {exc.message}")
                continue
            planned.setdefault(target.name, []).append(inst)
            plan.append((inst, target.name))
        if problems:
            raise PrerequisiteError(
                f"cannot {self.verb} node {node.name}: {len(problems)} of {len(instances)} "
                f"instance(s) have no valid target ({'; '.join(problems)}); nothing was moved",
                node=node.name,
            )
        jobs = [self.job_for(inst, target) for inst, target in plan]
        ctx.log(
            f"{self.verb} {node.name}: "
            + "; ".join(
                f"{inst.name} → {target} ({kind})"
                for (inst, target), (kind, _op) in zip(plan, jobs, strict=True)
            )
        )
        ids = await ctx.submit_jobs(
            [[job] for _kind, job in jobs],
            reason=f"node {self.verb} {node.name}",
        )
        entries = [
            {"instance": inst.name, "target": target, "op": kind, "job_id": job_id}
            for (inst, target), (kind, _op), job_id in zip(plan, jobs, ids, strict=True)
        ]
        ctx.log(
            f"submitted {len(ids)} job(s), one per instance: "
            + ", ".join(f"{e['instance']}: job {e['job_id']}" for e in entries)
        )
        return {"node": node.name, "jobs": entries}

    def check_source(self, offline: bool) -> None:
        """Raise when the node's state forbids the move (migrate: it is offline)."""

    def releases_active(self) -> bool:
        """Whether the instance jobs release disks activated on the node (a failover
        ignoring consistency), so that such an instance may move."""
        return False

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        if any(
            isinstance(r.payload, LocalRun) and r.description.startswith(SUBMIT_JOBS)
            for r in journal
        ):
            return Recovery(
                RecoveryAction.FAILED,
                f"{self.verb} {self.op.node_name} was interrupted by a daemon restart while "
                "it submitted one job per instance: those jobs may exist and run on their "
                "own ('extjobs job list'); run it again for what is left on the node",
            )
        return Recovery(
            RecoveryAction.RETRY,
            f"{self.verb} {self.op.node_name} interrupted before any job was submitted; "
            "running it again",
        )


class LUNodeMigrate(_NodeMoveLU):
    OPCODE = OpNodeMigrate
    verb = "migrate"

    def check_source(self, offline: bool) -> None:
        if offline:
            raise PrerequisiteError(
                f"node {self.op.node_name} is offline: nothing can migrate from it; use "
                f"'extjobs node evacuate {self.op.node_name}'",
                node=self.op.node_name,
            )

    def job_for(self, inst: Instance, target: str) -> tuple[str, OpCode]:
        op = self.op
        if not inst.admin_up:
            # A stopped instance moves without being started.
            return "failover (stopped)", OpInstanceFailover(
                instance_name=inst.name, target_node=target
            )
        return "migrate", OpInstanceMigrate(
            instance_name=inst.name,
            target_node=target,
            mode=op.mode,
            allow_failover=op.allow_failover,
            max_downtime=op.max_downtime,
            bandwidth=op.bandwidth,
            converge_timeout=op.converge_timeout,
        )


class LUNodeEvacuate(_NodeMoveLU):
    OPCODE = OpNodeEvacuate
    verb = "evacuate"

    def releases_active(self) -> bool:
        return bool(self.op.ignore_consistency)

    def job_for(self, inst: Instance, target: str) -> tuple[str, OpCode]:
        return "failover", OpInstanceFailover(
            instance_name=inst.name,
            target_node=target,
            ignore_consistency=self.op.ignore_consistency,
            shutdown_timeout=self.op.shutdown_timeout,
        )
