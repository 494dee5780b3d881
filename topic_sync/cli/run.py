"""`topic-sync run` and `topic-sync config show`: the day's job, and what settings it would use."""

from __future__ import annotations

from typing import Any

import click

from topic_sync.app import commands
from topic_sync.app.shutdown import PROCESS as shutdown
from topic_sync.cli.options import (
    WORK,
    backfill_option,
    env_option,
    full_tokens_option,
    json_option,
    resolved,
    settings,
    with_config,
)
from topic_sync.cli.output import cli_io, describe_run, emit_json, errors_to_exit, finish, say

RUN = (
    "topic_prefix",
    "pool_size",
    "audience",
    "message",
    "message_type_key",
    "message_version_key",
    "live",
    "max_churn",
    "allow_large_churn",
    "propagation_delay",
    *WORK,
)


@click.command()
@env_option("--date", "day", required=True, help="The day to run: YYYY-MM-DD, today or yesterday.")
@settings(*RUN)
@env_option(
    "--republish", is_flag=True, help="Resend a publish that was started but never confirmed."
)
@env_option(
    "--mark-published",
    is_flag=True,
    help="A publish that was started but never confirmed did go out: record it, send nothing.",
)
@backfill_option
@full_tokens_option
@with_config
@json_option
@errors_to_exit
def run(
    day: str,
    republish: bool,
    mark_published: bool,
    backfill: bool,
    full_tokens: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Sync the day's topic to the audience and publish the day's message once.

    Dry run unless --live: prints the plan and validates the message with FCM.
    With --config, a campaign supplies whatever the command line does not.
    """
    settings_ = resolved(click.get_current_context(), params, day=day)
    io = cli_io(sleep=shutdown.sleep, should_stop=shutdown.should_stop)
    with shutdown.on_signals(say):
        result = commands.run_day(
            settings_,
            io,
            republish=republish,
            mark_published=mark_published,
            backfill=backfill,
            full_tokens=full_tokens,
        )
    summary = result.summary()
    say(describe_run(summary))
    if as_json:
        emit_json(summary)
    finish(result.exit_code)


@click.command("show")
@env_option("--date", "day", default=None, help="The day a run would be for (default: today).")
@settings(*RUN)
@with_config
@json_option
@errors_to_exit
def config_show(day: str | None, as_json: bool, **params: Any) -> None:
    """Print the settings a `run` would use, each with its source; secrets masked.

    Takes the same options as `run` (e.g. --config F --campaign N --pool-size 9), so it
    shows exactly what that command line would do: flag > env > file > default.
    """
    shown = resolved(click.get_current_context(), params, day=day or "today").shown()
    if day is None:
        shown["date"]["source"] = "default"
    if as_json:
        emit_json(shown)
        return
    width = max(len(name) for name in shown)
    for name, item in sorted(shown.items()):
        value = item["value"]
        if name == "database_url" and value is None:
            value = "(embedded PostgreSQL)"
        click.echo(f"{name.ljust(width)}  {value!s:<40}  {item['source']}")
