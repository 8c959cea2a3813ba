"""Ganeti's RAPI ``status``/``oper_state`` of an instance follow the watcher's last
observation when there is one, and the admin state otherwise."""

from __future__ import annotations

import pytest

from extjobs.api.rapi_views import instance_view
from extjobs.model.cluster import ClusterConfig, Instance

CFG = ClusterConfig()


@pytest.mark.parametrize(
    ("admin_up", "observed", "status", "oper"),
    [
        pytest.param(True, None, "running", True, id="no-observation-up"),
        pytest.param(False, None, "ADMIN_down", False, id="no-observation-down"),
        pytest.param(True, "running", "running", True, id="running"),
        pytest.param(True, "ERROR_down", "ERROR_down", False, id="found-down"),
        pytest.param(False, "stopped", "ADMIN_down", False, id="stopped"),
        pytest.param(False, "ERROR_up", "ERROR_up", True, id="runs-while-down"),
        pytest.param(True, "unknown", "ERROR_nodedown", False, id="node-silent"),
        pytest.param(True, "ERROR_nodeoffline", "ERROR_nodeoffline", False, id="offline"),
    ],
)
def test_status_follows_the_observation(
    admin_up: bool, observed: str | None, status: str, oper: bool
) -> None:
    inst = Instance(name="web", primary="node1", admin_up=admin_up)
    seen = None if observed is None else {"state": observed}
    view = instance_view(inst, CFG, seen)
    assert view["status"] == status
    assert view["oper_state"] is oper
    assert view["admin_state"] == ("up" if admin_up else "down")
