"""``instance add -t ext``: Ganeti's disk template option is accepted for ``ext`` only,
checked before the daemon is asked anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from extjobs.cli.main import main

DISK = ["--disk", "0:size=1G,provider=sharedfile,dir=/srv"]


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["extjobs", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    captured = capsys.readouterr()
    return code if isinstance(code, int) else 1, captured.out + captured.err


@pytest.mark.parametrize(
    "option",
    [
        pytest.param(["-t", "plain"], id="short"),
        pytest.param(["--disk-template", "drbd"], id="long"),
    ],
)
def test_another_template_is_refused_saying_only_ext_exists(
    option: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    socket = str(tmp_path / "no-daemon.sock")
    code, text = run(
        monkeypatch, capsys, "--socket", socket, "instance", "add", "web", *DISK, *option
    )
    assert code == 2
    assert "only 'ext' exists" in text
    assert repr(option[1]) in text


def test_ext_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    socket = str(tmp_path / "no-daemon.sock")
    args = ["--socket", socket, "instance", "add", "web", "-t", "ext"]
    # A disk without a size: past the template, the next check refuses (still before
    # the daemon is asked), naming the disk rather than the template.
    code, text = run(monkeypatch, capsys, *args, "--disk", "0:provider=sharedfile")
    assert code == 2
    assert "disk template" not in text
    assert "size" in text
