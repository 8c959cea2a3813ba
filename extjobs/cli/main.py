"""The ``extjobs`` command line: the root group and the list of its commands.

Each noun lives in a module of its own (``cli/job.py``, ``cli/instance.py`` …) built on
the shared plumbing in ``cli/common.py``; this module only puts them together. Commands
talk to the daemon only through the HTTP API. Exit codes: 0 success, 1 the job failed
(or the daemon refused the request), 2 usage error.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from extjobs.api.client import DEFAULT_TIMEOUT
from extjobs.cli.common import Ctx, run_command_line, seconds_option


class LazyGroup(click.Group):
    """A group whose commands are imported when one is run (or listed by ``--help``).

    ``extjobs job list`` imports ``cli/job.py`` and what it needs, not the modules of
    every other noun (and through them every opcode class): the CLI's start-up is most
    of the time a short command takes. :meth:`add_lazy` names a command by
    ``module:attribute``; :meth:`add_command` still takes a command object.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, str] = {}

    def add_lazy(self, name: str, target: str) -> None:
        self.lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command), self.lazy[cmd_name]
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


assert isinstance(cli, LazyGroup)
cli.add_lazy("daemon", "extjobs.cli.daemon:daemon")
cli.add_lazy("demo", "extjobs.cli.daemon:demo")
cli.add_lazy("submit", "extjobs.cli.job:submit")
cli.add_lazy("job", "extjobs.cli.job:job")
cli.add_lazy("cluster", "extjobs.cli.cluster:cluster")
cli.add_lazy("group", "extjobs.cli.group:group")
cli.add_lazy("node", "extjobs.cli.node:node")
cli.add_lazy("storage", "extjobs.cli.storage:storage")
cli.add_lazy("instance", "extjobs.cli.instance:instance")
cli.add_lazy("verify", "extjobs.cli.verify:verify")
cli.add_lazy("backup", "extjobs.cli.backup:backup")
cli.add_lazy("watcher", "extjobs.cli.watcher:watcher")


def main() -> None:
    """The console script: run the command line and exit with its code."""
    run_command_line(cli)


if __name__ == "__main__":
    main()
