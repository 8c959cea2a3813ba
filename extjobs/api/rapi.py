"""Ganeti's remote API, version 2 (``/2/…``), on top of the same queue as ``/v1``.

Tools written for Ganeti's RAPI (its Python client, web front ends, scripts) drive
extjobs through this listener. Each request is translated into the queue calls the
``/v1`` API makes; nothing here decides anything. A mutation submits one job and answers
its id, as Ganeti does; ``dry-run`` checks the request against the current cluster
configuration and submits nothing.

Errors have Ganeti's shape ``{"code", "message", "explain"}``: 400 for a bad request,
404 for an unknown job or object, 501 for what extjobs does not implement, 503 when the
queue is full or the store refuses writes, 500 only for a bug. docs/rapi.md lists every
resource and each difference from Ganeti.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import extjobs
from extjobs.api import rapi_views as views
from extjobs.api.rapi_users import ganeti_error
from extjobs.api.views import JSONResponse, http_status
from extjobs.engine.standby import QueueView
from extjobs.errors import (
    ExtJobsError,
    InputError,
    StateError,
)
from extjobs.lus import LU_FOR
from extjobs.model.config import Config
from extjobs.model.jobs import check_reason
from extjobs.model.opcodes import (
    HYPERVISOR_NAMES,
    DiskSpec,
    OpCode,
    OpInstanceActivateDisks,
    OpInstanceChangeGroup,
    OpInstanceCreate,
    OpInstanceDeactivateDisks,
    OpInstanceFailover,
    OpInstanceGrowDisk,
    OpInstanceMigrate,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceRename,
    OpInstanceShutdown,
    OpInstanceStartup,
    OpNodeEvacuate,
    OpNodeMigrate,
    OpNodeSetParams,
)
from extjobs.model.requests import JobRequest, check_strings

log = logging.getLogger("extjobs.api.rapi")

MAX_BODY = 1 << 20
#: Ganeti's feature strings: its client sends node migrate and evacuate requests as
#: bodies (not the query arguments of Ganeti 2.4) only when the server lists them.
FEATURES = ("instance-create-reqv1", "node-migrate-reqv1", "node-evac-res1")
#: Ganeti's reboot types (``type=`` query argument; Ganeti's default is ``hard``).
REBOOT_TYPES = ("soft", "hard", "full")
#: Ganeti's node evacuation modes. extjobs instances have no secondary node, so
#: ``primary-only`` and ``all`` move the same instances.
EVAC_MODES = ("primary-only", "all")
#: Ganeti's node roles that ``/2/nodes/NAME/role`` can set here.
NODE_ROLES = ("regular", "drained", "offline")
#: Version 1 instance-creation fields extjobs accepts but has nothing to do with, when
#: they carry the value that means "nothing" (or any value, for pure hints).
_IGNORED_CREATE: dict[str, Any] = {
    "os": None,
    "os_type": None,
    "osparams": {},
    "hvparams": {},
    "nics": [],
    "tags": [],
    "snode": None,
    "iallocator": None,
    "ip_check": None,
    "name_check": None,
    "no_install": None,
    "conflicts_check": None,
    "wait_for_sync": None,
    "opportunistic_locking": None,
}
_ANY = None


class HttpError(Exception):
    """An answer other than 200, with Ganeti's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


Handler = Callable[[Request], Awaitable[Any]]
T = TypeVar("T")


def _endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
        except HttpError as exc:
            return ganeti_error(exc.status, exc.message)
        except ExtJobsError as exc:
            return ganeti_error(http_status(exc), exc.message)
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.url.path)
            return ganeti_error(500, "internal error; see the daemon log")

    return wrapped


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object of the request body (``{}`` when there is none)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise HttpError(413, f"request body exceeds {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"Unable to parse JSON data: {exc}") from None
    except RecursionError:
        # json's decoder recurses once per nested array or object.
        raise bad_request("Unable to parse JSON data: nested too deeply") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request("Invalid body contents, not a dictionary")
    try:
        # No lone surrogate, NUL or over-long text reaches a job (it could be neither
        # stored nor shown nor passed to a node).
        check_strings(body, "body")
    except InputError as exc:
        raise bad_request(exc.message) from None
    return body


def _flag(request: Request, name: str) -> bool:
    """A Ganeti boolean query parameter: absent or ``0`` false, ``1`` true."""
    raw = request.query_params.get(name)
    if raw is None or raw in ("0", ""):
        return False
    if raw == "1":
        return True
    raise bad_request(f"Invalid value for query parameter '{name}': {raw!r}, use 0 or 1")


def _unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(
            f"Invalid body parameters: unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """``body[name]`` if it is of ``kind`` (400 otherwise), ``default`` if it is absent."""
    if name not in body:
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds
    if wrong_bool or not isinstance(value, kinds):
        what = " or ".join(k.__name__ for k in kinds)
        raise bad_request(f"Invalid body parameters: {name} must be {what}, not {value!r}")
    return value


def _opcode(build: Callable[[], T]) -> T:
    """The opcode ``build`` makes; its validation errors become 400s."""
    try:
        return build()
    except ExtJobsError as exc:
        raise bad_request(f"Invalid body parameters: {exc.message}") from None
    except TypeError as exc:
        raise bad_request(f"Invalid body parameters: {exc}") from None


def _create_opcode(body: dict[str, Any]) -> OpInstanceCreate:
    """An instance-creation request of format version 1 as an opcode (400 otherwise)."""
    if "__version__" not in body:
        raise bad_request("Required parameter '__version__' is missing")
    version = body["__version__"]
    if version == 0 and not isinstance(version, bool):
        raise bad_request("Instance creation request version 0 is no longer supported")
    if version != 1 or isinstance(version, bool):
        raise bad_request(f"Unsupported request data version {version!r}")
    supported = {"__version__", "mode", "instance_name", "disk_template", "disks", "pnode"}
    supported |= {"beparams", "hypervisor", "start"}
    _unknown(body, supported | set(_IGNORED_CREATE))
    for name, nothing in _IGNORED_CREATE.items():
        if nothing is not _ANY and name in body and body[name] not in (nothing, None):
            raise bad_request(
                f"Invalid body parameters: {name} is not supported by extjobs "
                f"(give {json.dumps(nothing)} or leave it out)"
            )
    for name in ("mode", "instance_name", "disk_template", "disks"):
        if name not in body:
            raise bad_request(f"Required parameter '{name}' is missing")
    mode = body["mode"]
    if mode != "create":
        raise bad_request(f"Instance creation mode {mode!r} is not supported; use 'create'")
    template = body["disk_template"]
    if template != "ext":
        raise bad_request(
            f"Disk template {template!r} does not exist here: only 'ext' exists "
            "(extjobs only manages external storage)"
        )
    disks = _typed(body, "disks", list, None)
    beparams = _typed(body, "beparams", dict, {})
    _unknown_be = sorted(set(beparams) - {"memory", "maxmem", "minmem", "vcpus", "auto_balance"})
    if _unknown_be:
        raise bad_request(f"Invalid body parameters: unknown beparams {', '.join(_unknown_be)}")
    memory = beparams.get("maxmem", beparams.get("memory", 64))
    if beparams.get("minmem", memory) != memory:
        raise bad_request("Invalid body parameters: extjobs needs minmem equal to maxmem")
    specs = tuple(_disk_spec(i, d) for i, d in enumerate(disks))
    hypervisor = _typed(body, "hypervisor", str, HYPERVISOR_NAMES[0])
    start = _typed(body, "start", bool, True)
    return _opcode(
        lambda: OpInstanceCreate(
            instance_name=_typed(body, "instance_name", str, None),
            pnode=_typed(body, "pnode", str, None),
            disks=specs,
            hypervisor=hypervisor,
            memory=_int(memory, "beparams.maxmem"),
            vcpus=_int(beparams.get("vcpus", 1), "beparams.vcpus"),
            start=start,
        )
    )


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"Invalid body parameters: {name} must be an integer, not {value!r}")
    return value


def _disk_spec(index: int, disk: Any) -> DiskSpec:
    """One disk of a creation request: ``size`` (MiB), ``provider`` or ``pool``, ``name``,
    ``mode`` (``rw`` only), ``access``, and every other key an ExtStorage parameter."""
    where = f"disks[{index}]"
    if not isinstance(disk, dict):
        raise bad_request(f"Invalid body parameters: {where} must be a dictionary")
    if "size" not in disk:
        raise bad_request(f"Invalid body parameters: {where} has no size")
    if disk.get("mode", "rw") != "rw":
        raise bad_request(f"Invalid body parameters: {where}.mode must be 'rw'")
    own = {"size", "provider", "pool", "name", "access", "mode"}
    params = {k: v for k, v in disk.items() if k not in own}
    for key, value in params.items():
        if not isinstance(value, str):
            raise bad_request(
                f"Invalid body parameters: {where}.{key} is an ExtStorage parameter and "
                f"must be a string, not {value!r}"
            )
    for key in ("provider", "pool", "name", "access"):
        if key in disk and not isinstance(disk[key], str):
            raise bad_request(f"Invalid body parameters: {where}.{key} must be a string")
    return _opcode(
        lambda: DiskSpec(
            size=_int(disk["size"], f"{where}.size"),
            provider=disk.get("provider"),
            pool=disk.get("pool"),
            name=disk.get("name"),
            params=params,
            access=disk.get("access", "kernelspace"),
        )
    )


def _migration_mode(body: dict[str, Any]) -> str:
    """Ganeti's ``mode`` (``live``/``non-live``) or its older boolean ``live``."""
    if "mode" in body and "live" in body:
        raise bad_request("Only one of 'live' and 'mode' should be passed")
    if "live" in body:
        return "live" if _typed(body, "live", bool, True) else "non-live"
    return str(_typed(body, "mode", str, "live"))


def _no_iallocator(body: dict[str, Any], what: str) -> None:
    if body.get("iallocator") is not None:
        raise bad_request(
            f"iallocator is not supported; give {what} or nothing (extjobs' own placement chooses)"
        )


def _ignored_bools(body: dict[str, Any], *names: str) -> None:
    """Ganeti flags with nothing to do here: accepted when they are booleans."""
    for flag in names:
        _typed(body, flag, bool, False)


async def _body_string(request: Request) -> str:
    """A body that is one JSON string, as Ganeti's ``/role`` takes (400 otherwise)."""
    data = await request.body()
    if len(data) > MAX_BODY:
        raise HttpError(413, f"request body exceeds {MAX_BODY} bytes")
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise bad_request(f"Unable to parse JSON data: {exc}") from None
    if not isinstance(value, str):
        raise bad_request('Invalid body contents, not a string (give the role, e.g. "drained")')
    try:
        check_strings(value, "body")
    except InputError as exc:
        raise bad_request(exc.message) from None
    return value


def build_rapi_app(queue: QueueView, options: Config) -> Starlette:
    """The ASGI application of the remote API for ``queue`` (authentication is the
    :class:`~extjobs.api.rapi_users.BasicAuth` middleware's)."""
    wait_timeout = options.rapi.wait_timeout if options.rapi is not None else 10.0

    async def submit(request: Request, op: OpCode) -> int | None:
        """Submit ``op`` as one job and answer its id; with ``dry-run`` only check it
        against the current configuration and answer None."""
        try:
            reason = check_reason(request.query_params.get("reason"))
        except ExtJobsError as exc:
            raise bad_request(exc.message) from None
        if _flag(request, "dry-run"):
            try:
                LU_FOR[type(op)](op, options).check(queue.config)
            except ExtJobsError as exc:
                raise bad_request(exc.message) from None
            return None
        user = request.scope.get("state", {}).get("rapi_user")
        job = JobRequest(ops=(op,), submitter=f"rapi:{user}" if user else None, reason=reason)
        (job_id,) = queue.submit([job])
        # Answered once the job is in the store: an id given out is never lost.
        await queue.flush()
        return job_id

    @_endpoint
    async def version(request: Request) -> Any:
        return 2

    @_endpoint
    async def info(request: Request) -> Any:
        cfg = queue.config
        return {
            "name": cfg.cluster.name if cfg.cluster else None,
            "software_version": f"extjobs {extjobs.__version__}",
            "protocol_version": 2,
            "enabled_hypervisors": list(HYPERVISOR_NAMES),
            "default_hypervisor": HYPERVISOR_NAMES[0],
            "enabled_disk_templates": ["ext"],
            "default_iallocator": None,
            "tags": [],
        }

    @_endpoint
    async def features(request: Request) -> Any:
        return list(FEATURES)

    @_endpoint
    async def os_list(request: Request) -> Any:
        return []

    @_endpoint
    async def nodes(request: Request) -> Any:
        cfg = queue.config
        items = [n for _, n in sorted(cfg.nodes.items())]
        return views.listing(
            items, "nodes", _flag(request, "bulk"), lambda n: views.node_view(n, cfg), _name
        )

    @_endpoint
    async def node(request: Request) -> Any:
        cfg = queue.config
        return views.node_view(cfg.node(request.path_params["name"]), cfg)

    @_endpoint
    async def groups(request: Request) -> Any:
        cfg = queue.config
        items = [g for _, g in sorted(cfg.groups.items())]
        return views.listing(
            items, "groups", _flag(request, "bulk"), lambda g: views.group_view(g, cfg), _name
        )

    @_endpoint
    async def group(request: Request) -> Any:
        cfg = queue.config
        return views.group_view(cfg.group(request.path_params["name"]), cfg)

    @_endpoint
    async def instances(request: Request) -> Any:
        cfg = queue.config
        observed = queue.observed()
        items = [i for _, i in sorted(cfg.instances.items())]
        return views.listing(
            items,
            "instances",
            _flag(request, "bulk"),
            lambda i: views.instance_view(i, cfg, observed.get(i.name)),
            _name,
        )

    @_endpoint
    async def instance(request: Request) -> Any:
        cfg = queue.config
        inst = cfg.instance(request.path_params["name"])
        return views.instance_view(inst, cfg, queue.observed().get(inst.name))

    @_endpoint
    async def create_instance(request: Request) -> Any:
        return await submit(request, _create_opcode(await _body(request)))

    def _instance_name(request: Request) -> str:
        return str(request.path_params["name"])

    @_endpoint
    async def remove_instance(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, set())
        name = _instance_name(request)
        return await submit(request, _opcode(lambda: OpInstanceRemove(instance_name=name)))

    @_endpoint
    async def startup(request: Request) -> Any:
        if _flag(request, "no_remember"):
            raise bad_request("no_remember is not supported: extjobs always records the state")
        _flag(request, "force")
        _unknown(await _body(request), set())
        name = _instance_name(request)
        return await submit(request, _opcode(lambda: OpInstanceStartup(instance_name=name)))

    @_endpoint
    async def shutdown(request: Request) -> Any:
        if _flag(request, "no_remember"):
            raise bad_request("no_remember is not supported: extjobs always records the state")
        body = await _body(request)
        _unknown(body, {"timeout"})
        timeout = _typed(body, "timeout", (int, float), 30.0)
        name = _instance_name(request)
        return await submit(
            request, _opcode(lambda: OpInstanceShutdown(instance_name=name, timeout=timeout))
        )

    @_endpoint
    async def grow_disk(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, {"amount", "absolute", "wait_for_sync"})
        if "amount" not in body:
            raise bad_request("Required parameter 'amount' is missing")
        amount = _int(body["amount"], "amount")
        absolute = _typed(body, "absolute", bool, False)
        name, disk = _instance_name(request), int(request.path_params["disk"])
        return await submit(
            request,
            _opcode(
                lambda: OpInstanceGrowDisk(
                    instance_name=name, disk=disk, amount=amount, absolute=absolute
                )
            ),
        )

    @_endpoint
    async def migrate(request: Request) -> Any:
        body = await _body(request)
        allowed = {"mode", "live", "cleanup", "target_node", "allow_failover", "iallocator"}
        _unknown(body, allowed | {"ignore_ipolicy", "allow_runtime_changes", "ignore_hvversions"})
        if body.get("iallocator") is not None:
            raise bad_request("iallocator is not supported; give target_node or nothing")
        ignore_ipolicy = _typed(body, "ignore_ipolicy", bool, False)
        # Memory is never changed at run time here, and both ends run the same qemu
        # checks whatever the versions: the two flags are accepted as booleans.
        _ignored_bools(body, "allow_runtime_changes", "ignore_hvversions")
        mode = _migration_mode(body)
        cleanup = _typed(body, "cleanup", bool, False)
        target = _typed(body, "target_node", (str, type(None)), None)
        allow_failover = _typed(body, "allow_failover", bool, False)
        name = _instance_name(request)
        return await submit(
            request,
            _opcode(
                lambda: OpInstanceMigrate(
                    instance_name=name,
                    target_node=target,
                    mode=mode,
                    cleanup=cleanup,
                    allow_failover=allow_failover,
                    force=ignore_ipolicy,
                )
            ),
        )

    @_endpoint
    async def failover(request: Request) -> Any:
        body = await _body(request)
        allowed = {"iallocator", "ignore_consistency", "target_node", "shutdown_timeout"}
        _unknown(body, allowed | {"ignore_ipolicy"})
        if body.get("iallocator") is not None:
            raise bad_request("iallocator is not supported; give target_node or nothing")
        ignore = _typed(body, "ignore_consistency", bool, False)
        ignore_ipolicy = _typed(body, "ignore_ipolicy", bool, False)
        target = _typed(body, "target_node", (str, type(None)), None)
        timeout = _typed(body, "shutdown_timeout", (int, float), 30.0)
        name = _instance_name(request)
        return await submit(
            request,
            _opcode(
                lambda: OpInstanceFailover(
                    instance_name=name,
                    target_node=target,
                    ignore_consistency=ignore,
                    shutdown_timeout=timeout,
                    force=ignore_ipolicy,
                )
            ),
        )

    @_endpoint
    async def rename(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, {"new_name", "ip_check", "name_check"})
        if "new_name" not in body:
            raise bad_request("Required parameter 'new_name' is missing")
        new_name = _typed(body, "new_name", str, None)
        # Ganeti resolves and pings the new name; extjobs manages no addresses, so the
        # checks are accepted (as booleans) and have nothing to do.
        _typed(body, "ip_check", bool, True)
        _typed(body, "name_check", bool, True)
        name = _instance_name(request)
        return await submit(
            request, _opcode(lambda: OpInstanceRename(instance_name=name, new_name=new_name))
        )

    @_endpoint
    async def modify(request: Request) -> Any:
        raise HttpError(
            501,
            f"{request.method} {request.url.path} is not implemented by extjobs: it has no "
            "opcode that modifies an instance (disks, NICs, parameters) yet; grow a disk "
            "with POST /2/instances/NAME/disk/N/grow",
        )

    @_endpoint
    async def reboot(request: Request) -> Any:
        kind = request.query_params.get("type", "hard")
        if kind not in REBOOT_TYPES:
            raise bad_request(
                f"Invalid value for query parameter 'type': {kind[:40]!r}, use {', '.join(REBOOT_TYPES)}"
            )
        # No secondary nodes: ignore_secondaries has nothing to ignore.
        _flag(request, "ignore_secondaries")
        body = await _body(request)
        _unknown(body, {"shutdown_timeout", "ignore_secondaries"})
        _ignored_bools(body, "ignore_secondaries")
        timeout = _typed(body, "shutdown_timeout", (int, float), None)
        name = _instance_name(request)
        # soft: ask the guest to power down (stopped hard after shutdown_timeout), start
        # it again; hard and full: stop the guest process and start a new one (extjobs
        # always starts a guest from the configuration, which is what full adds).
        hard = kind != "soft"
        return await submit(
            request,
            _opcode(
                lambda: (
                    OpInstanceReboot(instance_name=name, hard=hard)
                    if timeout is None
                    else OpInstanceReboot(instance_name=name, hard=hard, timeout=timeout)
                )
            ),
        )

    @_endpoint
    async def activate_disks(request: Request) -> Any:
        # ignore_size: extjobs never refuses an activation over a recorded size.
        _flag(request, "ignore_size")
        body = await _body(request)
        _unknown(body, {"ignore_size", "wait_for_sync"})
        _ignored_bools(body, "ignore_size", "wait_for_sync")
        name = _instance_name(request)
        return await submit(request, _opcode(lambda: OpInstanceActivateDisks(instance_name=name)))

    @_endpoint
    async def deactivate_disks(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, {"force"})
        if _flag(request, "force") or _typed(body, "force", bool, False):
            raise bad_request(
                "force is not supported: extjobs never deactivates the disks of a running "
                "guest; shut the instance down first"
            )
        name = _instance_name(request)
        return await submit(request, _opcode(lambda: OpInstanceDeactivateDisks(instance_name=name)))

    @_endpoint
    async def change_group(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, {"target_groups", "iallocator", "early_release"})
        # Ganeti always places through an iallocator; extjobs' built-in placement is
        # that allocator, so any name (or none) is accepted.
        _typed(body, "iallocator", (str, type(None)), None)
        _ignored_bools(body, "early_release")
        groups = _typed(body, "target_groups", (list, type(None)), None)
        if not groups:
            raise bad_request(
                "Required parameter 'target_groups' is missing: extjobs moves an instance "
                "to the one group given (['GROUP'])"
            )
        if len(groups) != 1 or not isinstance(groups[0], str):
            raise bad_request(
                "Invalid body parameters: target_groups must list exactly one group name, "
                f"not {groups!r}"
            )
        name, group = _instance_name(request), groups[0]
        return await submit(
            request,
            _opcode(lambda: OpInstanceChangeGroup(instance_name=name, group_name=group)),
        )

    def _node_name(request: Request) -> str:
        return str(request.path_params["name"])

    @_endpoint
    async def node_migrate(request: Request) -> Any:
        body = await _body(request)
        query = request.query_params
        if "mode" in query or "live" in query:
            # Ganeti 2.4's query arguments, which its server still takes.
            if body:
                raise bad_request("give the migration mode as query arguments or a body, not both")
            if "mode" in query and "live" in query:
                raise bad_request("Only one of 'live' and 'mode' should be passed")
            if "live" in query:
                body = {"mode": "live" if _flag(request, "live") else "non-live"}
            else:
                body = {"mode": query["mode"]}
        allowed = {"mode", "live", "target_node", "iallocator", "allow_runtime_changes"}
        _unknown(body, allowed | {"ignore_ipolicy"})
        _no_iallocator(body, "target_node")
        _ignored_bools(body, "allow_runtime_changes")
        if _typed(body, "ignore_ipolicy", bool, False):
            raise bad_request(
                "ignore_ipolicy is not supported by node migrate: move the instance that "
                "does not fit with PUT /2/instances/NAME/migrate and ignore_ipolicy"
            )
        mode = _migration_mode(body)
        target = _typed(body, "target_node", (str, type(None)), None)
        name = _node_name(request)
        return await submit(
            request,
            _opcode(lambda: OpNodeMigrate(node_name=name, target_node=target, mode=mode)),
        )

    @_endpoint
    async def node_evacuate(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, {"mode", "remote_node", "iallocator", "early_release"})
        _no_iallocator(body, "remote_node")
        _ignored_bools(body, "early_release")
        if "mode" not in body:
            raise bad_request(
                f"Required parameter 'mode' is missing; use {' or '.join(EVAC_MODES)}"
            )
        mode = body["mode"]
        if mode == "secondary-only":
            raise bad_request(
                "Evacuation mode 'secondary-only' has nothing to move: extjobs instances "
                "have no secondary node; use primary-only or all"
            )
        if mode not in EVAC_MODES:
            raise bad_request(
                f"Invalid body parameters: invalid evacuation mode {mode!r}; use "
                f"{' or '.join(EVAC_MODES)}"
            )
        target = _typed(body, "remote_node", (str, type(None)), None)
        name = _node_name(request)
        return await submit(
            request, _opcode(lambda: OpNodeEvacuate(node_name=name, target_node=target))
        )

    @_endpoint
    async def node_modify(request: Request) -> Any:
        body = await _body(request)
        _unknown(body, {"offline", "drained", "master_candidate", "force", "auto_promote"})
        _ignored_bools(body, "force", "auto_promote")
        if _typed(body, "master_candidate", (bool, type(None)), None):
            raise bad_request(
                "master_candidate is not supported: extjobs nodes are never master "
                "candidates (the master is the daemon, not a node)"
            )
        offline = _typed(body, "offline", (bool, type(None)), None)
        drained = _typed(body, "drained", (bool, type(None)), None)
        name = _node_name(request)
        return await submit(
            request,
            _opcode(lambda: OpNodeSetParams(node_name=name, offline=offline, drained=drained)),
        )

    @_endpoint
    async def node_role(request: Request) -> Any:
        return views.node_role(queue.config.node(_node_name(request)))

    @_endpoint
    async def set_node_role(request: Request) -> Any:
        _flag(request, "force")
        _flag(request, "auto-promote")
        role = await _body_string(request)
        if role not in NODE_ROLES:
            raise bad_request(
                f"Can't set {role!r} role: extjobs nodes take {', '.join(NODE_ROLES)}"
            )
        offline = role == "offline" if role != "drained" else None
        drained = role == "drained" if role != "offline" else None
        name = _node_name(request)
        return await submit(
            request,
            _opcode(lambda: OpNodeSetParams(node_name=name, offline=offline, drained=drained)),
        )

    def _job_id(request: Request) -> int:
        raw = str(request.path_params["job_id"])
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) == 0:
            raise HttpError(404, f"Job {raw[:40]!r} not found")
        return int(raw)

    @_endpoint
    async def jobs(request: Request) -> Any:
        if not _flag(request, "bulk"):
            return [{"id": j.id, "uri": f"/2/jobs/{j.id}"} for j in queue.list_jobs()]
        return [views.job_fields(j, queue.log_since(j.id, 0)) for j in queue.list_jobs()]

    @_endpoint
    async def job(request: Request) -> Any:
        job_id = _job_id(request)
        return views.job_fields(queue.get(job_id), queue.log_since(job_id, 0))

    @_endpoint
    async def cancel_job(request: Request) -> Any:
        job_id = _job_id(request)
        try:
            queue.cancel(job_id)
        except StateError as exc:
            return [False, exc.message]
        await queue.flush()
        return [True, f"Job {job_id} will be canceled"]

    @_endpoint
    async def wait_job(request: Request) -> Any:
        job_id = _job_id(request)
        body = await _body(request)
        _unknown(body, {"fields", "previous_job_info", "previous_log_serial"})
        fields = body.get("fields")
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise bad_request("Required parameter 'fields' is missing or not a list of names")
        unknown = [f for f in fields if f not in views.JOB_FIELDS]
        if unknown:
            raise bad_request(f"Unknown job field(s): {', '.join(unknown)}")
        previous = body.get("previous_job_info")
        if previous is not None and not isinstance(previous, list):
            raise bad_request("previous_job_info must be a list or null")
        serial = body.get("previous_log_serial")
        if serial is None:
            serial = 0
        if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0:
            raise bad_request("previous_log_serial must be a whole number or null")
        return await _wait(job_id, fields, previous, serial)

    async def _wait(
        job_id: int, fields: list[str], previous: list[Any] | None, serial: int
    ) -> dict[str, Any] | None:
        """Ganeti's wait: answer at once when the job ended, its ``fields`` differ from
        ``previous`` or it logged past ``serial``; else when one of those happens, or
        None after the wait timeout."""
        deadline = time.monotonic() + wait_timeout
        while True:
            job = queue.get(job_id)
            entries = queue.log_since(job_id, 0)
            info = views.job_fields(job, entries)
            current = [info[f] for f in fields]
            # The whole log went into oplog; JSON-normalise before comparing with what
            # the client sent back (tuples and lists must compare equal).
            current = json.loads(json.dumps(current))
            new = [views.log_entry(e) for e in entries if e.serial > serial]
            if job.status.finalized or current != previous or new:
                return {"job_info": current, "log_entries": json.loads(json.dumps(new))}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await queue.wait_for_change(job_id, serial, remaining)

    async def not_implemented(request: Request) -> Response:
        return ganeti_error(
            501,
            f"{request.method} {request.url.path} is not implemented by extjobs "
            "(docs/rapi.md lists the supported resources)",
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return ganeti_error(404, f"no such resource: {request.url.path}")

    async def bad_method(request: Request, exc: Exception) -> Response:
        return await not_implemented(request)

    routes = [
        Route("/version", version, methods=["GET"]),
        Route("/2/info", info, methods=["GET"]),
        Route("/2/features", features, methods=["GET"]),
        Route("/2/os", os_list, methods=["GET"]),
        Route("/2/nodes", nodes, methods=["GET"]),
        Route("/2/nodes/{name}", node, methods=["GET"]),
        Route("/2/groups", groups, methods=["GET"]),
        Route("/2/groups/{name}", group, methods=["GET"]),
        Route("/2/instances", instances, methods=["GET"]),
        Route("/2/instances", create_instance, methods=["POST"]),
        Route("/2/instances/{name}", instance, methods=["GET"]),
        Route("/2/instances/{name}", remove_instance, methods=["DELETE"]),
        Route("/2/instances/{name}/startup", startup, methods=["PUT"]),
        Route("/2/instances/{name}/shutdown", shutdown, methods=["PUT"]),
        Route("/2/instances/{name}/disk/{disk:int}/grow", grow_disk, methods=["POST"]),
        Route("/2/instances/{name}/migrate", migrate, methods=["PUT"]),
        Route("/2/instances/{name}/failover", failover, methods=["PUT"]),
        Route("/2/instances/{name}/rename", rename, methods=["PUT"]),
        Route("/2/instances/{name}/modify", modify, methods=["PUT"]),
        Route("/2/instances/{name}/reboot", reboot, methods=["POST"]),
        Route("/2/instances/{name}/activate-disks", activate_disks, methods=["PUT"]),
        Route("/2/instances/{name}/deactivate-disks", deactivate_disks, methods=["PUT"]),
        Route("/2/instances/{name}/change-group", change_group, methods=["PUT"]),
        Route("/2/nodes/{name}/migrate", node_migrate, methods=["POST"]),
        Route("/2/nodes/{name}/evacuate", node_evacuate, methods=["POST"]),
        Route("/2/nodes/{name}/modify", node_modify, methods=["POST"]),
        Route("/2/nodes/{name}/role", node_role, methods=["GET"]),
        Route("/2/nodes/{name}/role", set_node_role, methods=["PUT"]),
        Route("/2/jobs", jobs, methods=["GET"]),
        Route("/2/jobs/{job_id}", job, methods=["GET"]),
        Route("/2/jobs/{job_id}", cancel_job, methods=["DELETE"]),
        Route("/2/jobs/{job_id}/wait", wait_job, methods=["GET"]),
        Route(
            "/2/{rest:path}",
            not_implemented,
            methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
        ),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method})


def _name(item: Any) -> str:
    return str(item.name)
