"""Hypervisors as pure translation: instance + disks → the commands that run a guest.

Nothing here does I/O. A hypervisor turns an instance, the paths of its attached disks
and a per-node run directory into :class:`~extjobs.model.remote.RemoteCommand` objects
(start, stop, status), parses what they print, and builds QMP messages.

- :mod:`.base` — the :class:`~.base.Hypervisor` interface, run directories, status
- :mod:`.process` — the shell scripts shared by every backend: pid files, liveness, stop
- :mod:`.fake` — a process per instance holding its disks open (tests, the demo)
- :mod:`.kvm` — ``qemu-system-x86_64`` command lines
- :mod:`.qmp` — QMP messages: encoding commands, splitting and checking replies

:data:`HYPERVISORS` is the registry from :class:`~extjobs.model.cluster.HypervisorName`
to backend, one entry per member; :func:`get_hypervisor` looks a stored name up in it.
"""

from __future__ import annotations

from extjobs.errors import InputError
from extjobs.hypervisors.base import Hypervisor
from extjobs.hypervisors.fake import FakeHypervisor
from extjobs.hypervisors.kvm import KvmHypervisor
from extjobs.model.cluster import HypervisorName

HYPERVISORS: dict[HypervisorName, Hypervisor] = {
    HypervisorName.FAKE: FakeHypervisor(),
    HypervisorName.KVM: KvmHypervisor(),
}


def get_hypervisor(name: str | HypervisorName) -> Hypervisor:
    """The backend called ``name`` (a stored value such as ``"kvm"``, or the member);
    raises :class:`InputError` listing the known ones."""
    try:
        return HYPERVISORS[HypervisorName(name)]
    except (KeyError, ValueError):
        raise InputError(
            f"unknown hypervisor {name!r}; use {', '.join(h.value for h in HYPERVISORS)}",
            field="hypervisor",
        ) from None


__all__ = ["HYPERVISORS", "Hypervisor", "get_hypervisor"]
