"""What the command line says when it cannot do its job: an argument that is not UTF-8,
or a daemon that takes connections and never answers. A message and an exit code,
never a traceback, and never a two-minute wait."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extjobs.cli.main import main


@contextlib.contextmanager
def silent_daemon(path: Path) -> Iterator[list[socket.socket]]:
    """A Unix socket at ``path`` that accepts every connection and never answers."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, float]:
    """Run the console script in process; its exit code, stderr and seconds taken."""
    monkeypatch.setattr(sys, "argv", ["extjobs", *args])
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main()
    taken = time.monotonic() - started
    code = exit_info.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err, taken


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("instance", "info", os.fsdecode(b"web\xff")), id="instance-name"),
        pytest.param(("submit", os.fsdecode(b"/tmp/job-\xe9.json")), id="file-name"),
        pytest.param(("--socket", os.fsdecode(b"/run/\xff.sock"), "job", "list"), id="option"),
    ],
)
def test_an_argument_that_is_not_utf8_is_named_and_refused_as_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("EXTJOBS_SOCKET", "/nonexistent/api.sock")
    code, err, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    bad = next(i for i, a in enumerate(args, 1) if not a.isascii())
    assert f"argument {bad} (" in err
    assert "not valid UTF-8" in err
    assert "\\x" in err  # the offending byte, escaped
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("how", "args"),
    [
        pytest.param("option", ("--timeout", "0.5", "job", "list"), id="option-job-list"),
        pytest.param("env", ("job", "list"), id="env-job-list"),
        pytest.param("env", ("job", "watch", "7"), id="env-job-watch"),
        pytest.param("env", ("instance", "info", "web1"), id="env-instance-info"),
    ],
)
def test_a_daemon_that_never_answers_is_reported_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    how: str,
    args: tuple[str, ...],
) -> None:
    path = tmp_path / "api.sock"
    monkeypatch.setenv("EXTJOBS_SOCKET", str(path))
    if how == "env":
        monkeypatch.setenv("EXTJOBS_TIMEOUT", "0.5")
    with silent_daemon(path) as held:
        code, err, taken = run_cli(monkeypatch, capsys, *args)
        assert held, "the client never connected"
    assert code == 1
    assert f"the extjobs daemon at {path} did not answer" in err
    assert "within 0.5s" in err
    assert "Traceback" not in err
    assert taken < 10


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("EXTJOBS_SOCKET", "/nonexistent/api.sock")
    code, err, _ = run_cli(monkeypatch, capsys, "--timeout", value, "job", "list")
    assert code == 2
    assert "--timeout" in err
