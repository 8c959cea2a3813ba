from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extjobs.model.remote import RemoteCommand
from extjobs.nodes.command import PGID_MARKER, kill_line, parse_pgid, shell_line
from tests.harness.procs import is_alive

SHELLS = [pytest.param("/bin/sh", id="sh"), pytest.param("/bin/bash", id="bash")]

# Any text a str can carry to a node: everything but NUL and lone surrogates.
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
_names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0="), min_size=1)


def _run_line(shell: str, cmd: RemoteCommand) -> subprocess.CompletedProcess[bytes]:
    """Run the exec request the way sshd does: ``SHELL -c LINE``, in a new session."""
    return subprocess.run(
        [shell, "-c", shell_line(cmd)],
        env={"PATH": "/usr/bin:/bin", "SHOULD_NOT_LEAK": "1"},
        capture_output=True,
        check=False,
        start_new_session=True,
    )


def _strip_marker(stdout: bytes) -> tuple[int | None, bytes]:
    first, _, rest = stdout.partition(b"\n")
    return parse_pgid(first), rest


def test_line_announces_the_group_then_execs_env() -> None:
    line = shell_line(RemoteCommand(("prog", "a b"), env={"K": "v w"}, cwd="/srv/x y"))
    assert line.startswith(f"printf '{PGID_MARKER} %s\\n' \"$$\"; ")
    assert "cd -- '/srv/x y' || exit 127; " in line
    assert line.endswith("exec env -i -- 'K=v w' prog 'a b'")


@pytest.mark.parametrize(
    ("cmd", "match"),
    [
        pytest.param(RemoteCommand(()), "at least a program", id="empty-argv"),
        pytest.param(RemoteCommand(("A=B",)), "must not contain '='", id="assignment-argv0"),
        pytest.param(RemoteCommand(("p", "a\0b")), "NUL", id="nul-argument"),
        pytest.param(RemoteCommand(("p",), env={"A=B": "1"}), "invalid", id="name-with-equals"),
        pytest.param(RemoteCommand(("p",), env={"": "1"}), "invalid", id="empty-name"),
        pytest.param(RemoteCommand(("p",), env={"A": "\0"}), "NUL", id="nul-value"),
        pytest.param(RemoteCommand(("p",), cwd="/a\0"), "NUL", id="nul-cwd"),
    ],
)
def test_inexpressible_commands_are_refused(cmd: RemoteCommand, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shell_line(cmd)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("extjobs-pgid 4242", 4242, id="plain"),
        pytest.param("extjobs-pgid 4242\n", 4242, id="newline"),
        pytest.param(b"extjobs-pgid 17\r\n", 17, id="bytes-crlf"),
        pytest.param("extjobs-pgid 1", None, id="init"),
        pytest.param("extjobs-pgid 0", None, id="zero"),
        pytest.param("extjobs-pgid -5", None, id="negative"),
        pytest.param("hello", None, id="other"),
        pytest.param("extjobs-pgid 12 junk", None, id="trailing"),
        pytest.param(b"\xff\xfe", None, id="binary"),
    ],
)
def test_parse_pgid(line: str | bytes, expected: int | None) -> None:
    assert parse_pgid(line) == expected


def test_kill_line_refuses_dangerous_groups() -> None:
    with pytest.raises(ValueError, match="refusing"):
        kill_line(1)


@pytest.mark.spawns
@pytest.mark.parametrize("shell", SHELLS)
def test_kill_line_tolerates_a_vanished_group(shell: str) -> None:
    done = subprocess.run([shell, "-c", kill_line(4_000_000)], capture_output=True, check=False)
    assert done.returncode == 0
    assert done.stderr == b""


@pytest.mark.spawns
@pytest.mark.parametrize("shell", SHELLS)
def test_kill_line_kills_the_whole_group(shell: str) -> None:
    leader = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 1000 & echo $!; sleep 1000"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    subprocess.run([shell, "-c", kill_line(leader.pid)], check=True)
    assert leader.wait(10) == -9
    leader.stdout.close()
    deadline = time.monotonic() + 10
    while is_alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not is_alive(child)


@pytest.mark.spawns
@pytest.mark.parametrize("shell", SHELLS)
def test_marker_names_the_process_group(shell: str) -> None:
    done = _run_line(shell, RemoteCommand(("/bin/sh", "-c", "ps -o pgid= -p $$")))
    pgid, rest = _strip_marker(done.stdout)
    assert pgid is not None
    assert int(rest) == pgid


@pytest.mark.spawns
@pytest.mark.parametrize("shell", SHELLS)
def test_missing_cwd_exits_127(shell: str, tmp_path: Path) -> None:
    done = _run_line(shell, RemoteCommand(("true",), cwd=str(tmp_path / "missing")))
    assert done.returncode == 127


@pytest.mark.spawns
@pytest.mark.parametrize("shell", SHELLS)
def test_cwd_with_shell_syntax_is_taken_literally(shell: str, tmp_path: Path) -> None:
    weird = tmp_path / "a b'c\"$(touch x)`d`;e"
    weird.mkdir()
    done = _run_line(shell, RemoteCommand(("/bin/pwd",), cwd=str(weird)))
    assert _strip_marker(done.stdout)[1] == os.fsencode(weird) + b"\n"
    assert list(weird.iterdir()) == []


@pytest.mark.spawns
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env=st.dictionaries(_names, _text, max_size=6), shell=st.sampled_from(["sh", "bash"]))
def test_env_round_trips_exactly_through_a_real_shell(env: dict[str, str], shell: str) -> None:
    done = _run_line(f"/bin/{shell}", RemoteCommand(("/usr/bin/env", "-0"), env=env))
    assert done.returncode == 0, done.stderr
    pgid, rest = _strip_marker(done.stdout)
    assert pgid is not None
    expected = {f"{k}={v}".encode() for k, v in env.items()}
    assert set(rest.split(b"\0")[:-1]) == expected
    assert rest.count(b"\0") == len(env)


@pytest.mark.spawns
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(_text, max_size=6), shell=st.sampled_from(["sh", "bash"]))
def test_arguments_round_trip_exactly_through_a_real_shell(args: list[str], shell: str) -> None:
    done = _run_line(f"/bin/{shell}", RemoteCommand(("/usr/bin/printf", "%s\\0", *args)))
    assert done.returncode == 0, done.stderr
    _, rest = _strip_marker(done.stdout)
    # printf repeats its format for each argument, and runs it once even without any.
    expected = b"".join(a.encode() + b"\0" for a in args) if args else b"\0"
    assert rest == expected
