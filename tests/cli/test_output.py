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


def step(**data: object) -> dict[str, object]:
    return {"timestamp": 0.0, "type": "step", "message": "node1: create disk0 (p): …", "data": data}


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        pytest.param(
            step(error={"kind": "timeout"}, stderr_tail="one\ntwo \x1b[2J\n"),
            ["    stderr: one", "            two \\x1b[2J"],
            id="timed-out",
        ),
        pytest.param(
            step(exit_status=3, stderr_tail="no space\n"), ["    stderr: no space"], id="exit-3"
        ),
        pytest.param(
            step(exit_status=None, signal="KILL", stderr_tail="x"), ["    stderr: x"], id="killed"
        ),
        pytest.param(step(exit_status=0, stderr_tail="progress 50%\n"), [], id="success"),
        pytest.param(step(exit_status=1, stderr_tail=" \n"), [], id="blank-stderr"),
        pytest.param({**step(error={}, stderr_tail="x"), "type": "message"}, [], id="not-a-step"),
    ],
)
def test_a_failed_step_is_followed_by_the_tail_of_its_stderr(
    entry: dict[str, object], shown: list[str]
) -> None:
    assert output.log_lines(entry)[1:] == shown


def test_only_the_last_lines_of_a_long_stderr_are_shown() -> None:
    tail = "".join(f"line {i}\n" for i in range(50))
    lines = output.log_lines(step(exit_status=1, stderr_tail=tail))
    assert len(lines) == 1 + output.STDERR_LINES
    assert lines[-1].endswith("line 49")


def test_output_that_is_not_a_terminal_is_not_cut_to_a_width() -> None:
    assert output._width(io.StringIO()) == output.FULL_WIDTH
    assert output.FULL_WIDTH > 10_000
