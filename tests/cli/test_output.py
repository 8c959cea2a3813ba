"""Text from providers and nodes is shown literally: no Rich markup, no raw control
characters reaching the operator's terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from extjobs.cli import output

HOSTILE = "reason [/x] [bold]loud[/bold] \x1b[31mred\x1b[0m \x07bell\x00 tab\tend"


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    fake = Console(file=buffer, width=300, color_system=None, highlight=False)
    monkeypatch.setattr(output, "console", fake)
    monkeypatch.setattr(output, "err_console", fake)
    return buffer


def test_printable_escapes_control_characters_but_keeps_newlines_and_tabs() -> None:
    assert output.printable("a\x1b[31mb\x00c\x7f\x9b\nd\te") == "a\\x1b[31mb\\x00c\\x7f\\x9b\nd\te"


def test_a_table_cell_with_markup_and_escapes_is_shown_as_it_is(screen: io.StringIO) -> None:
    output.table("Per node", ["Node", "Reason"], [["node1", HOSTILE], ["node2", None]])
    text = screen.getvalue()
    assert "reason [/x] [bold]loud[/bold] \\x1b[31mred\\x1b[0m \\x07bell\\x00" in text
    assert "\x1b" not in text
    assert "\x07" not in text


def test_say_and_log_lines_are_literal(screen: io.StringIO) -> None:
    output.say(HOSTILE, title="Job [/y] 1")
    line = output.log_line({"timestamp": 0.0, "type": "step", "message": HOSTILE})
    output.say(line)
    text = screen.getvalue()
    assert text.count("[/x] [bold]loud[/bold]") == 2
    assert "Job [/y] 1reason" in text
    assert "\x1b" not in text


def test_output_that_is_not_a_terminal_is_not_cut_to_a_width() -> None:
    assert output._width(io.StringIO()) == output.FULL_WIDTH
    assert output.FULL_WIDTH > 10_000
