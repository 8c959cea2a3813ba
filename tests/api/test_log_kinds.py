"""docs/api.md lists exactly the job log entry types the code can emit."""

from __future__ import annotations

import re
from pathlib import Path

from extjobs.model.jobs import LogKind

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_documented_log_types_are_the_enum() -> None:
    text = API_DOC.read_text()
    table = text[text.index("Log entry types") :]
    table = table[: table.index("\n\n", table.index("| type |"))]
    documented = re.findall(r"^\| `([a-z]+)` \|", table, flags=re.MULTILINE)
    assert documented == [kind.value for kind in LogKind]
