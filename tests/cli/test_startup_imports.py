"""What a short command imports: ``extjobs job list`` must start without the modules it
does not use (docs/benchmarks.md, CLI start-up). Asserted as the set of modules the
command has loaded when it is done, never as a time: a module that comes back into the
start path (an import at the top of a noun module or of ``cli/common.py``) fails here
by name.

The command runs in a fresh interpreter (a subprocess: this process has imported
everything already) against a stand-in daemon in a thread of this process, a Unix
socket answering ``GET /v1/jobs`` with an empty list.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.spawns

#: Modules (and packages: a prefix followed by ``.``) the command must not import.
HEAVY = (
    "extjobs.model.opcodes",
    "extjobs.model.config",
    "extjobs.model.cluster",
    "extjobs.engine",
    "extjobs.lus",
    "extjobs.nodes",
    "extjobs.store",
    "extjobs.cli.instance",
    "extjobs.cli.node",
    "extjobs.cli.storage",
    "extjobs.cli.pools",
    "extjobs.cli.daemon",
    "extjobs.cli.demo",
    "attrs",
    "cattrs",
    "httpx",
    "httpcore",
    "asyncssh",
    "anyio",
    "starlette",
    "uvicorn",
    "rich.progress",
)

#: Print what the command imported, after it ran (its exit raises SystemExit).
PROBE = """
import json, sys
from extjobs.cli.main import main
sys.argv = ["extjobs", *sys.argv[1:]]
try:
    main()
finally:
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        page = {"jobs": [], "next": None}  # GET /v1/jobs: one page of the search
        body = json.dumps(page if self.path.startswith("/v1/jobs") else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def stand_in_daemon(path: Path) -> Iterator[None]:
    server = _Server(str(path), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def imported_by(socket: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**os.environ, "EXTJOBS_SOCKET": str(socket), "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = next(x for x in out.stderr.splitlines() if x.startswith("MODULES "))
    return out, set(json.loads(line.removeprefix("MODULES ")))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("job", "list"), id="job-list"),
        pytest.param(("job", "list", "--output", "json"), id="job-list-json"),
    ],
)
def test_job_list_imports_only_what_it_uses(tmp_path: Path, args: tuple[str, ...]) -> None:
    socket = tmp_path / "api.sock"
    with stand_in_daemon(socket):
        out, modules = imported_by(socket, *args)
    assert out.returncode == 0, out.stderr
    # It did its work: the request was answered and shown.
    assert "ID" in out.stdout or out.stdout.strip() == "[]"
    assert "extjobs.cli.job" in modules
    assert heavy_in(modules) == []


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The check above can fail: a command that submits an opcode loads the model."""
    socket = tmp_path / "api.sock"
    with stand_in_daemon(socket):
        _, modules = imported_by(socket, "node", "list")
    assert "extjobs.model.opcodes" in heavy_in(modules)
