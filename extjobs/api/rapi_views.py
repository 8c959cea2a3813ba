"""Jobs, nodes, groups and instances in the shapes of Ganeti's remote API. Pure.

Field names and value shapes follow Ganeti's ``doc/rapi.rst``: timestamps are
``[seconds, microseconds]``, a log entry is ``[serial, timestamp, type, message]``, a
failed opcode's result is Ganeti's encoded exception ``[class, [message, code]]``.
What extjobs has no notion of (NICs, OS, secondary nodes, tags) is there, empty, so
that clients which read those fields keep working; docs/rapi.md lists the differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from extjobs.errors import ExtJobsError
from extjobs.model.cluster import ClusterConfig, Instance, Node, NodeGroup
from extjobs.model.jobs import Job, LogEntry, OpState
from extjobs.model.opcodes import decode_opcode
from extjobs.model.states import OpStatus

#: Fields of ``/2/jobs/ID`` and of ``/2/jobs/ID/wait``'s ``fields``, in Ganeti's order.
JOB_FIELDS = (
    "id",
    "ops",
    "status",
    "summary",
    "opstatus",
    "opresult",
    "oplog",
    "received_ts",
    "start_ts",
    "end_ts",
)

#: Ganeti's error code for each extjobs error kind that fails an opcode's checks; every
#: other kind (node, provider, hypervisor, timeout …) failed while executing.
_PREREQ_CODES = {
    "input": "wrong_input",
    "unknown_opcode": "wrong_input",
    "not_found": "unknown_entity",
    "prerequisite": "wrong_state",
    "state": "wrong_state",
    "illegal_transition": "wrong_state",
}


def timestamp(value: float | None) -> list[int] | None:
    """``[seconds, microseconds]`` as Ganeti sends time, or None."""
    if value is None:
        return None
    micros = round(value * 1_000_000)
    return [micros // 1_000_000, micros % 1_000_000]


#: Opcodes whose result is, in Ganeti, the jobs they submitted (``JobIdListOnly``).
_JOB_LIST_OPS = ("OP_NODE_MIGRATE", "OP_NODE_EVACUATE")


def job_list_result(result: dict[str, Any]) -> dict[str, Any]:
    """A node migrate/evacuate result in Ganeti's shape, ``{"jobs": [[true, ID], …]}``,
    with extjobs' per-instance moves (instance, target, op, job_id) as ``moves``."""
    moves = result.get("jobs") or []
    return {
        **result,
        "jobs": [[True, m.get("job_id")] for m in moves if isinstance(m, dict)],
        "moves": moves,
    }


def op_result(op: OpState) -> Any:
    """An opcode's ``opresult``: its result, or the encoded error Ganeti would give."""
    if op.status is OpStatus.SUCCESS:
        if op.op_id in _JOB_LIST_OPS and isinstance(op.result, dict):
            return job_list_result(op.result)
        return op.result
    if op.status is OpStatus.CANCELED:
        return "Job canceled by request"
    if op.error is None:
        return None
    kind, message = str(op.error.get("kind", "error")), str(op.error.get("message", ""))
    code = _PREREQ_CODES.get(kind)
    if code is not None:
        return ["OpPrereqError", [message, code]]
    return ["OpExecError", [message]]


def op_summary(op: OpState) -> str:
    """``INSTANCE_CREATE(web1)``: Ganeti's opcode summary (its OP_ID without ``OP_``)."""
    try:
        text = decode_opcode(op.input).summary()
    except ExtJobsError:
        text = op.op_id
    return text.removeprefix("OP_")


def reason_trail(job: Job) -> list[list[Any]]:
    """Ganeti's reason trail of each of ``job``'s opcodes: ``[[source, reason,
    nanoseconds]]``, one entry saying who submitted it and why, when it was received.
    The source is the submitter (``rapi:jack``, ``unix:alice``, ``token:ci``), or
    ``extjobs`` for a job that does not know it."""
    return [[job.submitter or "extjobs", job.reason or "", round(job.received * 1e9)]]


def op_input(job: Job, op: OpState) -> dict[str, Any]:
    """An opcode as submitted, with its ``reason`` trail as Ganeti's opcodes carry it."""
    return {**op.input, "reason": reason_trail(job)}


def log_entry(entry: LogEntry) -> list[Any]:
    return [entry.serial, timestamp(entry.timestamp), entry.kind.value, entry.message]


def op_logs(job: Job, entries: Sequence[LogEntry]) -> list[list[list[Any]]]:
    """The log split per opcode: an entry belongs to the opcode whose status change
    came last before it (the first opcode's until another one starts)."""
    out: list[list[list[Any]]] = [[] for _ in job.ops]
    current = 0
    for entry in entries:
        index = (entry.data or {}).get("op")
        if isinstance(index, int) and 0 <= index < len(out):
            current = index
        if out:
            out[current].append(log_entry(entry))
    return out


def job_fields(job: Job, entries: Sequence[LogEntry]) -> dict[str, Any]:
    """Every field of :data:`JOB_FIELDS` for ``job`` with its whole log ``entries``."""
    return {
        "id": job.id,
        "ops": [op_input(job, op) for op in job.ops],
        "status": job.status.value,
        "summary": [op_summary(op) for op in job.ops],
        "opstatus": [op.status.value for op in job.ops],
        "opresult": [op_result(op) for op in job.ops],
        "oplog": op_logs(job, entries),
        "received_ts": timestamp(job.received),
        "start_ts": timestamp(job.started),
        "end_ts": timestamp(job.ended),
    }


def node_view(node: Node, config: ClusterConfig) -> dict[str, Any]:
    primaries = sorted(i.name for i in config.instances.values() if i.primary == node.name)
    role = "O" if node.offline else "D" if node.drained else "R"
    return {
        "name": node.name,
        "offline": node.offline,
        "drained": node.drained,
        "role": role,
        "master_candidate": False,
        "master_capable": False,
        "vm_capable": True,
        "group": node.group,
        "pip": node.host,
        "sip": node.host,
        "pinst_cnt": len(primaries),
        "pinst_list": primaries,
        "sinst_cnt": 0,
        "sinst_list": [],
        "tags": [],
    }


def node_role(node: Node) -> str:
    """Ganeti's role name (``/2/nodes/NAME/role``): extjobs nodes are never master or
    master candidates."""
    return "offline" if node.offline else "drained" if node.drained else "regular"


def group_view(group: NodeGroup, config: ClusterConfig) -> dict[str, Any]:
    members = sorted(n.name for n in config.nodes.values() if n.group == group.name)
    return {
        "name": group.name,
        "node_cnt": len(members),
        "node_list": members,
        "alloc_policy": "preferred",
        "tags": [],
    }


#: The watcher's observed states (docs/watcher.md) in Ganeti's ``status`` words.
_GANETI_STATUS = {"stopped": "ADMIN_down", "unknown": "ERROR_nodedown"}


def instance_status(instance: Instance, observed: dict[str, Any] | None = None) -> str:
    """Ganeti's ``status``: the watcher's last observation when there is one, else from
    the admin state."""
    if instance.cleanup:
        return "ERROR_down"
    if observed is not None:
        state = str(observed["state"])
        return _GANETI_STATUS.get(state, state)
    return "running" if instance.admin_up else "ADMIN_down"


def instance_view(
    instance: Instance, config: ClusterConfig, observed: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Ganeti's instance fields; ``observed``: the watcher's last look at it, if any
    (``oper_state`` is then whether its guest was found running on its primary)."""
    up = instance.admin_up and not instance.cleanup
    if observed is not None and not instance.cleanup:
        up = observed["state"] in ("running", "ERROR_up")
    return {
        "name": instance.name,
        "uuid": instance.uuid,
        "pnode": instance.primary,
        "snodes": [],
        "admin_state": "up" if instance.admin_up else "down",
        "disks_active": instance.disks_active or (instance.admin_up and not instance.cleanup),
        "oper_state": up,
        "status": instance_status(instance, observed),
        "disk_template": "ext",
        "disk.sizes": [d.size for d in instance.disks],
        "disk.names": [d.name for d in instance.disks],
        "disk.uuids": [d.uuid for d in instance.disks],
        "disk.providers": [d.provider for d in instance.disks],
        "disk_usage": sum(d.size for d in instance.disks),
        "hypervisor": instance.hypervisor,
        "beparams": {
            "maxmem": instance.memory,
            "minmem": instance.memory,
            "vcpus": instance.vcpus,
        },
        "hvparams": {},
        "oper_ram": instance.memory if up else None,
        "oper_vcpus": instance.vcpus if up else None,
        "os": None,
        "nic.ips": [],
        "nic.macs": [],
        "nic.modes": [],
        "nic.links": [],
        "network_port": None,
        "tags": [],
    }


def listing(
    items: Sequence[Any],
    kind: str,
    bulk: bool,
    view: Callable[[Any], dict[str, Any]],
    name: Callable[[Any], Any],
) -> list[dict[str, Any]]:
    """Ganeti's list answer: ``[{"id", "uri"}]``, or every item's view with ``bulk``."""
    if bulk:
        return [view(item) for item in items]
    return [{"id": name(item), "uri": f"/2/{kind}/{name(item)}"} for item in items]
