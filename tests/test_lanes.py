"""The fast lane's guard (tests/conftest.py): an unmarked test that starts a process fails.

Each case runs pytest in this process on a small test file, with this suite's conftest.
The first case starts no process (the guard refuses every one); the others do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

CASES = """
import contextlib
import multiprocessing
import os
import subprocess

import anyio
import pytest


def test_pure():
    assert True


def test_run():
    subprocess.run(["true"], check=True)


def test_swallowed():
    with contextlib.suppress(Exception):
        subprocess.run(["true"], check=True)


async def test_anyio():
    await anyio.run_process(["true"])


def test_system():
    os.system("true")


def test_multiprocessing():
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=print)
    process.start()
    process.join()


@pytest.mark.spawns
def test_marked():
    subprocess.run(["true"], check=True)


@pytest.mark.openssh
def test_implied():
    subprocess.run(["true"], check=True)
"""


@pytest.fixture
def example(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    spawns: x\n    openssh: x\n    root: x\n    kvm: x\n    slow: x\n"
    )
    pytester.makepyfile(test_example=CASES)
    return pytester


def test_the_fast_lane_fails_every_unmarked_spawn(
    example: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTJOBS_TEST_LANE", "fast")
    result = example.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not spawns")
    # test_swallowed passes its call and errors at teardown.
    result.assert_outcomes(passed=2, failed=4, errors=1, deselected=2)
    out = result.stdout.str()
    assert "processes started outside the spawns lane" in out
    for line in (
        "test_example.py::test_run: subprocess.Popen(['true'])",
        "test_example.py::test_swallowed: subprocess.Popen(['true'])",
        "test_example.py::test_anyio: subprocess.Popen(('true',))",
        "test_example.py::test_system: os.system('true')",
        "test_example.py::test_multiprocessing: fork_exec(",
    ):
        assert line in out
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.spawns
def test_the_spawning_lane_runs_marked_tests(
    example: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTJOBS_TEST_LANE", "fast")
    result = example.runpytest_inprocess("-p", "no:cacheprovider", "-m", "spawns")
    result.assert_outcomes(passed=2, deselected=6)


@pytest.mark.spawns
def test_without_the_lane_nothing_is_guarded(
    example: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXTJOBS_TEST_LANE", raising=False)
    result = example.runpytest_inprocess("-p", "no:cacheprovider", "-k", "not multiprocessing")
    result.assert_outcomes(passed=7, deselected=1)
