import os
import subprocess

import pytest

from extjobs.extstorage.diagnose import diagnose_command, parse_diagnose_output
from extjobs.extstorage.names import REQUIRED_ACTIONS, Action
from extjobs.extstorage.parameters import parse_parameters_list

from .harness import PROVIDERS

SHIPPED = ["loopfile", "sharedfile"]


@pytest.mark.parametrize("provider", SHIPPED)
def test_provider_directory_is_complete(provider: str) -> None:
    pdir = PROVIDERS / provider
    for action in (*REQUIRED_ACTIONS, Action.OPEN, Action.CLOSE):
        script = pdir / action.value
        assert script.is_file(), script
        assert os.access(script, os.X_OK), script
        assert script.read_text().startswith("#!/bin/sh\n")
    assert parse_parameters_list((pdir / "parameters.list").read_text()) == {
        "dir": f"Shared directory holding the volume files (default /var/lib/extjobs/{provider})"
    }
    assert (pdir / "README.md").is_file()
    assert not (pdir / "node-id").exists()


def test_common_code_is_shared_verbatim() -> None:
    assert (PROVIDERS / "loopfile" / "common.sh").read_bytes() == (
        PROVIDERS / "sharedfile" / "common.sh"
    ).read_bytes()


@pytest.mark.spawns
@pytest.mark.parametrize("provider", SHIPPED)
def test_scripts_are_posix_sh(provider: str) -> None:
    for path in sorted((PROVIDERS / provider).iterdir()):
        if path.name in {"README.md", "parameters.list"}:
            continue
        subprocess.run(["/bin/sh", "-n", str(path)], check=True)
        if os.path.exists("/bin/dash"):
            subprocess.run(["/bin/dash", "-n", str(path)], check=True)


@pytest.mark.spawns
def test_diagnose_reports_the_shipped_providers_valid() -> None:
    cmd = diagnose_command([str(PROVIDERS)], None, 10)
    proc = subprocess.run(cmd.argv, env=cmd.env_dict, capture_output=True, text=True, check=True)
    report = parse_diagnose_output(proc.stdout, node="local")
    assert set(report) == set(SHIPPED)
    for provider in SHIPPED:
        status = report[provider]
        assert status.valid, status.reason
        assert status.optional == ("snapshot", "open", "close")
        assert set(status.parameters) == {"dir"}
