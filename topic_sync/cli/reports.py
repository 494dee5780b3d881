"""`topic-sync report` and `topic-sync status`: what failed and why, and whether days went out."""

from __future__ import annotations

from typing import Any

import click

from topic_sync.app import commands, report
from topic_sync.cli.options import (
    DATABASE,
    env_option,
    json_option,
    resolved,
    settings,
    with_config,
)
from topic_sync.cli.output import cli_io, emit_result, errors_to_exit, finish
from topic_sync.errors import BadInput


@click.command("report")
@env_option("--date", "day", default=None, help="Failures of the run of this date.")
@env_option("--run", "run_id", type=int, default=None, help="Failures of this run id.")
@env_option("--code", default=None, help="Only this error code (see the error table).")
@env_option(
    "--op", type=click.Choice(["subscribe", "unsubscribe"]), default=None, help="Only this op."
)
@settings("topic_prefix")
@env_option("--failed", "list_failed", is_flag=True, help="List failed tokens even with no filter.")
@env_option("--runs", "list_runs", is_flag=True, help="Show the history of recent runs.")
@env_option(
    "--dead",
    "list_dead",
    is_flag=True,
    help="List tokens marked dead (never sent to again): reason, when, dates.",
)
@env_option(
    "--all",
    "include_resolved",
    is_flag=True,
    help="Everything: failures later resolved too, and no row limit.",
)
@env_option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="At most this many rows [default: 10 runs, 1000 failed tokens, 10 tokens per "
    "group of the overview].",
)
@env_option(
    "--format",
    "fmt",
    type=click.Choice(report.FORMATS),
    default="table",
    show_default=True,
    help="Output format; the JSON shape is versioned and stable.",
)
@json_option
@env_option("--full-tokens", is_flag=True, help="Show tokens whole (they are device identifiers).")
@settings(*DATABASE)
@with_config
@errors_to_exit
def report_command(
    day: str | None,
    run_id: int | None,
    code: str | None,
    op: str | None,
    list_failed: bool,
    list_runs: bool,
    list_dead: bool,
    include_resolved: bool,
    limit: int | None,
    fmt: str,
    as_json: bool,
    full_tokens: bool,
    **params: Any,
) -> None:
    """Which tokens failed and why; the history of recent runs with --runs.

    With no filter: per campaign, its latest run (published or why not, counts) followed
    by that run's unresolved failed tokens, grouped by error code and operation. A filter
    (--date, --run, --code, --op, --failed) lists failed tokens one per row; --runs shows
    per run: date, topic, audience, added, removed, failures per code, retries, duration.
    --dead lists the tokens marked dead. --json (--format json) prints one JSON object.
    """
    if as_json:
        if fmt not in ("table", "json"):
            raise BadInput(f"--json is --format json: it does not go with --format {fmt}")
        fmt = "json"
    settings_ = resolved(click.get_current_context(), params, day=day, need_campaign=False)
    query = commands.ReportQuery(
        date=day,
        run_id=run_id,
        code=code,
        op=op,
        list_failed=list_failed,
        list_runs=list_runs,
        list_dead=list_dead,
        include_resolved=include_resolved,
        limit=limit,
    )
    outcome = commands.answer_report(settings_, cli_io(), query)
    if outcome.dead is not None:
        click.echo(report.render_dead(outcome.dead, fmt, full_tokens=full_tokens))
    elif outcome.failures is not None:
        click.echo(report.render_failures(outcome.failures, fmt, full_tokens=full_tokens))
    elif outcome.overview is not None:
        shown = report.render_overview(outcome.overview, outcome.runs, fmt, full_tokens=full_tokens)
        click.echo(shown)
    else:
        click.echo(report.render_runs(outcome.runs, fmt))


@click.command()
@settings("topic_prefix", *DATABASE)
@with_config
@json_option
@errors_to_exit
def status(as_json: bool, **params: Any) -> None:
    """The latest run of each campaign at a glance.

    Exits 4 if the latest run of a campaign did not publish (1 if nothing ever ran), so
    monitoring can alert on it. A publish FCM accepted that the database could not record
    shows as such when this host kept its evidence (it went out: do not resend).
    """
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    outcome = commands.status(settings_, cli_io())
    if as_json:
        emit_result(
            "status",
            {
                "exit_code": int(outcome.exit_code),
                "runs": [
                    {**report.run_record(run), "unrecorded_message_id": run.unrecorded}
                    for run in outcome.latest
                ],
            },
        )
    else:
        click.echo(report.render_status(outcome.latest))
    finish(outcome.exit_code)
