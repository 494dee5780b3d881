"""The `topic-sync` command group: every command, assembled.

Each command lives in a module by what it is for (run, repairs, campaigns, reports, admin); each
parses its options (generated from the settings table), calls one function of the
application layer, and renders the result. Errors become output in one place
(cli.output.errors_to_exit). Every option can also be set as TOPIC_SYNC_<OPTION>.

A command's module is imported only when that command runs (`--help` imports them all):
each brings its part of the application, and importing every one of them took seconds of
a day's run on a loaded machine.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from topic_sync import __version__
from topic_sync.cli.output import LOG, emit_json, error_document, say
from topic_sync.errors import ExitCode


class LazyGroup(click.Group):
    """A group whose commands are `(module, attribute)` pairs, imported when asked for."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


COMMANDS = {
    "run": ("topic_sync.cli.run", "run"),
    "doctor": ("topic_sync.cli.run", "doctor_command"),
    "simulate": ("topic_sync.cli.simulate", "simulate"),
    "reconcile": ("topic_sync.cli.repairs", "reconcile"),
    "forget": ("topic_sync.cli.repairs", "forget"),
    "target": ("topic_sync.cli.repairs", "target"),
    "campaign": ("topic_sync.cli.campaigns", "campaign"),
    "report": ("topic_sync.cli.reports", "report_command"),
    "status": ("topic_sync.cli.reports", "status"),
    "db": ("topic_sync.cli.admin", "db"),
    "purge": ("topic_sync.cli.admin", "purge"),
    "schedule": ("topic_sync.cli.admin", "schedule"),
    "emulator": ("topic_sync.cli.admin", "emulator"),
    "demo": ("topic_sync.cli.admin", "demo"),
}
"""Every command: its name, and where it is defined."""


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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


@click.group("config", cls=LazyGroup, lazy={"show": ("topic_sync.cli.run", "config_show")})
def config_group() -> None:
    """Inspect the configuration file."""


cli.add_command(config_group)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI; usage errors too print exactly one JSON object when --json was given."""
    args = list(sys.argv[1:] if argv is None else argv)
    LOG.begin()
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


def entry() -> None:
    """The process's own entry (the `topic-sync` script, `python -m topic_sync.cli`).

    At exit the interpreter's last garbage collections walk every object the process still
    holds, most of them the modules' (firebase-admin, google-auth, SQLAlchemy): about 0.1 s
    of every command, more on a loaded machine. A process about to end has no garbage
    worth collecting, so what it holds is frozen out of those collections. Files and
    connections are closed by the code that opened them, and atexit handlers still run."""
    try:
        main()
    finally:
        gc.freeze()
