"""How the CLI shows things: rich tables on a terminal, JSON with --output json.

Text that comes from outside — provider output and ``parameters.list``, node answers,
names and parameter values — is shown literally: never read as Rich markup (``[/x]``
in a provider's reason must not crash ``verify``), and with control characters escaped
(``\x1b``), so that nothing a provider prints can drive the operator's terminal.
Styled text is built here only from our own words (:func:`say` with ``style``).

Output that is not a terminal (a pipe, a file, a log) is written full width: no line
is wrapped or cut at 80 columns (or at ``COLUMNS``), so that a path or a message is
found whole by ``grep`` and scripts. On a terminal Rich fits the terminal's width.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: The width given to Rich for output that is not a terminal: wider than any line.
FULL_WIDTH = 1 << 15


def _width(stream: object) -> int | None:
    """``None`` (Rich asks the terminal) for a terminal, else :data:`FULL_WIDTH`."""
    isatty = getattr(stream, "isatty", None)
    return None if isatty is not None and isatty() else FULL_WIDTH


console = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with every control character but newline and tab escaped (``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def say(
    text: object, *, style: str | None = None, err: bool = False, title: str | None = None
) -> None:
    """Print ``text`` literally (no markup, control characters escaped), after ``title``
    in bold when given."""
    line = Text(printable(text), style=style or "")
    if title is not None:
        line = Text.assemble((printable(title), "bold"), line)
    (err_console if err else console).print(line)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(Text("" if v is None else printable(v)) for v in row))
    console.print(t)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def log_line(entry: dict[str, Any]) -> str:
    """One job log entry as a line of text (print it with :func:`say`)."""
    return printable(f"{when(entry['timestamp'])} [{entry['type']}] {entry['message']}")


#: Lines of a failed step's stderr shown under its log line (``--output json`` and the
#: API keep the whole stored tail).
STDERR_LINES = 10


def failed_step_stderr(entry: dict[str, Any]) -> list[str]:
    """The last :data:`STDERR_LINES` lines of stderr of a ``step`` entry that failed,
    timed out or was killed, escaped; ``[]`` for other entries and silent steps."""
    if entry.get("type") != "step" or not isinstance(entry.get("data"), dict):
        return []
    data = entry["data"]
    failed = (
        data.get("error") is not None
        or data.get("exit_status") not in (0, None)
        or data.get("signal") is not None
    )
    tail = data.get("stderr_tail")
    if not failed or not isinstance(tail, str) or not tail.strip():
        return []
    return [printable(line) for line in tail.rstrip("\n").split("\n")[-STDERR_LINES:]]


def log_lines(entry: dict[str, Any]) -> list[str]:
    """One job log entry as lines of text: :func:`log_line`, then, for a step that
    failed or timed out, the tail of what it printed on stderr."""
    lines = [log_line(entry)]
    for number, line in enumerate(failed_step_stderr(entry)):
        lines.append(("    stderr: " if number == 0 else "            ") + line)
    return lines


def is_tty() -> bool:
    return sys.stdout.isatty()
