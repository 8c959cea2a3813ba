"""ExtStorage opcodes: diagnose providers on every online node, concurrently."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from extjobs.errors import (
    ExtJobsError,
    InputError,
    NotFoundError,
    PrerequisiteError,
    ProviderError,
)
from extjobs.extstorage.diagnose import (
    ProviderStatus,
    diagnose_command,
    parse_diagnose_output,
    summarise_groups,
)
from extjobs.extstorage.names import validate_provider_name
from extjobs.lus.base import LogicalUnit, Recovery, RecoveryAction, StepContext
from extjobs.lus.capacity import group_capacity, shown
from extjobs.lus.cluster import require_cluster
from extjobs.lus.instance_storage import timeout_of_step
from extjobs.lus.journal import Journal
from extjobs.model import codec
from extjobs.model.cluster import ClusterConfig
from extjobs.model.config import Config
from extjobs.model.jobs import LogKind
from extjobs.model.locks import LockRequest, Mode
from extjobs.model.opcodes import OpExtStorageDiagnose, OpExtStorageInstall
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand
from extjobs.model.steps import Step, TreeCopy


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
        for node, step, answer in zip(nodes, steps, answers, strict=True):
            if isinstance(answer, ExtJobsError):
                answer = timeout_of_step(step, answer)
                per_node[node.name] = answer
                node_out[node.name] = {"error": answer.message}
                ctx.log(
                    f"{node.name}: unreachable or failed: {answer.message}", kind=LogKind.WARNING
                )
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
        if self.op.capacity:
            for group, statuses in sorted(groups.items()):
                for name, gst in sorted(statuses.items()):
                    found = {
                        n: answer[name]
                        for n, answer in per_node.items()
                        if n in gst.nodes and isinstance(answer, dict) and name in answer
                    }
                    cap = (
                        await group_capacity(ctx, found, {})
                        if gst.valid
                        else {"total": None, "free": None, "shared": False, "nodes": {}}
                    )
                    group_out[group][name]["capacity"] = cap
                    ctx.log(f"group {group}: provider {name}: {shown(cap)}")
        for group, statuses in sorted(groups.items()):
            for name, gst in sorted(statuses.items()):
                ctx.log(
                    f"group {group}: provider {name} "
                    + (
                        "valid"
                        if gst.valid
                        else "invalid ("
                        + "; ".join(f"{n}: {r}" for n, r in gst.reasons.items())
                        + ")"
                    )
                )
        return {"nodes": node_out, "groups": group_out}


REQUIRED_FILES = ("create", "remove", "grow", "attach", "detach", "setinfo", "verify")

#: Arguments: STAGED DEST. DEST (if any) is renamed aside and STAGED renamed to DEST;
#: ``mv -T`` never moves into an existing directory, and a failed second rename puts
#: DEST back. Between the renames DEST is missing for two system calls. The replaced
#: tree is removed last (a failure to remove it is a warning, not a failed install).
SWAP_SCRIPT = r"""
new=$1 dest=$2
old=${dest%/*}/.${dest##*/}.replaced-$$
[ -d "$new" ] || { printf 'the staged copy %s is missing\n' "$new" >&2; exit 1; }
# The node's own identity (node-id, see the shipped providers) stays unless the source
# brings one.
if [ -f "$dest/node-id" ] && [ ! -e "$new/node-id" ]; then
  cp -p -- "$dest/node-id" "$new/node-id" || exit 1
fi
rm -rf -- "$old" || exit 1
if [ -e "$dest" ] || [ -L "$dest" ]; then
  mv -T -- "$dest" "$old" || exit 1
fi
if ! mv -T -- "$new" "$dest"; then
  if [ -e "$old" ] || [ -L "$old" ]; then mv -T -- "$old" "$dest"; fi
  exit 1
fi
rm -rf -- "$old" || printf 'warning: the replaced tree %s is left\n' "$old" >&2
exit 0
"""

#: Argument: a staged copy. Removed; once more after a second, should a copy request
#: still in flight on the node have added an entry meanwhile.
DISCARD_SCRIPT = 'rm -rf -- "$1" 2>/dev/null || { sleep 1; rm -rf -- "$1"; }'

_STAGED = re.compile(r"\.[A-Za-z0-9_-]+\.install-[0-9a-f]+")
#: Seconds for one rename or removal on a node.
_SWAP_TIMEOUT = 60.0


def staging_dir(dest: str) -> str:
    """A fresh hidden sibling of ``dest`` to copy a provider into."""
    path = PurePosixPath(dest)
    return str(path.parent / f".{path.name}.install-{secrets.token_hex(4)}")


def _shell_step(node: str, description: str, script: str, *args: str) -> Step:
    return Step(
        node=node,
        description=description,
        command=RemoteCommand(
            argv=("/bin/sh", "-c", script, "sh", *args),
            env={"PATH": DEFAULT_PATH, "LC_ALL": "C"},
            timeout=_SWAP_TIMEOUT,
        ),
    )


class LUExtStorageInstall(LogicalUnit[OpExtStorageInstall]):
    """Copy a provider from the master to nodes, then diagnose it there.

    Ganeti leaves this to the operator. The destination is the first directory of each
    node's search path; the copy keeps file modes. On each node the provider is replaced
    as a whole or not at all: the tree is copied to a hidden sibling (``.NAME.install-*``,
    a name no provider can have, so it is never diagnosed), which then replaces the
    installed directory by two renames (:data:`SWAP_SCRIPT`); the replaced tree is
    removed. Files no longer in the source are gone afterwards, except the node's
    ``node-id`` (its identity for the shipped providers' open markers), which is kept
    unless the source has one. A copy that fails, times out or is
    cancelled is removed and the installed provider stays as it was; after a crash,
    recovery removes the staged copies the journal names, then installs again.
    """

    OPCODE = OpExtStorageInstall

    def __init__(self, op: OpExtStorageInstall, options: Config) -> None:
        super().__init__(op, options)
        #: Per node, the staged copy not swapped in yet (removed if the job is cancelled).
        self._staged: dict[str, str] = {}

    def _name(self) -> str:
        return validate_provider_name(self.op.provider or PurePosixPath(self.op.source).name)

    def _targets(self, config: ClusterConfig) -> list[str]:
        if self.op.nodes:
            return list(self.op.nodes)
        if self.op.group is not None:
            if self.op.group not in config.groups:
                raise NotFoundError(f"node group {self.op.group!r} does not exist", field="group")
            return [n.name for n in config.online_nodes(self.op.group)]
        return [n.name for n in config.online_nodes()]

    def locks(self, config: ClusterConfig) -> list[LockRequest]:
        return [LockRequest.cluster()] + [
            LockRequest.node(n) for n in self._targets(config) if n in config.nodes
        ]

    def check(self, config: ClusterConfig) -> None:
        require_cluster(config)
        self._name()
        source = Path(self.op.source)
        if not source.is_absolute() or not source.is_dir():
            raise InputError(
                f"provider source {self.op.source!r} is not an absolute directory on the master",
                field="source",
            )
        missing = [
            f
            for f in REQUIRED_FILES
            if not (source / f).is_file() or not os.access(source / f, os.X_OK)
        ]
        if missing or not (source / "parameters.list").is_file():
            what = [f"{m} (missing or not executable)" for m in missing]
            if not (source / "parameters.list").is_file():
                what.append("parameters.list (missing)")
            raise InputError(f"{source} is not a valid provider: {', '.join(what)}", field="source")
        targets = self._targets(config)
        if not targets:
            raise PrerequisiteError("no online node to install to")
        for name in targets:
            config.node(name)

    async def exec(self, ctx: StepContext) -> Any:
        cfg = ctx.config
        name = self._name()
        storage = ctx.options.storage
        targets = [cfg.node(n) for n in self._targets(cfg)]
        errors: dict[str, str] = {}
        installed: dict[str, str] = {}

        async def copy(node_name: str, dest: str) -> None:
            staged = self._staged[node_name] = staging_dir(dest)
            try:
                await ctx.put_tree(node_name, self.op.source, staged)
                await ctx.run(
                    _shell_step(
                        node_name, f"replace {dest} with the new copy", SWAP_SCRIPT, staged, dest
                    )
                )
            except ExtJobsError as exc:
                errors[node_name] = exc.message
                await _discard(ctx, node_name, staged)
            else:
                installed[node_name] = dest
            del self._staged[node_name]

        async with anyio.create_task_group() as tg:
            for node in targets:
                dest = str(PurePosixPath(cfg.search_path_for(node, storage.search_path)[0]) / name)
                tg.start_soon(copy, node.name, dest)
        diag = await ctx.run_many(
            [
                Step(
                    node=n,
                    description=f"diagnose {name}",
                    command=diagnose_command(
                        cfg.search_path_for(cfg.node(n), storage.search_path),
                        [name],
                        storage.timeout("diagnose"),
                        path_env=storage.path_env,
                    ),
                )
                for n in sorted(installed)
            ]
        )
        valid: dict[str, bool] = {}
        for node_name, answer in zip(sorted(installed), diag, strict=True):
            if isinstance(answer, ExtJobsError):
                errors[node_name] = answer.message
                continue
            status = parse_diagnose_output(answer.stdout, node=node_name).get(name)
            valid[node_name] = bool(status and status.valid)
            if status is not None and not status.valid:
                errors[node_name] = f"installed but invalid: {status.reason}"
        if errors:
            raise ProviderError(
                f"installing provider {name} failed on "
                + "; ".join(f"{n}: {m}" for n, m in sorted(errors.items())),
                provider=name,
                nodes=sorted(errors),
            )
        ctx.log(f"provider {name} installed on {', '.join(sorted(installed))}")
        return {"provider": name, "installed": installed}

    async def compensate(self, ctx: StepContext) -> None:
        """After a cancel: remove the staged copies; installed providers stay as they were."""
        staged, self._staged = self._staged, {}
        for node_name, path in sorted(staged.items()):
            await _discard(ctx, node_name, path)

    async def recover(self, ctx: StepContext, journal: Journal) -> Recovery:
        """Remove the staged copies the journal names (a copy or a swap the crash cut
        off), then install again."""
        for record in journal:
            payload = record.payload
            if isinstance(payload, TreeCopy) and _STAGED.fullmatch(
                PurePosixPath(payload.destination).name
            ):
                await _discard(ctx, record.node, payload.destination)
        return Recovery(RecoveryAction.RETRY, "install interrupted; installing again")


async def _discard(ctx: StepContext, node: str, staged: str) -> None:
    """Remove a staged copy on ``node``; a failure is logged, never raised."""
    try:
        await ctx.run(_shell_step(node, f"remove the staged copy {staged}", DISCARD_SCRIPT, staged))
    except ExtJobsError as exc:
        ctx.log(
            f"{node}: the staged copy {staged} could not be removed: {exc.message}",
            kind=LogKind.WARNING,
        )
