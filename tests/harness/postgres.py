"""The harness's PostgreSQL: the test kit's throwaway server, skipped where not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from extjobs.testing.postgres import PASSWORD, ROLE, PostgresServer, find_bindir

__all__ = ["PASSWORD", "ROLE", "PostgresServer", "find_bindir", "require_postgres"]


def require_postgres() -> Path:
    """The binaries' directory; skips the calling test when PostgreSQL is missing."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb is not installed (make test installs postgresql)")
    return bindir
