"""Node add: the login check's timeout is a setting."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from extjobs.errors import ConfigError
from extjobs.model.config import load_config
from extjobs.model.opcodes import OpNodeAdd
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
