"""What every ``extjobs`` command shares: the daemon client, common options, submitting
an opcode and following its job, and turning errors into exit codes.

Exit codes: 0 success, 1 the job failed (or the daemon or the model refused the
request, or did not answer within ``--timeout``), 2 usage error (an argument that is
not UTF-8 included). Noun modules (``cli/job.py``, ``cli/instance.py`` …) import
this module and ``cli/output.py``; only ``cli/main.py`` imports the noun modules.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.text import Text

from extjobs.api.client import DEFAULT_TIMEOUT, Client
from extjobs.cli import output
from extjobs.errors import ExtJobsError

if TYPE_CHECKING:
    from extjobs.model.opcodes import OpCode

# The model (opcodes, configuration, jobs: attrs classes and their cattrs hooks) is
# imported where a command needs it, not here: a command that only reads from the
# daemon (``job list``) starts without it (tests/cli/test_startup_imports.py).


class Ctx:
    """The root group's settings, handed to every command by ``pass_ctx``."""

    def __init__(self, socket: Path | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout

    def client(self) -> Client:
        """A client for the daemon; raises click.UsageError when no socket is known."""
        sock = self.socket
        if sock is None:
            from extjobs.model.config import default_socket

            sock = default_socket()
        if sock is None:
            raise click.UsageError("no daemon socket: use --socket or EXTJOBS_SOCKET")
        return Client(sock, timeout=self.timeout)


def seconds_option(_ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A click callback: ``value`` must be a finite number of seconds > 0."""
    if not math.isfinite(value) or value <= 0:
        raise click.BadParameter(f"must be a finite number of seconds > 0, not {value}")
    return value


pass_ctx = click.make_pass_decorator(Ctx)

# -- options shared by several nouns -------------------------------------------------------

output_option = click.option(
    "--output",
    "-o",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
submit_option = click.option(
    "--submit", "submit_only", is_flag=True, help="Submit and print the job id; do not wait."
)
priority_option = click.option(
    "--priority",
    default="normal",
    show_default=True,
    help="low, normal, high or a number -20..19 (lower runs first).",
)


def priority_value(value: str) -> int:
    """The ``--priority`` option as a number; raises click.BadParameter."""
    from extjobs.model.jobs import PRIORITY_NAMES, parse_priority

    try:
        return parse_priority(value if value in PRIORITY_NAMES else int(value))
    except (ValueError, ExtJobsError) as exc:
        raise click.BadParameter(str(exc), param_hint="--priority") from None


# -- errors and exit codes ---------------------------------------------------------------


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr and exit with ``code``."""
    output.err_console.print(Text("error:", style="red"), Text(output.printable(message)))
    sys.exit(code)


def check_arguments(argv: Sequence[str]) -> None:
    """Exit 2 naming the first argument that is not valid UTF-8 (Python hands such bytes
    over as lone surrogates, which no request to the daemon can carry)."""
    for number, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            fail(
                f"argument {number} ({shown!r}) is not valid UTF-8: names, values and paths "
                "must be UTF-8 text (a job file can be given on stdin as -)",
                2,
            )


def run_command_line(root: click.Group) -> None:
    """Run the command tree; an error from the daemon (ApiError) or from building a
    request (InputError and the other ExtJobsErrors) exits 1 with its message, an
    argument that is not UTF-8 exits 2."""
    check_arguments(sys.argv[1:])
    try:
        root(standalone_mode=True)
    except ExtJobsError as exc:
        fail(exc.message, 1)


# -- submitting opcodes and following jobs -------------------------------------------------


def follow_job(client: Client, job_id: int, *, quiet: bool = False) -> dict[str, Any]:
    """Show a job's log as it happens (a spinner on a terminal); return its final state."""
    job: dict[str, Any] = {}
    if output.is_tty() and not quiet:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("job {task.fields[job]} {task.description}"),
            TimeElapsedColumn(),
            console=output.console,
            transient=True,
        ) as progress:
            task = progress.add_task("queued", job=job_id)
            for job, entries in client.follow(job_id):
                for entry in entries:
                    for line in output.log_lines(entry):
                        progress.console.print(Text(line))
                progress.update(task, description=job["status"])
    else:
        for state, entries in client.follow(job_id):
            job = state
            if not quiet:
                for entry in entries:
                    for line in output.log_lines(entry):
                        click.echo(line)
    return job


def finish(client: Client, job_id: int) -> dict[str, Any]:
    """Follow a job to its end and return it in full; exit 1 with its errors unless it
    succeeded."""
    follow_job(client, job_id)
    full = client.job(job_id)
    if full["status"] != "success":
        errors = [op["error"]["message"] for op in full["ops"] if op.get("error")]
        fail(f"job {job_id} {full['status']}: " + ("; ".join(errors) or "no details"))
    return full


def run_opcode(
    ctx: Ctx, op: OpCode, *, submit_only: bool = False, priority: int = 0
) -> dict[str, Any] | None:
    """Submit ``op`` as a job of its own and follow it with progress.

    Returns the finished job, or None with ``submit_only`` (the job id is printed).
    Exits 1 when the job did not succeed.
    """
    from extjobs.model.opcodes import encode_opcode

    with ctx.client() as client:
        job_id = client.submit_ops([encode_opcode(op)], priority=priority)
        if submit_only:
            click.echo(job_id)
            return None
        output.say(f"job {job_id} submitted", err=True)
        return finish(client, job_id)


def run_quiet(ctx: Ctx, op: OpCode, what: str) -> Any:
    """Submit one opcode, wait for it without showing its log, and return its result;
    exit 1 with the job's errors when it did not succeed."""
    from extjobs.model.opcodes import encode_opcode

    with ctx.client() as client:
        job_id = client.submit_ops([encode_opcode(op)])
        follow_job(client, job_id, quiet=True)
        full = client.job(job_id)
    if full["status"] != "success":
        errors = [o["error"]["message"] for o in full["ops"] if o.get("error")]
        fail(f"{what} job {job_id} {full['status']}: {'; '.join(errors)}")
    return full["ops"][0]["result"]


def migration_default_options(fallback: str) -> Callable[[Any], Any]:
    """``--max-downtime``, ``--bandwidth`` and ``--converge-timeout`` of ``cluster
    modify`` / ``group modify``: defaults of the instances' migrations; 0 clears one,
    so that ``fallback`` gives it."""

    def decorate(func: Any) -> Any:
        for option in reversed(
            [
                click.option(
                    "--max-downtime",
                    type=click.IntRange(min=0),
                    metavar="MS",
                    help=f"Default longest pause at a migration's switch-over, in ms "
                    f"(0: {fallback}).",
                ),
                click.option(
                    "--bandwidth",
                    type=click.IntRange(min=0),
                    metavar="MIB_PER_S",
                    help=f"Default bandwidth of a migration, in MiB/s (0: {fallback}).",
                ),
                click.option(
                    "--converge-timeout",
                    type=click.FloatRange(min=0),
                    metavar="SECONDS",
                    help=f"Default time a migration may take to converge (0: {fallback}).",
                ),
            ]
        ):
            func = option(func)
        return func

    return decorate


def echo_migration_defaults(where: str, values: dict[str, Any], fallback: str) -> None:
    """One line per migration default just set or cleared."""
    units = {"max_downtime": "ms", "bandwidth": "MiB/s", "converge_timeout": "s"}
    for field, value in values.items():
        shown = f"{value:g} {units[field]}" if value else f"not set ({fallback})"
        click.echo(f"{where}: migration {field.replace('_', ' ')} {shown}")


def migration_defaults(
    max_downtime: int | None, bandwidth: int | None, converge_timeout: float | None
) -> dict[str, Any]:
    """The migration defaults given on a ``cluster/group modify`` command line (0 clears
    one), by opcode field."""
    given = {
        "max_downtime": max_downtime,
        "bandwidth": bandwidth,
        "converge_timeout": converge_timeout,
    }
    return {k: v for k, v in given.items() if v is not None}
