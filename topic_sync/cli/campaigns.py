"""`topic-sync campaign show` and `campaign update`: a campaign's recorded identity."""

from __future__ import annotations

from typing import Any

import click

from topic_sync.app import commands
from topic_sync.cli.options import env_option, json_option, resolved, settings, with_config
from topic_sync.cli.output import cli_io, emit_json, errors_to_exit


@click.group("campaign")
def campaign() -> None:
    """A campaign's recorded identity: name, topic prefix, pool size and time zone."""


def _params(name: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """NAME also picks the configuration file's campaign, when a file is given."""
    if name is not None and params.get("config") is not None and params.get("campaign") is None:
        params = {**params, "campaign": name}
    return params


@campaign.command("show")
@click.argument("name", required=False)
@settings("database_url")
@with_config
@json_option
@errors_to_exit
def campaign_show(name: str | None, as_json: bool, **params: Any) -> None:
    """Print every recorded campaign (or NAME) and each change made to it.

    A campaign is recorded by its first live run; `run`, `reconcile` and `report` find it
    by the configuration file's campaign name, or without a file by the topic prefix.
    """
    ctx = click.get_current_context()
    settings_ = resolved(ctx, _params(name, params), need_campaign=False)
    views = commands.campaign_show(settings_, cli_io(), name)
    if as_json:
        emit_json(
            {
                "campaigns": [
                    {
                        **view.record.identity(),
                        "created_at": view.record.created_at.isoformat(),
                        "target": vars(view.target) if view.target else None,
                        "changes": [
                            {
                                "kind": str(change.kind),
                                "before": change.before,
                                "after": change.after,
                                "by": change.changed_by,
                                "at": change.changed_at.isoformat(),
                            }
                            for change in view.changes
                        ],
                    }
                    for view in views
                ]
            }
        )
        return
    if not views:
        click.echo("no campaigns recorded yet: a campaign's first live run records it")
    for view in views:
        r = view.record
        pool = r.pool_size if r.pool_size is not None else "not recorded yet (next live run)"
        click.echo(
            f"{r.name}: topic prefix {r.prefix}, pool size {pool}, time zone {r.timezone}, "
            f"FCM target {view.target or 'not bound yet'}"
        )
        for change in view.changes:
            was = f"{change.before} -> " if change.before else ""
            click.echo(
                f"  {change.changed_at:%Y-%m-%d %H:%M:%S %Z}  {change.kind}  {was}{change.after}"
                f"  by {change.changed_by}"
            )


@campaign.command("update")
@click.argument("name", required=False)
@env_option("--name", "new_name", default=None, help="Rename the campaign to this.")
@settings("topic_prefix", "pool_size")
@env_option("--timezone", default=None, help="The campaign's time zone, e.g. Asia/Tokyo.")
@settings("live", "database_url")
@with_config
@json_option
@errors_to_exit
def campaign_update(
    name: str | None,
    new_name: str | None,
    timezone: str | None,
    as_json: bool,
    **params: Any,
) -> None:
    """Change campaign NAME's prefix, pool size, time zone or name, and record the change.

    Dry run unless --live. New values come from the options, else (with --config) from
    the configuration file's campaign: deploy the new configuration, then run this once.
    From then on a run whose configuration still says the old values is refused (exit 2),
    so two hosts mid-rollout never publish a date twice. Waits for no run: refused while
    one of the campaign holds its lock (exit 3).
    """
    ctx = click.get_current_context()
    settings_ = resolved(ctx, _params(name, params), need_campaign=False)
    outcome = commands.campaign_update(
        settings_, cli_io(), name, new_name=new_name, timezone=timezone
    )
    if as_json:
        emit_json(outcome.summary())
