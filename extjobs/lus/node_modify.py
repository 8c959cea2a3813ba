"""``OP_NODE_SET_PARAMS``: mark a node offline or drained, set its fence command.

- offline: no step runs on the node any more; its instances can be failed over
  without ``ignore_consistency`` (the node is fenced first when it has a fence
  command). Bringing a node back online first checks that it answers.
- drained: no instance is placed or moved there; what runs there stays.
- fence command: an argv run on the master (never through a shell) that must make
  sure the node no longer uses the storage — power it off, or revoke its access.
  It gets ``EXTJOBS_NODE`` and ``EXTJOBS_NODE_HOST`` in its environment.
"""

from __future__ import annotations

import shlex
from typing import Any

import attrs

from extjobs.errors import ExtJobsError, PrerequisiteError
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.node import node_summary
from extjobs.model.cluster import ClusterConfig
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import OpNodeSetParams
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand
from extjobs.model.steps import Step


class LUNodeSetParams(LogicalUnit[OpNodeSetParams]):
    OPCODE = OpNodeSetParams

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(), LockRequest.node(self.op.node_name)]

    def check(self, config: ClusterConfig) -> None:
        config.node(self.op.node_name)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        node = ctx.config.node(op.node_name)
        if op.offline is False and node.offline:
            try:
                await ctx.run(
                    Step(
                        node=node.name,
                        description="check that the node answers",
                        command=RemoteCommand(
                            argv=("uname", "-n"), env={"PATH": DEFAULT_PATH}, timeout=30.0
                        ),
                    )
                )
            except ExtJobsError as exc:
                raise PrerequisiteError(
                    f"node {node.name} stays offline: {exc.message}", node=node.name
                ) from None
        changes: dict[str, Any] = {}
        notes: list[str] = []
        instances = sorted(i.name for i in ctx.config.instances.values() if i.primary == node.name)
        if op.offline is not None and op.offline != node.offline:
            changes["offline"] = op.offline
            if not op.offline:
                changes["fenced"] = False
            if op.offline:
                notes.append(
                    "offline: no step runs there any more"
                    + (
                        f"; fail its instances over with 'extjobs instance failover NAME' "
                        f"({', '.join(instances)})"
                        if instances
                        else ""
                    )
                )
            else:
                notes.append("online again")
        if op.drained is not None and op.drained != node.drained:
            changes["drained"] = op.drained
            notes.append(
                "drained: no instance is placed or moved there"
                if op.drained
                else "no longer drained"
            )
        if op.fence_command is not None:
            command = op.fence_command or None
            if command != node.fence_command:
                changes["fence_command"] = command
                notes.append(
                    f"fence command: {shlex.join(command)}" if command else "fence command removed"
                )
        if changes:
            ctx.update_config(lambda c: c.with_node(attrs.evolve(c.node(node.name), **changes)))
        ctx.log(f"node {node.name}: " + ("; ".join(notes) if notes else "nothing changed"))
        return node_summary(ctx.config.node(node.name), ctx.config)
