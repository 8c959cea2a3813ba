"""OpTestDelay: sleep on the master and/or on nodes (tests and benchmarks)."""

from __future__ import annotations

from typing import Any

from extjobs.errors import ExtJobsError, NodeError
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.model.cluster import ClusterConfig
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpTestDelay
from extjobs.model.remote import RemoteCommand
from extjobs.model.steps import Step


class LUTestDelay(LogicalUnit[OpTestDelay]):
    OPCODE = OpTestDelay

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return (
            [LockRequest.cluster()]
            + [LockRequest.instance(n) for n in self.op.lock_instances]
            + [LockRequest.node(n, Mode.SHARED) for n in self.op.on_nodes]
        )

    def check(self, config: ClusterConfig) -> None:
        for name in self.op.on_nodes:
            config.node(name)

    async def exec(self, ctx: StepContext) -> Any:
        op = self.op
        rounds = max(op.repeat, 0) + 1
        for _ in range(rounds):
            if op.on_master:
                await ctx.sleep(op.duration)
            if op.on_nodes:
                steps = [
                    Step(
                        node=name,
                        description=f"sleep {op.duration:g}",
                        command=RemoteCommand(
                            argv=("sleep", f"{op.duration:g}"),
                            env={"PATH": "/usr/bin:/bin"},
                            timeout=op.duration + ctx.options.storage.timeout("diagnose"),
                        ),
                    )
                    for name in op.on_nodes
                ]
                results = await ctx.run_many(steps)
                failed = {
                    s.node: r.message
                    for s, r in zip(steps, results, strict=True)
                    if isinstance(r, ExtJobsError)
                }
                if failed:
                    raise NodeError(
                        "delay failed on "
                        + "; ".join(f"{node}: {msg}" for node, msg in sorted(failed.items())),
                        nodes=sorted(failed),
                    )
        if op.duration:
            ctx.log(f"slept {op.duration:g}s x{rounds}")
        return {"slept": op.duration * rounds}
