"""Process and port helpers for the node harness (Linux /proc based)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces.
    return data[data.rindex(")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until ``host:port`` accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def wait_group_gone(pgid: int, timeout: float = 10.0) -> list[int]:
    """Wait until process group ``pgid`` has no live member; return those left."""
    deadline = time.monotonic() + timeout
    while (left := process_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def wait_line_in_file(path: Path, timeout: float = 10.0) -> str:
    """Wait until ``path`` holds a complete line; return its content."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and (text := path.read_text()).endswith("\n")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} got no complete line within {timeout}s")
        time.sleep(0.02)
    return text
