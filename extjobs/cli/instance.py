"""``extjobs instance …``: instances whose disks live on external storage.

Disk options use Ganeti's syntax: ``--disk 0:size=2G,provider=NAME,param=value``. The
keys ``size`` (required; ``M``, ``G`` or ``T`` suffix, MiB without one), ``provider``,
``pool``, ``name`` and ``access`` are the disk's own fields; every other key is a
provider parameter (``EXTP_<KEY>``). Indexes run 0, 1, … without gaps.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from extjobs.cli import output
from extjobs.cli.common import (
    Ctx,
    fail,
    finish,
    output_option,
    pass_ctx,
    run_opcode,
    submit_option,
)
from extjobs.model.opcodes import (
    AUTO_FAILOVER_CHOICES,
    HYPERVISOR_NAMES,
    DiskModification,
    DiskSpec,
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
    OpInstanceSetAutoRepair,
    OpInstanceSetParams,
    OpInstanceShutdown,
    OpInstanceSnapshot,
    OpInstanceStartup,
    encode_opcode,
)

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([mgt]?)(?:i?b)?", re.IGNORECASE)
_FACTOR = {"": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_DISK_FIELDS = ("size", "provider", "pool", "name", "access")
F = TypeVar("F", bound=Callable[..., Any])
#: The only disk template: every disk lives on external storage (``-t ext`` is accepted
#: so that Ganeti command lines work unchanged).
DISK_TEMPLATE = "ext"


def check_disk_template(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """Accept ``ext`` (or nothing); refuse every other Ganeti template, naming it."""
    if value is not None and value != DISK_TEMPLATE:
        raise click.BadParameter(
            f"disk template {value!r} does not exist here: only 'ext' exists (every disk "
            "lives on external storage through an ExtStorage provider)",
            param_hint="'-t' / '--disk-template'",
        )


def parse_size(text: str) -> int:
    """A size in MiB from ``512``, ``512M``, ``2G``, ``1.5G``, ``1T`` (rounded up).

    Raises :class:`click.BadParameter` for anything else or for less than 1 MiB.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a size (use e.g. 512M, 2G or 1T)")
    mib = math.ceil(float(match.group(1)) * _FACTOR[match.group(2).lower()])
    if mib < 1:
        raise click.BadParameter(f"{text!r} is less than 1 MiB")
    return mib


def parse_disk(text: str) -> tuple[int, dict[str, Any]]:
    """``INDEX:key=value,...`` → ``(index, DiskSpec fields)``; raises click.BadParameter."""
    index_text, sep, rest = text.partition(":")
    if not sep or not index_text.strip().isdigit():
        raise click.BadParameter(f"{text!r}: expected INDEX:size=SIZE,provider=NAME[,key=value...]")
    spec: dict[str, Any] = {}
    params: dict[str, str] = {}
    for item in rest.split(","):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise click.BadParameter(f"{text!r}: {item!r} is not key=value")
        target = spec if key in _DISK_FIELDS else params
        if key in target:
            raise click.BadParameter(f"{text!r}: {key} is given twice")
        target[key] = value
    if "size" not in spec:
        raise click.BadParameter(f"{text!r}: size= is required")
    spec["size"] = parse_size(spec["size"])
    if "provider" not in spec and "pool" not in spec:
        raise click.BadParameter(f"{text!r}: give provider= or pool=")
    spec["params"] = params
    return int(index_text), spec


def disk_specs(values: tuple[str, ...]) -> list[dict[str, Any]]:
    """All ``--disk`` options, in index order; indexes must be 0..n-1."""
    disks: dict[int, dict[str, Any]] = {}
    for value in values:
        index, spec = parse_disk(value)
        if index in disks:
            raise click.BadParameter(f"disk {index} is given twice", param_hint="--disk")
        disks[index] = spec
    if sorted(disks) != list(range(len(disks))):
        raise click.BadParameter(
            f"disk indexes must be 0..{len(disks) - 1} without gaps, not "
            f"{', '.join(map(str, sorted(disks)))}",
            param_hint="--disk",
        )
    return [disks[i] for i in range(len(disks))]


def _disk_spec(spec: dict[str, Any]) -> DiskSpec:
    """The model's DiskSpec for one parsed ``--disk``; raises InputError naming what is
    wrong (a bad provider name, access mode or parameter name)."""
    return DiskSpec(
        size=spec["size"],
        provider=spec.get("provider"),
        pool=spec.get("pool"),
        name=spec.get("name"),
        params=spec["params"],
        access=spec.get("access", "kernelspace"),
    )


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _disk_text(disk: dict[str, Any]) -> str:
    where = f"pool {disk['pool']}" if disk.get("pool") else disk["provider"]
    name = f" {disk['name']}" if disk.get("name") else ""
    return f"{disk['index']}{name}:{disk['size']}M@{where}"


# -- instance -------------------------------------------------------------------------------


@click.group()
def instance() -> None:
    """Instances whose disks live on external storage."""


@instance.command("add")
@click.argument("name")
@click.option("--node", "-n", "node", help="Primary node (default: chosen; the job log says why).")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    required=True,
    metavar="N:size=SIZE,provider=P,k=v",
    help="A disk (repeatable): size, provider or pool, optional name, access, parameters.",
)
@click.option(
    "--hypervisor", "-H", type=click.Choice(HYPERVISOR_NAMES), default="fake", show_default=True
)
@click.option("--memory", default="64M", show_default=True, help="Guest memory (M/G suffix).")
@click.option("--vcpus", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--no-start", is_flag=True, help="Create the disks but do not start the guest.")
@click.option(
    "--disk-template",
    "-t",
    "disk_template",
    metavar="ext",
    callback=check_disk_template,
    expose_value=False,
    help="Accepted for Ganeti compatibility: 'ext' is the only template.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Go on where the provider reports too little space or the node too little memory.",
)
@submit_option
@pass_ctx
def instance_add(
    ctx: Ctx,
    name: str,
    node: str | None,
    disks: tuple[str, ...],
    hypervisor: str,
    memory: str,
    vcpus: int,
    no_start: bool,
    force: bool,
    submit_only: bool,
) -> None:
    """Create an instance's disks on external storage and start it on NODE."""
    specs = disk_specs(disks)
    mib = parse_size(memory)
    op = OpInstanceCreate(
        instance_name=name,
        pnode=node,
        disks=tuple(_disk_spec(spec) for spec in specs),
        hypervisor=hypervisor,
        memory=mib,
        vcpus=vcpus,
        start=not no_start,
        force=force,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        for disk in result["disks"]:
            click.echo(
                f"disk{disk['index']}: {disk['volume']} {disk['size']} MiB "
                f"({disk['provider']}{', pool ' + disk['pool'] if disk['pool'] else ''})"
            )
        state = f"running (pid {result['pid']})" if result["started"] else "not started"
        click.echo(f"instance {name} added on {result['primary']}, {state}")


@instance.command("remove")
@click.argument("name")
@click.option(
    "--shutdown-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the guest to stop before killing it.",
)
@submit_option
@pass_ctx
def instance_remove(ctx: Ctx, name: str, shutdown_timeout: float, submit_only: bool) -> None:
    """Stop an instance and remove its disks (failed disks are kept for cleanup)."""
    op = OpInstanceRemove(instance_name=name, shutdown_timeout=shutdown_timeout)
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"instance {name} removed")


@instance.command("startup")
@click.argument("name")
@submit_option
@pass_ctx
def instance_startup(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Attach and open the disks on the primary node and start the guest."""
    job = run_opcode(ctx, OpInstanceStartup(instance_name=name), submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        click.echo(f"instance {name} running on {result['node']} (pid {result['pid']})")


@instance.command("shutdown")
@click.argument("name")
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the guest to stop before killing it.",
)
@submit_option
@pass_ctx
def instance_shutdown(ctx: Ctx, name: str, timeout: float, submit_only: bool) -> None:
    """Stop the guest, then close and detach its disks."""
    op = OpInstanceShutdown(instance_name=name, timeout=timeout)
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"instance {name} stopped")


@instance.command("rename")
@click.argument("name")
@click.argument("new_name")
@submit_option
@pass_ctx
def instance_rename(ctx: Ctx, name: str, new_name: str, submit_only: bool) -> None:
    """Rename an instance (its disks' metadata follows)."""
    op = OpInstanceRename(instance_name=name, new_name=new_name)
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"instance {name} renamed to {new_name}")


@instance.command("grow-disk")
@click.argument("name")
@click.argument("disk")
@click.argument("amount")
@click.option("--absolute", is_flag=True, help="AMOUNT is the new size, not the growth.")
@submit_option
@pass_ctx
def instance_grow_disk(
    ctx: Ctx, name: str, disk: str, amount: str, absolute: bool, submit_only: bool
) -> None:
    """Grow DISK (its index or name) of NAME by AMOUNT such as 1G; to AMOUNT with
    --absolute."""
    try:
        mib = parse_size(amount)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="AMOUNT") from None
    ref: int | str = int(disk) if disk.isdigit() else disk
    op = OpInstanceGrowDisk(instance_name=name, disk=ref, amount=mib, absolute=absolute)
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        seen = (
            f"; the guest sees {result['guest_size']} bytes"
            if result.get("guest_size") is not None
            else ""
        )
        click.echo(f"disk {disk} of {name}: {result['old_size']} → {result['new_size']} MiB{seen}")


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def observed_text(observed: dict[str, Any] | None) -> str:
    """The watcher's observation of an instance, with its age (``-``: none yet)."""
    if not observed:
        return "-"
    return f"{observed['state']} ({_age(observed['age'])} ago)"


refresh_option = click.option(
    "--refresh",
    "refresh",
    is_flag=True,
    help="Wait for a fresh observation of the nodes (at most --refresh-timeout seconds).",
)
refresh_timeout_option = click.option(
    "--refresh-timeout",
    type=click.FloatRange(min=0, max=60),
    default=10.0,
    show_default=True,
    help="Seconds --refresh waits; the last observation is shown after that.",
)


def _stale_note(refreshed: bool | None, timeout: float) -> None:
    if refreshed is False:
        output.err_console.print(
            f"note: no fresh observation within {timeout:g}s (a node is slow, or this "
            "master does not lead); showing the last one"
        )


@instance.command("list")
@output_option
@refresh_option
@refresh_timeout_option
@pass_ctx
def instance_list(ctx: Ctx, fmt: str, refresh: bool, refresh_timeout: float) -> None:
    """List instances: configured state and, as the watcher last saw it, observed state."""
    with ctx.client() as client:
        if refresh:
            body = client.request(
                "GET",
                "/v1/instances",
                params={"refresh": "1", "timeout": str(refresh_timeout)},
                patience=refresh_timeout,
            )
            instances, refreshed = body["instances"], body.get("refreshed")
        else:
            instances, refreshed = client.instances(), None
    if fmt == "json":
        output.emit_json(instances)
        return
    _stale_note(refreshed, refresh_timeout)
    output.table(
        None,
        ["Instance", "Primary", "Hypervisor", "Memory", "VCPUs", "State", "Observed", "Disks"],
        [
            (
                i["name"],
                i["primary"],
                i["hypervisor"],
                f"{i['memory']}M",
                i["vcpus"],
                i["state"],
                observed_text(i.get("observed")),
                " ".join(_disk_text(d) for d in i["disks"]),
            )
            for i in instances
        ],
    )


@instance.command("info")
@click.argument("name")
@output_option
@refresh_option
@refresh_timeout_option
@pass_ctx
def instance_info(ctx: Ctx, name: str, fmt: str, refresh: bool, refresh_timeout: float) -> None:
    """Show one instance, its disks, and what the watcher last observed."""
    with ctx.client() as client:
        data = client.instance(name, refresh=refresh_timeout if refresh else None)
    if fmt == "json":
        output.emit_json(data)
        return
    _stale_note(data.get("refreshed"), refresh_timeout)
    say = output.say
    say(f" ({data['uuid']}): {data['state']}", title=f"Instance {data['name']}")
    observed = data.get("observed")
    say(f"  observed: {observed_text(observed)}")
    if observed and observed.get("running_on"):
        say(f"    guest runs on {', '.join(observed['running_on'])}")
    if observed and observed.get("message"):
        say(f"    watcher: {observed['message']}")
    failover = data.get("auto_failover")
    say(
        f"  auto-repair: restart {'yes' if data.get('auto_restart', True) else 'no'}, "
        f"failover {'group' if failover is None else ('yes' if failover else 'no')}"
    )
    if data.get("disks_active") and data["state"] != "up":
        say(f"  disks activated on {data['primary']} (instance deactivate-disks releases them)")
    say(
        f"  primary node {data['primary']} (group {data['group']}), "
        f"hypervisor {data['hypervisor']}, {data['memory']} MiB, {data['vcpus']} vcpu(s)"
    )
    for disk in data["disks"]:
        params = ",".join(f"{k}={v}" for k, v in sorted(disk["params"].items()))
        say(
            f"  disk {disk['index']}{' ' + disk['name'] if disk['name'] else ''}: "
            f"{disk['size']} MiB, provider {disk['provider']}"
            f"{', pool ' + disk['pool'] if disk['pool'] else ''}, {disk['access']}, "
            f"volume {disk['volume']}{', ' + params if params else ''}"
        )
        if disk["needs_cleanup"]:
            say(f"    needs cleanup: {disk['needs_cleanup']}")
    for disk in data.get("detached_disks", []):
        say(
            f"  detached disk {disk['index']}{' ' + disk['name'] if disk['name'] else ''}: "
            f"{disk['size']} MiB, provider {disk['provider']}, volume {disk['volume']} "
            f"(re-attach with --disk {disk['index']}:attach)"
        )
    for snap in data.get("snapshots", []):
        say(
            f"  snapshot {snap['name']} of disk {snap['disk']}: {snap['size']} MiB, "
            f"taken {_when(snap['created'])}, I/O {snap['frozen_by']}"
        )


# -- moving instances -------------------------------------------------------------

#: ``--force``, also spelt as Ganeti spells it: move to a node without the memory.
force_option = click.option(
    "--force",
    "--ignore-ipolicy",
    "force",
    is_flag=True,
    help="Move even to a node without the free memory for the instance.",
)


def migration_options(func: F) -> F:
    """``--max-downtime``, ``--bandwidth`` and ``--converge-timeout`` (defaults: the
    daemon's ``[migration]`` section)."""
    for option in reversed(
        [
            click.option(
                "--max-downtime",
                type=click.IntRange(min=1),
                metavar="MS",
                help="Longest pause of the guest at the switch-over, in ms "
                "(default: the group's, the cluster's, else [migration] max_downtime).",
            ),
            click.option(
                "--bandwidth",
                type=click.IntRange(min=1),
                metavar="MIB_PER_S",
                help="Bandwidth of the memory transfer (default: group, cluster, [migration]).",
            ),
            click.option(
                "--converge-timeout",
                type=click.FloatRange(min=0, min_open=True),
                metavar="SECONDS",
                help="Cancel a transfer that has not completed by then; the guest stays "
                "on the source (default: group, cluster, [migration]).",
            ),
        ]
    ):
        func = option(func)
    return func


@instance.command("migrate")
@click.argument("name")
@click.option("--target", "-n", "target", metavar="NODE", help="Target node (default: chosen).")
@click.option("--non-live", is_flag=True, help="Pause the guest while its memory moves.")
@click.option(
    "--cleanup",
    is_flag=True,
    help="After a failed migration: find where the guest runs, fix the configuration, "
    "detach the disks everywhere else.",
)
@click.option(
    "--allow-failover",
    is_flag=True,
    help="Fail over instead when the guest does not run or its primary is offline.",
)
@click.option(
    "--migration-port",
    type=click.IntRange(1, 65535),
    help="TCP port the target listens on (default: any free port).",
)
@force_option
@migration_options
@submit_option
@pass_ctx
def instance_migrate(
    ctx: Ctx,
    name: str,
    target: str | None,
    non_live: bool,
    cleanup: bool,
    allow_failover: bool,
    migration_port: int | None,
    force: bool,
    max_downtime: int | None,
    bandwidth: int | None,
    converge_timeout: float | None,
    submit_only: bool,
) -> None:
    """Move a running instance to another node of its group without stopping it."""
    settings = (max_downtime, bandwidth, converge_timeout)
    if cleanup and (
        target or non_live or allow_failover or migration_port or force or any(settings)
    ):
        raise click.UsageError("--cleanup takes no other option")
    op = OpInstanceMigrate(
        instance_name=name,
        target_node=target,
        mode="non-live" if non_live else "live",
        cleanup=cleanup,
        allow_failover=allow_failover,
        migration_port=migration_port,
        force=force,
        max_downtime=max_downtime,
        bandwidth=bandwidth,
        converge_timeout=converge_timeout,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if not job:
        return
    result = job["ops"][0]["result"]
    if cleanup:
        state = "runs" if result["running"] else "does not run; its primary is"
        click.echo(f"instance {name} {state} on {result['primary']}")
    elif result.get("mode") == "failover":
        click.echo(f"instance {name} failed over from {result['source']} to {result['target']}")
    else:
        click.echo(
            f"instance {name} migrated from {result['source']} to {result['target']} "
            f"(max downtime {result['max_downtime']} ms, bandwidth {result['bandwidth']} MiB/s)"
        )


@instance.command("failover")
@click.argument("name")
@click.option("--target", "-n", "target", metavar="NODE", help="Target node (default: chosen).")
@click.option(
    "--ignore-consistency",
    is_flag=True,
    help="Go on when the primary cannot be reached or released (it is fenced first).",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the guest to stop before killing it.",
)
@force_option
@submit_option
@pass_ctx
def instance_failover(
    ctx: Ctx,
    name: str,
    target: str | None,
    ignore_consistency: bool,
    shutdown_timeout: float,
    force: bool,
    submit_only: bool,
) -> None:
    """Stop an instance on its primary and start it on another node of its group."""
    op = OpInstanceFailover(
        instance_name=name,
        target_node=target,
        ignore_consistency=ignore_consistency,
        shutdown_timeout=shutdown_timeout,
        force=force,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        state = f"running (pid {result['pid']})" if result["started"] else "down"
        click.echo(
            f"instance {name} failed over from {result['source']} to {result['target']}, {state}"
        )


@instance.command("change-group")
@click.argument("name")
@click.argument("group")
@click.option("--target", "-n", "target", metavar="NODE", help="Target node (default: chosen).")
@force_option
@submit_option
@pass_ctx
def instance_change_group(
    ctx: Ctx, name: str, group: str, target: str | None, force: bool, submit_only: bool
) -> None:
    """Move an instance to a node of node group GROUP (a running one live-migrates).

    Refused unless every disk's pool is connected to GROUP and its provider valid there."""
    op = OpInstanceChangeGroup(
        instance_name=name, group_name=group, target_node=target, force=force
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        how = "moved (stopped)" if result.get("mode") == "stopped" else "migrated"
        click.echo(
            f"instance {name} {how} from {result['source']} to {result['target']} (group {group})"
        )


@instance.command("reboot")
@click.argument("name")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds the guest gets to power down (ACPI) before it is stopped hard.",
)
@click.option("--hard", is_flag=True, help="Stop and start the guest without asking it first.")
@submit_option
@pass_ctx
def instance_reboot(ctx: Ctx, name: str, timeout: float, hard: bool, submit_only: bool) -> None:
    """Reboot a running instance on its primary: soft (ACPI power-down), then hard."""
    op = OpInstanceReboot(instance_name=name, timeout=timeout, hard=hard)
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        click.echo(
            f"instance {name} rebooted on {result['node']} ({result['method']}), "
            f"pid {result['pid']}"
        )


@instance.command("activate-disks")
@click.argument("name")
@submit_option
@pass_ctx
def instance_activate_disks(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Attach and open the disks on the primary without starting the guest; print the
    device paths (for repairs on the node)."""
    job = run_opcode(ctx, OpInstanceActivateDisks(instance_name=name), submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        for disk in result["disks"]:
            click.echo(f"{result['node']}:disk{disk['index']}:{disk['path']}")


@instance.command("deactivate-disks")
@click.argument("name")
@submit_option
@pass_ctx
def instance_deactivate_disks(ctx: Ctx, name: str, submit_only: bool) -> None:
    """Close and detach the disks on the primary (refused while the guest runs)."""
    op = OpInstanceDeactivateDisks(instance_name=name)
    if run_opcode(ctx, op, submit_only=submit_only):
        click.echo(f"instance {name}: disks deactivated")


@instance.command("auto-repair")
@click.argument("name")
@click.option(
    "--restart",
    type=click.Choice(["yes", "no"]),
    help="Whether the watcher restarts the instance when its guest is found down.",
)
@click.option(
    "--failover",
    type=click.Choice(["yes", "no", "group"]),
    help="Whether the watcher fails it over from a dead node once the node is fenced "
    "(group: as its node group says).",
)
@submit_option
@pass_ctx
def instance_auto_repair(
    ctx: Ctx, name: str, restart: str | None, failover: str | None, submit_only: bool
) -> None:
    """What the watcher may do for an instance (OP_INSTANCE_SET_AUTO_REPAIR)."""
    if restart is None and failover is None:
        fail("nothing to change: give --restart or --failover", 2)
    op = OpInstanceSetAutoRepair(
        instance_name=name,
        auto_restart=None if restart is None else restart == "yes",
        auto_failover=failover,
    )
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        r = job["ops"][0]["result"]
        click.echo(
            f"instance {name}: auto-restart {'yes' if r['auto_restart'] else 'no'}, "
            f"auto-failover {r['auto_failover']} "
            f"({'on' if r['auto_failover_effective'] else 'off'})"
        )


# -- changing an instance, snapshots ---------------------------------------------------

_DISK_CHANGE_HELP = (
    "A disk change (repeatable, one job): add:size=SIZE,provider=P|pool=X[,name=N][,k=v], "
    "N:remove, N:detach, N:attach (N: a disk's index or name), "
    "attach:from=INSTANCE,disk=N[,name=NEWNAME] (a detached disk of another instance)."
)


def _parse_attach_from(text: str, rest: str) -> DiskModification:
    """``attach:from=INSTANCE,disk=N|NAME[,name=NEWNAME]`` → a DiskModification."""
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in ("from", "disk", "name") or key in fields:
            raise click.BadParameter(
                f"{text!r}: expected attach:from=INSTANCE,disk=N|NAME[,name=NEWNAME]"
                + (f" ({key!r} given twice)" if key in fields else ""),
                param_hint="--disk",
            )
        fields[key] = value.strip()
    missing = [k for k in ("from", "disk") if not fields.get(k)]
    if missing:
        raise click.BadParameter(
            f"{text!r}: attach of another instance's disk needs {' and '.join(missing)}=",
            param_hint="--disk",
        )
    return DiskModification(
        action="attach",
        disk=fields["disk"],
        source_instance=fields["from"],
        new_name=fields.get("name") or None,
    )


def parse_disk_change(text: str) -> DiskModification:
    """``add:size=…`` or ``N:remove|detach|attach`` → the opcode's DiskModification;
    raises click.BadParameter."""
    head, sep, rest = text.partition(":")
    if not sep:
        raise click.BadParameter(
            f"{text!r}: expected add:size=SIZE,provider=P[,...] or INDEX:remove|detach|attach",
            param_hint="--disk",
        )
    if head == "add":
        _, spec = parse_disk(f"0:{rest}")
        return DiskModification(action="add", spec=_disk_spec(spec))
    if head == "attach":
        return _parse_attach_from(text, rest)
    action = rest.strip()
    if action == "add":
        raise click.BadParameter(
            f"{text!r}: a new disk gets the next free index; use add:size=SIZE,…",
            param_hint="--disk",
        )
    if action not in ("remove", "detach", "attach"):
        raise click.BadParameter(
            f"{text!r}: {action!r} is not remove, detach or attach", param_hint="--disk"
        )
    return DiskModification(action=action, disk=head.strip())


def _yes_no(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


@instance.command("modify")
@click.argument("name")
@click.option("--disk", "disks", multiple=True, metavar="CHANGE", help=_DISK_CHANGE_HELP)
@click.option("--memory", help="Guest memory (M/G suffix); used at the next start.")
@click.option("--vcpus", type=click.IntRange(min=1), help="Virtual CPUs; used at the next start.")
@click.option("--auto-restart", type=click.Choice(["yes", "no"]), help="Watcher restarts it.")
@click.option(
    "--auto-failover",
    type=click.Choice(AUTO_FAILOVER_CHOICES),
    help="Watcher fails it over from a dead, fenced node (group: as its node group says).",
)
@click.option("--force", is_flag=True, help="Add a disk even where the provider reports no room.")
@click.option(
    "--unplug-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds a running guest gets to release a disk being removed or detached.",
)
@submit_option
@pass_ctx
def instance_modify(
    ctx: Ctx,
    name: str,
    disks: tuple[str, ...],
    memory: str | None,
    vcpus: int | None,
    auto_restart: str | None,
    auto_failover: str | None,
    force: bool,
    unplug_timeout: float,
    submit_only: bool,
) -> None:
    """Change an instance: add, remove, detach or attach disks (hot-plugged while it
    runs), memory and vcpus (at the next start), the watcher's flags."""
    changes = [parse_disk_change(text) for text in disks]
    plain: dict[str, Any] = {
        "memory": parse_size(memory) if memory is not None else None,
        "vcpus": vcpus,
        "auto_restart": _yes_no(auto_restart),
        "auto_failover": auto_failover,
    }
    if not changes and all(v is None for v in plain.values()):
        raise click.UsageError(
            "nothing to change: give --disk, --memory, --vcpus, --auto-restart or --auto-failover"
        )
    common: dict[str, Any] = {
        "instance_name": name,
        "force": force,
        "unplug_timeout": unplug_timeout,
    }
    ops = [OpInstanceSetParams(**common, disk=change) for change in changes]
    if any(v is not None for v in plain.values()):
        ops.append(OpInstanceSetParams(**common, **plain))
    with ctx.client() as client:
        job_id = client.submit_ops([encode_opcode(op) for op in ops])
        if submit_only:
            click.echo(job_id)
            return
        output.say(f"job {job_id} submitted", err=True)
        job = finish(client, job_id)
    for op_data in job["ops"]:
        result = op_data["result"]
        disk = result.get("disk")
        if disk is not None:
            label = f"disk {disk['index']}{' (' + disk['name'] + ')' if disk['name'] else ''}"
            action = result.get("action")
            done = {
                "add": "added",
                "remove": "removed",
                "detach": "detached (kept; re-attach with --disk N:attach)",
                "attach": "attached",
            }.get(action or "", "changed")
            where = (
                "hot-plugged into the running guest"
                if result.get("hotplugged") and action in ("add", "attach")
                else "hot-unplugged from the running guest"
                if result.get("hotplugged")
                else "the instance is stopped: used at its next start"
                if action in ("add", "attach")
                else "the instance is stopped"
            )
            if result.get("source"):
                done = f"attached from {result['source']} (volume {disk['volume']})"
            click.echo(f"{name}: {label} {done}, {disk['size']} MiB; {where}")
        for field in result.get("changed", []):
            click.echo(f"{name}: {field} changed")
        later = result.get("next_start") or []
        if later:
            click.echo(f"{name}: {' and '.join(later)} take effect at the next start")


@instance.command("snapshot")
@click.argument("name")
@click.option("--name", "snapshot", required=True, help="The snapshot's name.")
@click.option("--disk", "disk", help="Only this disk (index or name); default: every disk.")
@submit_option
@pass_ctx
def instance_snapshot(
    ctx: Ctx, name: str, snapshot: str, disk: str | None, submit_only: bool
) -> None:
    """Snapshot an instance's disks through their provider, the guest's I/O frozen."""
    op = OpInstanceSnapshot(instance_name=name, snapshot_name=snapshot, disk=disk)
    job = run_opcode(ctx, op, submit_only=submit_only)
    if job:
        result = job["ops"][0]["result"]
        how = {
            "fsfreeze": "file systems frozen by the guest agent",
            "pause": "guest paused (no guest agent answered)",
            "none": "not frozen: the guest does not run or has no control socket",
        }.get(result["frozen_by"], result["frozen_by"])
        disks = ", ".join(str(d["index"]) for d in result["disks"])
        click.echo(f"snapshot {snapshot} of {name} taken (disk(s) {disks}; {how})")
