"""`topic-sync reconcile`, `forget` and `target`: the repairs, and the state's FCM target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from topic_sync.app import commands
from topic_sync.cli.options import (
    DATABASE,
    FCM,
    MONITORING,
    WORK,
    backfill_option,
    env_option,
    full_tokens_option,
    json_option,
    resolved,
    settings,
    with_config,
)
from topic_sync.cli.output import (
    cli_io,
    describe_reconcile,
    emit_result,
    errors_to_exit,
    finish,
    say,
    show_reconcile,
    use_log_format,
)


@click.command()
@env_option("--topic", "topics", multiple=True, help="A topic to repair (repeatable).")
@settings("topic_prefix", "pool_size")
@env_option(
    "--date", "day", default=None, help="Only the topic this date's run chose (with a prefix)."
)
@settings("live", live="reconcile")
@env_option(
    "--full", is_flag=True, help="Re-assert every subscription and removal the table holds."
)
@env_option("--audit", is_flag=True, help="List each token's topics in FCM and compare (v1 API).")
@env_option(
    "--sample", type=click.IntRange(1), default=None, help="Audit a random sample of N tokens."
)
@settings(*WORK)
@settings(*MONITORING)
@backfill_option
@full_tokens_option
@with_config
@json_option
@errors_to_exit
def reconcile(
    topics: tuple[str, ...],
    day: str | None,
    full: bool,
    audit: bool,
    sample: int | None,
    backfill: bool,
    full_tokens: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Repair what runs left pending or failed; never publishes.

    Re-drives pending and retryable tokens, removes invalid and forgotten tokens from
    the pool, and with --full or --audit checks FCM against the table. After it, a
    withheld day is published by rerunning `topic-sync run --date D`.
    """
    settings_ = resolved(click.get_current_context(), params, day=day)
    s = settings_.settings
    use_log_format(s.log_format, "audit" if audit else "reconcile", s.topic_prefix)
    scope = commands.Scope(topics=topics, day=day)
    outcome = commands.reconcile_topics(
        settings_, cli_io(), scope, full=full, audit=audit, sample=sample, backfill=backfill
    )
    show_reconcile(outcome.result, full_tokens=full_tokens)
    if outcome.problem:
        say(f"topic-sync: {outcome.problem}")
    if as_json:
        emit_result(
            "audit" if audit else "reconcile",
            {
                **outcome.result.summary(),
                "exit_code": int(outcome.exit_code),
                "metrics_errors": outcome.metrics_errors,
            },
        )
    finish(outcome.exit_code)


@click.command()
@click.argument("tokens", nargs=-1)
@env_option(
    "--from-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read tokens to forget from this file (one per line, or a CSV token column).",
)
@env_option(
    "--undo",
    is_flag=True,
    help="Take the tokens off the suppression list and lift their owed removals: later "
    "audiences include them again.",
)
@settings("live", *WORK, live="forget")
@with_config
@json_option
@errors_to_exit
def forget(
    tokens: tuple[str, ...], from_file: Path | None, undo: bool, as_json: bool, **params: Any
) -> None:
    """Mark tokens as gone (logout, deleted account) and remove them from every topic.

    Later audiences skip them (the suppression list). Dry run unless --live: it counts
    what it would mark and queue, and changes nothing. With --live the removals are queued
    and sent to FCM at once. --undo reverses a forget: the tokens leave the suppression
    list and the removals it queued that are still owed are lifted (also only with --live).
    """
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    outcome = commands.forget(settings_, cli_io(), tokens, from_file, undo=undo)
    if outcome.repaired is not None:
        say(describe_reconcile(outcome.repaired.result))
    if as_json:
        emit_result("forget", outcome.summary())
    finish(outcome.exit_code)


@click.group("target")
def target() -> None:
    """Which FCM target (project and endpoint) the database's state belongs to."""


@target.command("show")
@settings(*DATABASE)
@with_config
@json_option
@errors_to_exit
def target_show(as_json: bool, **params: Any) -> None:
    """Print the FCM target the state is bound to (bound by the first live command)."""
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    bound = commands.target_show(settings_, cli_io())
    text = f"bound to {bound}" if bound else "not bound yet: the first live command binds it"
    if as_json:
        say(text)  # stdout holds the one JSON object
    else:
        click.echo(text)
    if as_json:
        shown = {"project_id": bound.project_id, "endpoint": bound.endpoint} if bound else None
        emit_result("target", {"target": shown})


def _change(reset: bool, as_json: bool, params: dict[str, Any]) -> None:
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    change = commands.target_change(settings_, cli_io(), reset=reset)
    before = str(change.before) if change.before else "nothing (not bound)"
    verb = "now bound" if change.live else "would be bound (dry run; pass --live to apply)"
    say(f"state of this database: was bound to {before}; {verb} to {change.after}")
    if change.reset:
        cleared = ", ".join(f"{n} {kind}" for kind, n in change.cleared.items())
        done = "deleted or cleared" if change.live else "would be deleted or cleared"
        say(f"  reset: {cleared} {done}; tokens and forgotten marks kept")
    if as_json:
        emit_result(
            "target",
            {
                "live": change.live,
                "before": vars(change.before) if change.before else None,
                "after": vars(change.after),
                "cleared": change.cleared,
            },
        )


@target.command("bind")
@settings("live", *FCM, *DATABASE, live="target")
@with_config
@json_option
@errors_to_exit
def target_bind(as_json: bool, **params: Any) -> None:
    """Declare the state to belong to this target (--project, --emulator-host), keeping it.

    For when the state really is this target's: the same project reached at a new
    emulator port, say. To start over for another target, use `target reset`.
    """
    _change(False, as_json, params)


@target.command("reset")
@settings("live", *FCM, *DATABASE, live="target")
@with_config
@json_option
@errors_to_exit
def target_reset(as_json: bool, **params: Any) -> None:
    """Forget what the state says about FCM and bind it to this target.

    Deletes subscriptions, run and publish records, failures and topic fences, and clears
    dead-token marks; tokens and their forgotten marks are kept. The next run re-subscribes
    its whole audience.
    """
    _change(True, as_json, params)
