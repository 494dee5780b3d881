"""`topic-sync simulate`: what a pool size and policy would have cost over past audiences."""

from __future__ import annotations

from typing import Any

import click

from topic_sync.app import commands
from topic_sync.cli.options import env_option, json_option, resolved, settings, with_config
from topic_sync.cli.output import cli_io, describe_simulation, emit_json, errors_to_exit
from topic_sync.fcm.wire import TOPIC_MANAGEMENT_QUOTA


@click.command()
@click.argument("audiences", nargs=-1, required=True)
@settings("topic_prefix", "pool_size", "pool_policy", "rest_period", "token_column", "database_url")
@env_option(
    "--quota",
    type=click.FloatRange(min=0, min_open=True),
    default=float(TOPIC_MANAGEMENT_QUOTA),
    show_default=True,
    help="FCM topic-management requests per second (one per token on the v1 API): a day "
    "takes at least its operations over this.",
)
@with_config
@json_option
@errors_to_exit
def simulate(audiences: tuple[str, ...], quota: float, as_json: bool, **params: Any) -> None:
    """Replay past audience files: each day's topic, additions, removals, operations and
    time at the quota, for the pool policy next to the ordinal rule, and their totals.

    AUDIENCES are files, folders or quoted globs ('reco/2026-1*.csv.gz'), each file one
    day dated by its name (YYYY-MM-DD or YYYYMMDD), read as `run` reads an audience. The
    days run in date order, once a day at the campaign's run time, through run's own
    statements and topic choice, in temporary tables of the database (or the embedded
    one): nothing of the job's state changes. Every token counts as alive.
    """
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    result = commands.simulate_pool(settings_, cli_io(), audiences, quota=quota)
    summary = result.summary()
    if as_json:
        emit_json(summary)
    else:
        click.echo(describe_simulation(summary))
