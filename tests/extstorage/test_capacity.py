"""The capacity script's command and output format (pure)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from extjobs.errors import ProviderError
from extjobs.extstorage.capacity import (
    CAPACITY_SCRIPT,
    NO_SCRIPT,
    Capacity,
    capacity_command,
    parse_capacity_output,
)


def parse(text: str) -> Capacity | None:
    return parse_capacity_output(text, provider="p", node="n1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("100 40\n", Capacity(100, 40), id="local"),
        pytest.param("100\t40\nshared\n", Capacity(100, 40, shared=True), id="shared"),
        pytest.param("0 0\n", Capacity(0, 0), id="empty-storage"),
        pytest.param(f"{NO_SCRIPT}\n", None, id="no-script"),
    ],
)
def test_accepted_output(text: str, expected: Capacity | None) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="nothing"),
        pytest.param("100\n", id="one-number"),
        pytest.param("100 40 3\n", id="three-numbers"),
        pytest.param("100 -4\n", id="negative"),
        pytest.param("1e3 40\n", id="not-whole"),
        pytest.param("40 100\n", id="free-above-total"),
        pytest.param("100 40\nlocal\n", id="unknown-second-line"),
        pytest.param("100 40\nshared\nmore\n", id="third-line"),
        pytest.param("\u0661\u0660\u0660 40\n", id="non-ascii-digits"),
    ],
)
def test_anything_else_is_refused_quoting_it(text: str) -> None:
    with pytest.raises(ProviderError, match="expected 'TOTAL FREE'") as info:
        parse(text)
    assert info.value.fields == {"provider": "p", "node": "n1"}


def test_the_command_runs_in_the_provider_directory_with_extp_only() -> None:
    command = capacity_command("/srv/p", "p", {"dir": "/v", "pool_x": "$(x)"}, timeout=7.0)
    assert command.argv == ("/bin/sh", "-c", CAPACITY_SCRIPT)
    assert command.cwd == "/srv/p"
    assert command.timeout == 7.0
    assert command.env_dict == {
        "PATH": command.env_dict["PATH"],
        "LC_ALL": "C",
        "EXTP_DIR": "/v",
        "EXTP_POOL_X": "$(x)",
        "EXTP_PROVIDER": "p",
    }


@pytest.mark.spawns
def test_the_wrapper_under_real_sh(tmp_path: Path) -> None:
    def run() -> str:
        done = subprocess.run(
            ["/bin/sh", "-c", CAPACITY_SCRIPT],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "EXTP_DIR": "/v"},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    assert parse(run()) is None
    script = tmp_path / "capacity"
    script.write_text('#!/bin/sh\necho "10 4"; [ "$EXTP_DIR" = /v ] && echo shared\n')
    script.chmod(0o755)
    assert parse(run()) == Capacity(10, 4, shared=True)
