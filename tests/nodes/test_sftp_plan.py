"""What a tree copy sends, decided in a worker thread before anything is sent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from extjobs.errors import InputError
from extjobs.nodes.sftp import MAX_FILE_BYTES, plan_tree, read_file


def test_plan_keeps_directories_files_and_links_to_files_with_their_modes(
    tmp_path: Path,
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub").chmod(0o750)
    (tmp_path / "create").write_text("#!/bin/sh\n")
    (tmp_path / "create").chmod(0o755)
    (tmp_path / "shared.sh").write_text("x=1\n")
    (tmp_path / "sub" / "common.sh").symlink_to(tmp_path / "shared.sh")
    plan = plan_tree(tmp_path)
    assert plan.dirs == [("", stat.S_IMODE(tmp_path.stat().st_mode)), ("sub", 0o750)]
    files = {rel: (local, mode) for local, rel, mode in plan.files}
    assert set(files) == {"create", "shared.sh", "sub/common.sh"}
    assert files["create"][1] == 0o755
    # A link is copied as the file it points to.
    assert read_file(files["sub/common.sh"][0]) == b"x=1\n"


def test_everything_that_is_not_a_file_or_directory_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "create").write_text("#!/bin/sh\n")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    with open(tmp_path / "huge", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(InputError) as caught:
        plan_tree(tmp_path)
    message = caught.value.message
    for what in (
        f"{tmp_path / 'pipe'} (a FIFO)",
        f"{tmp_path / 'zero'} (a character device)",
        f"{tmp_path / 'gone'} (No such file or directory)",
        f"{tmp_path / 'dirlink'} (a link to a directory)",
        f"{tmp_path / 'huge'} ({MAX_FILE_BYTES + 1} bytes, over {MAX_FILE_BYTES})",
    ):
        assert what in message
    assert "create" not in message
    assert caught.value.fields["field"] == "source"


def test_a_missing_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a directory on the master"):
        plan_tree(tmp_path / "missing")
