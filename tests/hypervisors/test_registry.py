"""One list of hypervisor names: the enum, from which the registry and the opcode
validator derive; per-backend limits are attributes of the backends."""

from __future__ import annotations

import pytest

from extjobs.errors import InputError
from extjobs.hypervisors import HYPERVISORS, get_hypervisor
from extjobs.hypervisors.fake import MAX_DISKS
from extjobs.model.cluster import HypervisorName
from extjobs.model.opcodes import HYPERVISOR_NAMES, DiskSpec, OpInstanceCreate


def test_the_registry_has_one_backend_per_enum_member() -> None:
    assert list(HYPERVISORS) == list(HypervisorName)
    for name, backend in HYPERVISORS.items():
        assert backend.name is name


def test_stored_names_stay_plain_strings() -> None:
    assert HYPERVISOR_NAMES == ("fake", "kvm")
    for value in HYPERVISOR_NAMES:
        assert get_hypervisor(value) is HYPERVISORS[HypervisorName(value)]


def test_the_opcode_validator_takes_every_registered_backend() -> None:
    disks = (DiskSpec(size=1, provider="p"),)
    for name in HypervisorName:
        op = OpInstanceCreate(instance_name="i", pnode="n", disks=disks, hypervisor=name.value)
        assert get_hypervisor(op.hypervisor).name is name
    with pytest.raises(InputError, match="unknown hypervisor 'xen'; use fake, kvm"):
        OpInstanceCreate(instance_name="i", pnode="n", disks=disks, hypervisor="xen")


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown hypervisor 'xen'; use fake, kvm"):
        get_hypervisor("xen")


def test_disk_limits_are_backend_attributes() -> None:
    fake, kvm = get_hypervisor("fake"), get_hypervisor("kvm")
    fake.check_instance(disks=MAX_DISKS)
    with pytest.raises(InputError, match=f"the fake hypervisor holds at most {MAX_DISKS} disks"):
        fake.check_instance(disks=MAX_DISKS + 1)
    kvm.check_instance(disks=MAX_DISKS + 1)
