"""The ``extjobs`` command line: the root group and the list of its commands.

Each noun lives in a module of its own (``cli/job.py``, ``cli/instance.py`` …) built on
the shared plumbing in ``cli/common.py``; this module only puts them together. Commands
talk to the daemon only through the HTTP API. Exit codes: 0 success, 1 the job failed
(or the daemon refused the request), 2 usage error.
"""

from __future__ import annotations

from pathlib import Path

import click

from extjobs.api.client import DEFAULT_TIMEOUT
from extjobs.cli.backup import backup
from extjobs.cli.cluster import cluster
from extjobs.cli.common import Ctx, run_command_line, seconds_option
from extjobs.cli.daemon import daemon, demo
from extjobs.cli.group import group
from extjobs.cli.instance import instance
from extjobs.cli.job import job, submit
from extjobs.cli.node import node
from extjobs.cli.storage import storage
from extjobs.cli.verify import verify
from extjobs.cli.watcher import watcher


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    type=click.Path(path_type=Path),
    envvar="EXTJOBS_SOCKET",
    help="The daemon's API socket (default: EXTJOBS_SOCKET, else the configured one).",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    envvar="EXTJOBS_TIMEOUT",
    callback=seconds_option,
    help="Seconds the daemon has to answer a request (a long poll: on top of its wait).",
)
@click.version_option(package_name="extjobs")
@click.pass_context
def cli(click_ctx: click.Context, socket: Path | None, timeout: float) -> None:
    """extjobs: jobs for a virtualisation cluster on external shared storage."""
    click_ctx.obj = Ctx(socket, timeout)


cli.add_command(daemon)
cli.add_command(demo)
cli.add_command(submit)
cli.add_command(job)
cli.add_command(cluster)
cli.add_command(group)
cli.add_command(node)
cli.add_command(storage)
cli.add_command(instance)
cli.add_command(verify)
cli.add_command(backup)
cli.add_command(watcher)


def main() -> None:
    """The console script: run the command line and exit with its code."""
    run_command_line(cli)


if __name__ == "__main__":
    main()
