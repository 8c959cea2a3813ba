"""Test lanes: which tests start processes, and a guard that keeps the fast lane honest.

Marks (registered in ``pyproject.toml``):

- ``spawns``: the test starts a process of any kind — a daemon, an SSH node server, a
  provider script, ``sh``, ``losetup``, qemu. ``make test-fast`` runs everything else.
- ``openssh``, ``root``, ``kvm``: it needs OpenSSH's ``sshd``, root, or qemu and
  ``/dev/kvm``. Each of them implies ``spawns`` (added here, so a test never needs both).
- ``postgres``: it uses the harness's own PostgreSQL server (``tests/harness/postgres.py``;
  fixtures :func:`postgres_server`, one per session, and :func:`pg_url`, a new database
  per test). Implies ``spawns``; a test using either fixture gets the mark here.
- ``slow``: a long scenario; ``make test-fast`` leaves it out too.

Where the marks come from, most central first: the hook below adds ``postgres`` to every
test that uses a fixture of :data:`POSTGRES_FIXTURES`, and ``spawns`` to every test that
uses a fixture of :data:`SPAWNING_FIXTURES` or carries one of the marks that imply it; a module whose every test spawns says so once with ``pytestmark``; a test of a
mixed module carries ``@pytest.mark.spawns`` itself.

The guard: with ``EXTJOBS_TEST_LANE=fast`` in the environment (``make test-fast`` and
the first half of ``make test`` set it), starting a process from a test that is not
marked ``spawns`` — through :class:`subprocess.Popen` (and so ``subprocess.run``,
asyncio's and anyio's subprocess APIs), ``os.fork``, ``os.forkpty``, ``os.posix_spawn``,
``os.system`` or :mod:`multiprocessing` — raises :class:`UnmarkedSpawnError` at the call, and the test fails
even if the code under test swallows that error. Fixtures of any scope count as part of
the test that sets them up; collection (module imports) is not checked.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from tests.harness.postgres import PostgresServer, require_postgres

# tests/test_lanes.py runs pytest in-process on small example files to prove the guard.
pytest_plugins = ["pytester"]

#: The environment variable that turns the guard on, and its value.
LANE_ENV = "EXTJOBS_TEST_LANE"
FAST_LANE = "fast"

#: Fixtures that start processes (SSH node servers, daemons): any test using one spawns.
SPAWNING_FIXTURES = frozenset({"nodes", "cluster3"})

#: Fixtures of the harness's PostgreSQL server: any test using one is marked postgres.
POSTGRES_FIXTURES = frozenset({"postgres_server", "pg_url"})

#: Marks whose tests necessarily start processes.
IMPLY_SPAWNS = ("openssh", "root", "kvm", "postgres")


class UnmarkedSpawnError(RuntimeError):
    """A test outside the ``spawns`` lane tried to start a process."""


# tryfirst: the marks must be in place before ``-m`` deselects anything (the mark plugin
# does that in its own pytest_collection_modifyitems).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.get_closest_marker("postgres") is None and POSTGRES_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("spawns") is not None:
            continue
        uses = SPAWNING_FIXTURES.intersection(fixtures)
        if uses or any(item.get_closest_marker(name) for name in IMPLY_SPAWNS):
            item.add_marker(pytest.mark.spawns)


# -- the harness's PostgreSQL ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (skips where none is installed)."""
    server = PostgresServer(require_postgres())
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database of its own on :func:`postgres_server`."""
    return postgres_server.create_database()


# -- the guard --------------------------------------------------------------------------

#: The test running now (None between tests), and the spawns refused per test id.
_current: pytest.Item | None = None
_refused: dict[str, list[str]] = {}


def _may_spawn() -> bool:
    # Outside a test (collection) spawns are allowed: importing asyncssh runs
    # ``ldconfig -p`` once (ctypes.util.find_library), which costs no test anything.
    return _current is None or _current.get_closest_marker("spawns") is not None


def _refuse(what: str) -> None:
    where = _current.nodeid if _current is not None else "?"
    _refused.setdefault(where, []).append(what)
    raise UnmarkedSpawnError(
        f"{where} started a process ({what}) but is not marked 'spawns': mark it "
        "@pytest.mark.spawns (or use a fixture of SPAWNING_FIXTURES in tests/conftest.py), "
        "or keep it in-process"
    )


def _guarded(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def guard(*args: Any, **kwargs: Any) -> Any:
        if not _may_spawn():
            _refuse(f"{name}{_describe(args)}")
        return original(*args, **kwargs)

    return guard


def _describe(args: tuple[Any, ...]) -> str:
    shown = [repr(a) for a in args if isinstance(a, (str, bytes, list, tuple))][:2]
    return f"({', '.join(shown)})"


#: What the guard replaced: (owner, attribute, original), to put back at the end.
_replaced: list[tuple[Any, str, Any]] = []


def _install_guard() -> None:
    execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def guarded_execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any) -> Any:
        if not _may_spawn():
            _refuse(f"subprocess.Popen({args!r})")
        return execute_child(self, args, *rest)

    _replace(subprocess.Popen, "_execute_child", guarded_execute_child)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            _replace(os, name, _guarded(f"os.{name}", getattr(os, name)))
    # multiprocessing's spawn and forkserver start methods (subprocess holds its own
    # reference to fork_exec, guarded above through _execute_child).
    _replace(_posixsubprocess, "fork_exec", _guarded("fork_exec", _posixsubprocess.fork_exec))


def _replace(owner: Any, name: str, value: Any) -> None:
    _replaced.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(LANE_ENV) == FAST_LANE:
        _install_guard()


def pytest_unconfigure(config: pytest.Config) -> None:
    while _replaced:
        owner, name, original = _replaced.pop()
        setattr(owner, name, original)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _current
    _current = item
    try:
        return (yield)
    finally:
        _current = None


_call_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, object]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_call_failed] = True
    return report


@pytest.fixture(autouse=True)
def _no_unmarked_spawns(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it tried to spawn unmarked, even if the error was swallowed
    (when the test failed already, that failure is reported alone)."""
    yield
    refused = _refused.get(request.node.nodeid)
    if refused and not request.node.stash.get(_call_failed, False):
        pytest.fail(
            f"started processes without the 'spawns' mark: {'; '.join(refused)}", pytrace=False
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _refused:
        terminalreporter.section("processes started outside the spawns lane")
        for where, what in _refused.items():
            terminalreporter.line(f"{where}: {'; '.join(what)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _refused and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
