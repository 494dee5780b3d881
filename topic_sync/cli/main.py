"""The `topic-sync` command group: every command, assembled.

Each command lives in a module by what it is for (run, repairs, reports, admin); each
parses its options (generated from the settings table), calls one function of the
application layer, and renders the result. Errors become output in one place
(cli.output.errors_to_exit). Every option can also be set as TOPIC_SYNC_<OPTION>.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from topic_sync import __version__
from topic_sync.cli import admin, campaigns, repairs, reports, simulate
from topic_sync.cli import run as run_commands
from topic_sync.cli.output import emit_json, error_document, say
from topic_sync.errors import ExitCode


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="topic-sync")
@click.option(
    "--debug",
    is_flag=True,
    envvar="TOPIC_SYNC_DEBUG",
    show_envvar=True,
    help="Show the traceback of an unexpected error.",
)
def cli(debug: bool) -> None:
    """Keep an FCM topic's subscribers equal to each day's audience, then publish once."""


@click.group("config")
def config_group() -> None:
    """Inspect the configuration file."""


config_group.add_command(run_commands.config_show)
for command in (
    run_commands.run,
    run_commands.doctor,
    simulate.simulate,
    repairs.reconcile,
    repairs.forget,
    repairs.target,
    campaigns.campaign,
    reports.report,
    reports.status,
    admin.db,
    admin.purge,
    admin.schedule,
    admin.emulator,
    admin.demo,
    config_group,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; usage errors too print exactly one JSON object when --json was given."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args, prog_name="topic-sync", standalone_mode=False)
    except click.ClickException as error:
        if "--json" in args:
            emit_json(error_document(ExitCode.BAD_INPUT, error.format_message()))
        error.show()
        sys.exit(ExitCode.BAD_INPUT if isinstance(error, click.UsageError) else error.exit_code)
    except click.exceptions.Abort:
        say("Aborted!")
        sys.exit(ExitCode.FAILED)
    sys.exit(0)
