"""Waiting for the event a test means rather than for a while: a remote command's process
appearing (every test node runs on this machine, so ``/proc`` shows it), or going away.

Commands to look for carry a marker no other test uses (``sleep 271.5``), so that a
process of a test run beside this one is never taken for ours.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def processes_with_cmdline(needle: str) -> list[int]:
    """Every process whose command line (arguments joined by spaces) contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if needle.encode() in cmdline:
            found.append(int(entry))
    return found


def wait_processes(needle: str, timeout: float = 30.0) -> list[int]:
    """The processes whose command line contains ``needle``, once there is one; raises
    TimeoutError if none appears within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := processes_with_cmdline(needle)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no process '{needle}' appeared within {timeout}s")
        time.sleep(0.02)
    return found


def wait_gone(pids: list[int], needle: str, timeout: float = 30.0) -> list[int]:
    """Wait until none of ``pids`` runs ``needle`` any more; those that still do."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in processes_with_cmdline(needle) if p in pids]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    return left
