"""Node add: the login check's timeout is a setting; one host and port is one node."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from extjobs.errors import ConfigError
from extjobs.model.config import load_config
from extjobs.model.opcodes import OpGroupAdd, OpNodeAdd
from extjobs.testing import open_test_cluster
from extjobs.testing.cluster import engine_options
from tests.lus.scenario import error, ok


async def test_the_login_check_runs_with_the_configured_timeout(tmp_path: Path) -> None:
    options = engine_options(tmp_path / "state")
    options = attrs.evolve(options, ssh=attrs.evolve(options.ssh, login_timeout=7.5))
    async with open_test_cluster(2, config=options) as cluster:
        job = await cluster.run(OpNodeAdd(node_name="node9", accept_new_host_key=True))
        assert ok(job), error(job)
        (login,) = cluster.runner.select(node="node9", argv="^uname -n$")
        assert login.command is not None
        assert login.command.timeout == 7.5


def test_login_timeout_is_read_from_the_ssh_section(tmp_path: Path) -> None:
    path = tmp_path / "extjobs.toml"
    path.write_text("[ssh]\nlogin_timeout = 12.5\n")
    assert load_config(path).ssh.login_timeout == 12.5
    assert load_config(None).ssh.login_timeout == 60.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "true"])
def test_a_login_timeout_that_is_not_positive_and_finite_is_refused(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "extjobs.toml"
    path.write_text(f"[ssh]\nlogin_timeout = {value}\n")
    with pytest.raises(ConfigError, match="login_timeout"):
        load_config(path)


@pytest.mark.parametrize(
    ("address", "port"),
    [
        pytest.param("node1", 22, id="same-name-as-host"),
        pytest.param("NODE1.", 22, id="case-and-trailing-dot"),
    ],
)
async def test_a_second_name_for_the_same_host_and_port_is_refused(address: str, port: int) -> None:
    async with open_test_cluster(2) as cluster:
        mark = cluster.runner.mark()
        job = await cluster.run(
            OpNodeAdd(node_name="alias", address=address, port=port, accept_new_host_key=True)
        )
        assert not ok(job)
        assert "node node1 already is node1:22" in error(job)
        assert "as node alias" in error(job)
        assert job.ops[0].error is not None
        assert job.ops[0].error["existing"] == "node1"
        assert cluster.runner.calls[mark:] == []  # refused before contacting anything
        assert "alias" not in cluster.config.nodes


async def test_ip_addresses_are_compared_in_canonical_form() -> None:
    async with open_test_cluster(1) as cluster:
        first = await cluster.run(OpNodeAdd(node_name="a", address="::1", accept_new_host_key=True))
        assert ok(first), error(first)
        again = await cluster.run(
            OpNodeAdd(node_name="b", address="0:0::0:1", accept_new_host_key=True)
        )
        assert "node a already is ::1:22" in error(again)


async def test_another_port_of_the_same_host_is_another_node() -> None:
    async with open_test_cluster(1) as cluster:
        job = await cluster.run(
            OpNodeAdd(node_name="node1b", address="node1", port=2222, accept_new_host_key=True)
        )
        assert ok(job), error(job)


async def test_two_adds_of_one_endpoint_at_once_leave_one_node() -> None:
    async with open_test_cluster(1) as cluster:
        assert ok(await cluster.run(OpGroupAdd(group_name="other")))
        ids = [
            cluster.submit(
                OpNodeAdd(node_name=name, address="10.0.0.9", group=group, accept_new_host_key=True)
            )
            for name, group in (("x1", None), ("x2", "other"))
        ]
        jobs = [await cluster.wait(i) for i in ids]
        assert sorted(ok(j) for j in jobs) == [False, True], [error(j) for j in jobs]
        assert "already is 10.0.0.9:22" in " ".join(error(j) for j in jobs)
        assert len({"x1", "x2"} & set(cluster.config.nodes)) == 1
