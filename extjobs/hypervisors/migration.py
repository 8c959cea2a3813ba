"""Live migration over QMP: the messages, what the replies mean, and the conversation.

A kvm migration from S to T (the steps around it live in ``extjobs.lus.migrate``; the
QMP part is :func:`transfer`, reached through ``KvmHypervisor.transfer_memory``)::

    T: qemu … -incoming defer                      (Hypervisor.incoming_command, a step)
    T: migrate-incoming {"uri": "tcp:HOST:PORT"}   PORT 0: qemu picks a free port
    T: query-migrate → socket-address[0].port      the port it really listens on
    S: migrate-set-parameters {downtime-limit, max-bandwidth}   the settings
    S: stop                                        (non-live only: pause first)
    S: migrate {"uri": "tcp:HOST:PORT"}
    S: query-migrate …                             until completed / failed / cancelled
       — not completed within the converge timeout: S: migrate_cancel, wait until
         qemu says cancelled; the guest keeps running on S (the LU stops T's qemu and
         releases T's disks)
    T: query-status → running                      (non-live: cont first)
    S: the source qemu, now "postmigrate", is stopped   (a step of the LU)

``query-status`` tells the active guest from a migration's leftovers: a target still
waiting (``inmigrate``) or a source whose guest has moved away (``postmigrate``) is not
the guest (:func:`guest_state`, :func:`resume`).

The message builders and parsers are pure. The conversations take the caller's
:class:`~extjobs.hypervisors.link.GuestLink` and do their I/O through it only.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from extjobs.errors import HypervisorError
from extjobs.hypervisors.base import MigrationSettings
from extjobs.hypervisors.link import GuestLink
from extjobs.hypervisors.qmp import QmpSession, open_session
from extjobs.model.jobs import LogKind

#: Longest a memory transfer may take before it is cancelled.
MIGRATE_TIMEOUT = 900.0
#: Between two query-migrate polls; a progress line goes to the job log every
#: PROGRESS_EVERY seconds or 10 percent.
POLL_INTERVAL = 0.1
PROGRESS_EVERY = 2.0
#: How long :func:`guest_state` waits for a cancelled migration to end.
CANCEL_WAIT = 15.0

#: query-migrate states after which nothing more happens.
FINAL_STATES = frozenset({"completed", "failed", "cancelled"})

#: query-status states of a qemu that is not (or no longer, or not yet) the guest.
LEFTOVER_STATES = frozenset({"inmigrate", "postmigrate", "prelaunch", "shutdown"})

MIB = 1024 * 1024

Command = tuple[str, dict[str, Any]]


def tcp_uri(host: str, port: int) -> str:
    """``tcp:HOST:PORT``; an IPv6 address is bracketed."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp:{host}:{port}"


def incoming_commands(host: str, port: int | None) -> list[Command]:
    """On the target: listen on ``host:port`` (any free port when ``None``), then ask
    where it listens."""
    return [("migrate-incoming", {"uri": tcp_uri(host, port or 0)}), ("query-migrate", {})]


def listening_port(query_migrate: Any, *, where: str) -> int:
    """The port of the first listening socket in a target's ``query-migrate`` reply."""
    addresses = query_migrate.get("socket-address") if isinstance(query_migrate, dict) else None
    if isinstance(addresses, list):
        for address in addresses:
            port = address.get("port") if isinstance(address, dict) else None
            if isinstance(port, int | str) and str(port).isdigit() and int(port) > 0:
                return int(port)
    raise HypervisorError(
        f"the migration target on {where} does not say where it listens: "
        f"{str(query_migrate)[:200]}",
    )


def settings_commands(settings: MigrationSettings | None) -> list[Command]:
    """On the source, before ``migrate``: the downtime limit (ms) and bandwidth
    (bytes/s) of the transfer (nothing when ``settings`` is ``None``)."""
    if settings is None:
        return []
    parameters = {
        "downtime-limit": settings.max_downtime,
        "max-bandwidth": settings.bandwidth * MIB,
    }
    return [("migrate-set-parameters", parameters)]


def migrate_commands(
    host: str, port: int, *, live: bool, settings: MigrationSettings | None = None
) -> list[Command]:
    """On the source: the settings, (pause when not live, then) send the guest to
    ``host:port``."""
    commands: list[Command] = settings_commands(settings)
    if not live:
        commands.append(("stop", {}))
    return [*commands, ("migrate", {"uri": tcp_uri(host, port)})]


@attrs.frozen
class Progress:
    """One ``query-migrate`` answer on the source."""

    status: str
    transferred: int = 0
    remaining: int = 0
    total: int = 0
    downtime_ms: int | None = None
    total_ms: int | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def percent(self) -> int:
        """How much of the guest's memory has been sent (0 until qemu knows)."""
        if self.status == "completed":
            return 100
        if self.total <= 0:
            return 0
        return max(0, min(99, round(100 * (self.total - self.remaining) / self.total)))

    def describe(self) -> str:
        if self.status == "completed":
            extra = f", downtime {self.downtime_ms} ms" if self.downtime_ms is not None else ""
            took = f" in {self.total_ms} ms" if self.total_ms is not None else ""
            return f"completed: {self.transferred / MIB:.1f} MiB sent{took}{extra}"
        if self.status == "failed":
            return f"failed: {self.error or 'qemu gave no reason'}"
        return (
            f"{self.status}: {self.percent}% ({self.transferred / MIB:.1f} MiB sent, "
            f"{self.remaining / MIB:.1f} MiB of {self.total / MIB:.1f} MiB left)"
        )


def parse_progress(query_migrate: Any) -> Progress:
    """A source's ``query-migrate`` reply; ``none`` when no migration was started."""
    if not isinstance(query_migrate, dict):
        raise HypervisorError(f"query-migrate answered {str(query_migrate)[:200]}")
    ram = query_migrate.get("ram") if isinstance(query_migrate.get("ram"), dict) else {}
    assert isinstance(ram, dict)

    def number(data: dict[str, Any], key: str) -> int:
        value = data.get(key)
        return value if isinstance(value, int) else 0

    downtime = query_migrate.get("downtime")
    took = query_migrate.get("total-time")
    error = query_migrate.get("error-desc")
    return Progress(
        status=str(query_migrate.get("status", "none")),
        transferred=number(ram, "transferred"),
        remaining=number(ram, "remaining"),
        total=number(ram, "total"),
        downtime_ms=downtime if isinstance(downtime, int) else None,
        total_ms=took if isinstance(took, int) else None,
        error=error if isinstance(error, str) else None,
    )


def run_state(query_status: Any) -> str:
    """The ``status`` of a ``query-status`` reply (``running``, ``paused``, ``inmigrate`` …)."""
    if isinstance(query_status, dict) and isinstance(query_status.get("status"), str):
        return str(query_status["status"])
    raise HypervisorError(f"query-status answered {str(query_status)[:200]}")


def is_leftover(state: str) -> bool:
    """Whether a qemu in ``state`` is a migration's leftover rather than the guest."""
    return state in LEFTOVER_STATES


# -- the conversations -------------------------------------------------------------------


async def transfer(
    link: GuestLink,
    *,
    source: str,
    source_socket: str,
    target: str,
    target_socket: str,
    host: str,
    port: int | None,
    live: bool,
    settings: MigrationSettings | None = None,
) -> Progress:
    """Move the guest's memory from the qemu on ``source`` to the one waiting on
    ``target`` (``-incoming defer``), listening on ``host:port`` (any free port when
    ``None``); returns once the guest runs on the target. Progress goes to the job log.

    Raises :class:`HypervisorError` when qemu refuses, the transfer fails or outlasts
    ``settings.converge_timeout`` (default :data:`MIGRATE_TIMEOUT`; it is cancelled
    then and the guest keeps running on the source), or the target does not run the
    guest afterwards; the node layer's errors for the connections. Cancellable; a
    cancelled transfer may still be under way in qemu (``guest_state`` cancels it).
    """
    async with open_session(link, target, target_socket, description="QMP migrate-incoming") as qt:
        replies = [await qt.execute(c, a) for c, a in incoming_commands(host, port)]
    port = listening_port(replies[-1], where=target)
    link.log(f"{target}: waiting for the guest on {host}:{port}")
    async with open_session(link, source, source_socket, description="QMP migrate") as qs:
        if settings is not None:
            link.log(f"{source}: migration settings: {settings.describe()}")
        for command, arguments in migrate_commands(host, port, live=live, settings=settings):
            await qs.execute(command, arguments)
        limit = settings.converge_timeout if settings is not None else MIGRATE_TIMEOUT
        progress = await _watch(link, source, qs, limit)
    if progress.status != "completed":
        raise HypervisorError(
            f"qemu on {source} reports the migration {progress.describe()}", node=source
        )
    async with open_session(link, target, target_socket, description="QMP query-status") as qt:
        state = run_state(await qt.execute("query-status"))
        if state == "paused" and not live:
            await qt.execute("cont")
            state = run_state(await qt.execute("query-status"))
    if state != "running":
        raise HypervisorError(
            f"the guest on {target} is {state} after the migration, not running", node=target
        )
    link.log(f"{target}: the guest runs (query-status: {state})")
    return progress


async def _watch(link: GuestLink, source: str, qs: QmpSession, limit: float) -> Progress:
    started = time.monotonic()
    logged_at, logged_percent = started, -100
    while True:
        progress = parse_progress(await qs.execute("query-migrate", quiet=True))
        now = time.monotonic()
        if progress.final:
            link.log(f"{source}: migration {progress.describe()}", kind=LogKind.PROGRESS)
            return progress
        if progress.percent >= logged_percent + 10 or now - logged_at >= PROGRESS_EVERY:
            link.log(f"{source}: migration {progress.describe()}", kind=LogKind.PROGRESS)
            logged_at, logged_percent = now, progress.percent
        if now - started > limit:
            await qs.execute("migrate_cancel")
            deadline = time.monotonic() + CANCEL_WAIT
            while not progress.final and time.monotonic() < deadline:
                await link.sleep(POLL_INTERVAL)
                progress = parse_progress(await qs.execute("query-migrate", quiet=True))
            state = run_state(await qs.execute("query-status", quiet=True))
            if state == "paused" and progress.status == "cancelled":
                # A cancel during the switch-over can leave the source paused.
                await qs.execute("cont")
                state = run_state(await qs.execute("query-status", quiet=True))
            link.log(
                f"{source}: the migration did not converge within {limit:g} s and was "
                f"cancelled (migrate_cancel: {progress.status}); the guest is {state} on "
                f"{source}",
                kind=LogKind.WARNING,
            )
            raise HypervisorError(
                f"the migration from {source} did not converge within {limit:g} s "
                f"({progress.describe()}) and was cancelled: the guest keeps running on "
                f"{source}",
                node=source,
            )
        await link.sleep(POLL_INTERVAL)


async def guest_state(link: GuestLink, node: str, socket: str) -> str:
    """qemu's run state on ``node``, after cancelling a migration it is still sending
    (see :func:`is_leftover` for what the state means). Raises HypervisorError."""
    async with open_session(link, node, socket, description="QMP query-status, query-migrate") as s:
        state = run_state(await s.execute("query-status", quiet=True))
        if state == "inmigrate":
            return state
        progress = parse_progress(await s.execute("query-migrate", quiet=True))
        if progress.status not in FINAL_STATES and progress.status != "none":
            await s.execute("migrate_cancel")
            deadline = time.monotonic() + CANCEL_WAIT
            while not progress.final and time.monotonic() < deadline:
                await link.sleep(0.1)
                progress = parse_progress(await s.execute("query-migrate", quiet=True))
            link.log(f"{node}: migration under way was cancelled: {progress.describe()}")
            state = run_state(await s.execute("query-status", quiet=True))
    return state


async def resume(link: GuestLink, node: str, socket: str) -> None:
    """Continue a guest paused on ``node`` (a non-live migration paused it)."""
    async with open_session(link, node, socket, description="QMP cont") as s:
        await s.execute("cont")
