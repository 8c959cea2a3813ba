"""ExtStorage opcodes: diagnose providers on every online node, concurrently."""

from __future__ import annotations

from typing import Any

from extjobs.errors import ExtJobsError
from extjobs.extstorage.diagnose import (
    ProviderStatus,
    diagnose_command,
    parse_diagnose_output,
    summarise_groups,
)
from extjobs.lus.base import LogicalUnit, StepContext
from extjobs.lus.cluster import require_cluster
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpExtStorageDiagnose
from extjobs.model.steps import Step


class LUExtStorageDiagnose(LogicalUnit[OpExtStorageDiagnose]):
    """Per node: valid/invalid with reason and path; per group: valid iff on every node."""

    OPCODE = OpExtStorageDiagnose

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster(Mode.SHARED)]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)
        for name in self.op.nodes:
            config.node(name)
        # Validates provider names before any I/O.
        diagnose_command(("/",), self.op.providers or None, 1.0)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        storage = ctx.options.storage
        nodes = [cfg.nodes[n] for n in self.op.nodes] if self.op.nodes else cfg.online_nodes()
        nodes = [n for n in nodes if not n.offline]
        steps = [
            Step(
                node=node.name,
                kind="command",
                description="diagnose ExtStorage providers",
                command=diagnose_command(
                    cfg.search_path_for(node, storage.search_path),
                    self.op.providers or None,
                    storage.timeout("diagnose"),
                    path_env=storage.path_env,
                ),
            )
            for node in nodes
        ]
        answers = await ctx.run_many(steps)
        per_node: dict[str, dict[str, ProviderStatus] | BaseException] = {}
        node_out: dict[str, Any] = {}
        for node, answer in zip(nodes, answers, strict=True):
            if isinstance(answer, ExtJobsError):
                per_node[node.name] = answer
                node_out[node.name] = {"error": answer.message}
                ctx.log(f"{node.name}: unreachable or failed: {answer.message}", kind="warning")
                continue
            try:
                report = parse_diagnose_output(answer.stdout, node=node.name)
            except ExtJobsError as exc:
                per_node[node.name] = exc
                node_out[node.name] = {"error": exc.message}
                continue
            per_node[node.name] = report
            node_out[node.name] = {
                "providers": {name: codec.unstructure(st) for name, st in sorted(report.items())}
            }
            for name, st in sorted(report.items()):
                verdict = "valid" if st.valid else f"invalid: {st.reason}"
                ctx.log(f"{node.name}: provider {name} at {st.path}: {verdict}")
        groups = summarise_groups(
            per_node,
            {n.name: n.group for n in nodes},
            offline=[n.name for n in cfg.nodes.values() if n.offline],
        )
        group_out = {
            group: {name: codec.unstructure(st) for name, st in sorted(statuses.items())}
            for group, statuses in sorted(groups.items())
        }
        for group, statuses in sorted(groups.items()):
            for name, gst in sorted(statuses.items()):
                ctx.log(
                    f"group {group}: provider {name} "
                    + ("valid" if gst.valid else "invalid (" + "; ".join(
                        f"{n}: {r}" for n, r in gst.reasons.items()) + ")")
                )
        return {"nodes": node_out, "groups": group_out}
