"""``extjobs daemon`` and ``extjobs demo``: the commands that run a master in this process
(the demo with embedded nodes in a temporary directory) instead of talking to one."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from extjobs.cli.common import fail
from extjobs.errors import ExtJobsError
from extjobs.model.config import load_config


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML configuration file.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Override the configured state directory.",
)
@click.option(
    "--restore",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Before starting, replace the store with this backup (made by 'extjobs backup'); "
    "the replaced store is kept beside it. Then run 'extjobs verify'.",
)
@click.option(
    "--quarantine",
    multiple=True,
    metavar="TABLE:KEY",
    help="Before starting, move this unreadable row of the store (named by the error, e.g. "
    "jobs:17) into its quarantine table. Repeatable. Then run 'extjobs verify'.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def daemon(
    config_path: Path | None,
    state_dir: Path | None,
    restore: Path | None,
    quarantine: tuple[str, ...],
    log_level: str,
) -> None:
    """Run the master daemon in the foreground.

    Only one daemon runs on a state directory: a second one exits with status 2 naming
    the pid that holds it. --restore needs that lock too, so it runs with no daemon up.
    """
    from extjobs.daemon import serve_daemon
    from extjobs.nodes import loop

    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # asyncssh logs every channel at INFO; the job log already records each step.
    logging.getLogger("asyncssh").setLevel(
        logging.DEBUG if log_level == "debug" else logging.WARNING
    )
    try:
        config = load_config(config_path, state_dir=state_dir)
        loop.run(lambda: serve_daemon(config, restore=restore, quarantine=quarantine))
    except ExtJobsError as exc:
        fail(exc.message, 2)
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("--keep", is_flag=True, help="Leave the temporary directory in place.")
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="The web dashboard's port on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--stay",
    is_flag=True,
    help="After the mission, keep the cluster (and the dashboard) running until Ctrl-C.",
)
def demo(keep: bool, dashboard_port: int, stay: bool) -> None:
    """Start embedded nodes and a daemon in a temporary directory and run the mission."""
    from extjobs.cli.demo import run_demo

    sys.exit(run_demo(keep=keep, dashboard_port=dashboard_port, stay=stay))
