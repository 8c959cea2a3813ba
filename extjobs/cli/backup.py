"""``extjobs backup FILE``: a consistent copy of the daemon's store, taken while it runs.

The daemon writes the copy (the CLI only talks to the API), so FILE is a path on the
daemon's machine; a relative one is taken from this command's working directory. Restore
with ``extjobs daemon --restore FILE``, then run ``extjobs verify``.
"""

from __future__ import annotations

from pathlib import Path

import click

from extjobs.cli import output
from extjobs.cli.common import Ctx, output_option, pass_ctx


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@output_option
@pass_ctx
def backup(ctx: Ctx, file: Path, fmt: str) -> None:
    """Copy the daemon's store to FILE (a new file) while the daemon runs.

    The copy is one consistent snapshot even while jobs are being written. FILE must not
    exist and its directory must. Restore with 'extjobs daemon --restore FILE', then
    'extjobs verify'.
    """
    with ctx.client() as client:
        answer = client.backup(str(file.absolute()))
    if fmt == "json":
        output.emit_json(answer)
        return
    output.console.print(
        f"backup written to {answer['path']}: {answer['jobs']} jobs, "
        f"{answer['bytes']} bytes in {answer['seconds']} s",
        markup=False,
    )
