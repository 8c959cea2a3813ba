"""Hypervisors as pure translation: instance + disks → the commands that run a guest.

Nothing here does I/O. A hypervisor turns an instance, the paths of its attached disks
and a per-node run directory into :class:`~extjobs.model.remote.RemoteCommand` objects
(start, stop, status), parses what they print, and builds QMP messages.

- :mod:`.base` — the :class:`~.base.Hypervisor` interface, run directories, status
- :mod:`.process` — the shell scripts shared by every backend: pid files, liveness, stop
- :mod:`.fake` — a process per instance holding its disks open (tests, the demo)
- :mod:`.kvm` — ``qemu-system-x86_64`` command lines
- :mod:`.qmp` — QMP messages: encoding commands, splitting and checking replies

:func:`get_hypervisor` is the registry from name to backend.
"""

from __future__ import annotations

from extjobs.errors import InputError
from extjobs.hypervisors.base import Hypervisor
from extjobs.hypervisors.fake import FakeHypervisor
from extjobs.hypervisors.kvm import KvmHypervisor

HYPERVISORS: dict[str, Hypervisor] = {
    FakeHypervisor.name: FakeHypervisor(),
    KvmHypervisor.name: KvmHypervisor(),
}


def get_hypervisor(name: str) -> Hypervisor:
    """The backend called ``name``; raises :class:`InputError` listing the known ones."""
    try:
        return HYPERVISORS[name]
    except KeyError:
        raise InputError(
            f"unknown hypervisor {name!r}; use {', '.join(sorted(HYPERVISORS))}",
            field="hypervisor",
        ) from None


__all__ = ["HYPERVISORS", "Hypervisor", "get_hypervisor"]
