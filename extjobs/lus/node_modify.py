"""``OP_NODE_SET_PARAMS``: mark a node offline or drained, set its fence command.

- offline: no step runs on the node any more; its instances can be failed over
  without ``ignore_consistency`` (the node is fenced first when it has a fence
  command). Bringing a node back online first checks that it answers.
- drained: no instance is placed or moved there; what runs there stays.
- fence command: an argv run on the master (never through a shell) that must make
  sure the node no longer uses the storage — power it off, or revoke its access.
  It gets ``EXTJOBS_NODE`` and ``EXTJOBS_NODE_HOST`` in its environment.
- host key (a reinstalled node): the key the node offers now is fetched (a journalled
  step) and pinned when it is the one given (``host_key``) or when
  ``accept_new_host_key`` says so; the old and new fingerprints go to the job log and
  the result; then a login with the new key must work. Every other job keeps refusing
  a node whose key differs from the pinned one.
"""

from __future__ import annotations

import shlex
from typing import Any

import attrs

from extjobs.errors import ExtJobsError, HostKeyError, PrerequisiteError
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.node import node_summary
from extjobs.model.cluster import ClusterConfig
from extjobs.model.locks import LockRequest
from extjobs.model.opcodes import OpNodeSetParams
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand, fingerprint
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
        repinned: dict[str, Any] = {}
        if op.host_key is not None or op.accept_new_host_key:
            key = await self._new_host_key(ctx)
            if key != node.host_key:
                changes["host_key"] = key
                repinned = {
                    "old_host_key_fingerprint": fingerprint(node.host_key)
                    if node.host_key
                    else None,
                    "new_host_key_fingerprint": fingerprint(key),
                }
                notes.append(
                    f"host key re-pinned: {repinned['old_host_key_fingerprint']} → "
                    f"{repinned['new_host_key_fingerprint']}"
                )
            else:
                notes.append(f"host key {fingerprint(key)} unchanged")
        if changes:
            ctx.update_config(lambda c: c.with_node(attrs.evolve(c.node(node.name), **changes)))
        ctx.log(f"node {node.name}: " + ("; ".join(notes) if notes else "nothing changed"))
        if repinned:
            await self._check_login(ctx)
        return {**node_summary(ctx.config.node(node.name), ctx.config), **repinned}

    async def _new_host_key(self, ctx: StepContext) -> str:
        """The key the node offers now, if the opcode allows pinning it (``type base64``)."""
        op = self.op
        node = ctx.config.node(op.node_name)
        offered = await ctx.fetch_host_key(node.host, node.port, node=node.name)
        fp = fingerprint(offered)
        old = fingerprint(node.host_key) if node.host_key else "none"
        ctx.log(f"node {node.name} ({node.host}:{node.port}) offers host key {fp}; pinned: {old}")
        if op.host_key is not None and op.host_key.split()[:2] != offered.split()[:2]:
            raise HostKeyError(
                f"host key of node {node.name} is {fp}, not the given "
                f"{fingerprint(op.host_key)}; nothing was changed (pinned: {old})",
                node=node.name,
                offered=fp,
            )
        return " ".join(offered.split()[:2])

    async def _check_login(self, ctx: StepContext) -> None:
        """A login with the newly pinned key (the configuration already has it)."""
        await ctx.run(
            Step(
                node=self.op.node_name,
                description="check login with the re-pinned host key",
                command=RemoteCommand(
                    argv=("uname", "-n"),
                    env={"PATH": DEFAULT_PATH},
                    timeout=ctx.options.ssh.login_timeout,
                ),
            )
        )
