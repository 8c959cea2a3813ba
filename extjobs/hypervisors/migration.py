"""Live migration over QMP as pure translation: the messages, and what the replies mean.

A kvm migration from S to T (the I/O loop lives in ``extjobs.lus.migrate``)::

    T: qemu … -incoming defer                      (Hypervisor.incoming_command)
    T: migrate-incoming {"uri": "tcp:HOST:PORT"}   PORT 0: qemu picks a free port
    T: query-migrate → socket-address[0].port      the port it really listens on
    S: stop                                        (non-live only: pause first)
    S: migrate {"uri": "tcp:HOST:PORT"}
    S: query-migrate …                             until completed / failed / cancelled
    T: query-status → running                      (non-live: cont first)
    S: the source qemu, now "postmigrate", is stopped

``query-status`` tells the active guest from a migration's leftovers: a target still
waiting (``inmigrate``) or a source whose guest has moved away (``postmigrate``) is not
the guest.
"""

from __future__ import annotations

from typing import Any

import attrs

from extjobs.errors import HypervisorError

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


def migrate_commands(host: str, port: int, *, live: bool) -> list[Command]:
    """On the source: (pause when not live, then) send the guest to ``host:port``."""
    commands: list[Command] = [] if live else [("stop", {})]
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
