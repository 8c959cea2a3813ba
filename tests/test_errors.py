"""The error tree's one behaviour beyond fields: restating an error keeps its cause."""

from __future__ import annotations

import pytest

from extjobs.errors import ExtJobsError, NodeUnreachableError


def test_restated_keeps_type_fields_and_the_original_as_cause() -> None:
    low = OSError("connection refused")
    original = NodeUnreachableError("node1 is unreachable", node="node1")
    original.__cause__ = low
    again = original.restated()
    reworded = original.restated("migration failed: node1 is unreachable")
    for twin in (again, reworded):
        assert type(twin) is NodeUnreachableError
        assert twin is not original
        assert twin.fields == {"node": "node1"}
        assert twin.__cause__ is original
        assert original.__cause__ is low
    assert again.message == "node1 is unreachable"
    assert reworded.to_dict() == {
        "kind": "node_unreachable",
        "message": "migration failed: node1 is unreachable",
        "node": "node1",
    }


def test_a_restated_error_raises_with_its_chain() -> None:
    original = ExtJobsError("first", step=3)
    with pytest.raises(ExtJobsError, match=r"^second$") as info:
        raise original.restated("second")
    assert info.value.__cause__ is original
