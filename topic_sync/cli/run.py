"""`topic-sync run`, `doctor` and `config show`: the day's job, whether it could work, and what
settings it would use."""

from __future__ import annotations

from typing import Any

import click

from topic_sync.app import commands, doctor
from topic_sync.app.shutdown import PROCESS as shutdown
from topic_sync.cli.options import (
    backfill_option,
    env_option,
    full_tokens_option,
    json_option,
    resolved,
    resolver,
    settings,
    with_config,
)
from topic_sync.cli.output import (
    cli_io,
    describe_doctor,
    emit_json,
    emit_result,
    errors_to_exit,
    finish,
    log_topic,
    say,
    show_run,
    use_log_format,
)
from topic_sync.config.needs import run_problems
from topic_sync.config.table import SPECS, Kind, run_takes
from topic_sync.dates import format_duration
from topic_sync.engine.publish import Step
from topic_sync.pool import PoolPolicy, topic_for

# Every setting run takes an option for (the table says which): doctor and config show take
# the same, so that they judge and show what that command line would do.
RUN = run_takes()


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
@env_option(
    "--publish-late",
    is_flag=True,
    help="Publish even past publish_by (recorded as late); without it such a day is not sent.",
)
@env_option(
    "--sync-only",
    is_flag=True,
    help="Sync the day now; neither wait nor publish (a later run or --publish-only does).",
)
@env_option(
    "--publish-only",
    is_flag=True,
    help="Publish a day already synced, at publish_at; never sync (refused if not synced).",
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
    publish_late: bool,
    sync_only: bool,
    publish_only: bool,
    backfill: bool,
    full_tokens: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Sync the day's topic to the audience and publish the day's message once.

    Dry run unless --live: prints the plan and validates the message with FCM.
    With --config, a campaign supplies whatever the command line does not.
    With publish_at, the synced day waits for that local time, and is not sent past
    publish_by (exit 13) unless --publish-late.
    """
    if sync_only and publish_only:
        raise click.UsageError("--sync-only and --publish-only exclude each other")
    step = Step.SYNC if sync_only else Step.PUBLISH if publish_only else Step.SYNC_AND_PUBLISH
    settings_ = resolved(click.get_current_context(), params, day=day)
    s = settings_.settings
    topic = None  # the cost policy chooses it once the audience is loaded (topic_chosen)
    ordinal = s.pool_policy == PoolPolicy.ORDINAL
    if ordinal and s.topic_prefix and settings_.day and s.pool_size:
        topic = topic_for(s.topic_prefix, s.pool_size, settings_.day)
    use_log_format(s.log_format, "run", s.topic_prefix, topic)
    io = cli_io(sleep=shutdown.sleep, should_stop=shutdown.should_stop, topic_chosen=log_topic)
    with shutdown.on_signals(say):
        result = commands.run_day(
            settings_,
            io,
            republish=republish,
            mark_published=mark_published,
            publish_late=publish_late,
            step=step,
            backfill=backfill,
            full_tokens=full_tokens,
        )
    show_run(result)
    if as_json:
        emit_result("run", result.summary())
    finish(result.exit_code)


@click.command("doctor")
@env_option(
    "--date",
    "day",
    default="today",
    show_default=True,
    help="The day to check: YYYY-MM-DD, today or yesterday.",
)
@settings(*RUN, live="doctor")
@backfill_option
@with_config
@json_option
@errors_to_exit
def doctor_command(day: str, backfill: bool, as_json: bool, **params: Any) -> None:
    """Check, changing nothing, that `run` with these options could work.

    Takes the same options as `run`. Checks the configuration file, the database
    (reachable, migrated, grants, FCM target), the credentials, FCM's topic API, a
    validate_only send of the day's message, the day's audience file and the pool; prints
    a checklist with a fix for each failure. Exit 0 when nothing failed (warnings
    allowed), 9 otherwise. --live and the guards are accepted so that a run's command
    line can be checked as it is: doctor changes nothing either way.
    """
    resolve = resolver(click.get_current_context(), params, day=day)
    result = doctor.doctor(resolve, cli_io(), backfill=backfill)
    summary = result.summary()
    if as_json:
        say(describe_doctor(summary))
        emit_json(summary)
    else:
        click.echo(describe_doctor(summary))
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
    shows exactly what that command line would do: flag > env > file > default. What run
    would refuse (a required setting missing, two audience sources) is noted on stderr.
    """
    settings_ = resolved(click.get_current_context(), params, day=day or "today")
    for problem in run_problems(settings_).values():
        say(f"note: run would refuse this: {problem}")
    shown = settings_.shown()
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
        elif name in SPECS and SPECS[name].kind is Kind.DURATION:
            value = format_duration(value)  # as typed: 3h, not 10800.0
        click.echo(f"{name.ljust(width)}  {value!s:<40}  {item['source']}")
