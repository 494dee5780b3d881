"""`topic-sync db`, `purge`, `schedule`, `emulator` and `demo`: setting up and running the
service, and keeping its history in bounds."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

import click

from topic_sync.app import commands
from topic_sync.app.services import database_url
from topic_sync.app.shutdown import PROCESS as shutdown
from topic_sync.cli.options import (
    DATABASE,
    env_option,
    json_option,
    resolved,
    settings,
    with_config,
)
from topic_sync.cli.output import cli_io, emit_result, errors_to_exit, finish, say
from topic_sync.errors import BadInput


@click.group()
def db() -> None:
    """Manage topic-sync's PostgreSQL schema."""


@db.command("upgrade")
@settings(*DATABASE)
@with_config
@json_option
@errors_to_exit
def db_upgrade(as_json: bool, **params: Any) -> None:
    """Create or migrate the schema to the latest version (alembic upgrade head)."""
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    revision = commands.db_upgrade(settings_, cli_io())
    say(f"database schema is at {revision}")
    if as_json:
        emit_result("db-upgrade", {"revision": revision})


@db.command("stop-embedded")
@settings("embedded_dir")
@with_config
@json_option
@errors_to_exit
def db_stop_embedded(as_json: bool, **params: Any) -> None:
    """Stop the embedded PostgreSQL (of --embedded-dir or the default folder), if it runs.

    Commands start it when no database URL is given and leave it running for the next one.
    """
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    base, running = commands.stop_embedded(settings_, cli_io())
    if running:
        say(f"stopped the embedded PostgreSQL in {base}")
    else:
        say(f"no embedded PostgreSQL runs in {base}")
    if as_json:
        emit_result("db-stop-embedded", {"folder": str(base), "was_running": running})


@click.command()
@settings("retention", "live", *DATABASE, live="purge")
@with_config
@json_option
@errors_to_exit
def purge(as_json: bool, **params: Any) -> None:
    """Delete per-token failure rows older than --older-than (default 90d), in batches.

    Kept whatever their age: run summaries, the subscription table, tokens and their marks,
    the failures of each campaign's latest run and unresolved failures of owed work.
    A dry run (the default) counts what --live would delete.
    """
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    io = cli_io(should_stop=shutdown.should_stop)
    with shutdown.on_signals(say):
        result = commands.purge(settings_, io)
    if as_json:
        emit_result("purge", result.summary())


@click.command()
@settings(*DATABASE)
@with_config
@errors_to_exit
def schedule(**params: Any) -> None:
    """Run every campaign daily at its configured time, in the foreground.

    Jobs are kept in PostgreSQL: after a restart, a run missed by less than the
    configuration's grace period is run once; older ones are logged and skipped.
    SIGTERM/SIGINT: the run in flight stops after its current batch; the next start
    resumes it.
    """
    from topic_sync.app import scheduler

    if params.get("config") is None:
        raise BadInput("schedule needs --config (or TOPIC_SYNC_CONFIG)")
    settings_ = resolved(click.get_current_context(), params, need_campaign=False)
    assert settings_.config is not None
    io = cli_io(sleep=shutdown.sleep, should_stop=shutdown.should_stop)
    commands.check_database(settings_, io)
    with shutdown.on_signals(say):
        scheduler.serve(settings_.config, database_url(settings_.settings, io), io, shutdown)


@click.command()
@env_option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@env_option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9099,
    show_default=True,
    help="Port to listen on (0: any free port, printed when ready).",
)
def emulator(host: str, port: int) -> None:
    """Run the local FCM emulator in the foreground (for rehearsals and tests)."""
    from topic_sync.emulator import FcmEmulator, is_loopback, serve

    if not is_loopback(host):
        say(
            f"WARNING: binding the emulator to {host}: anyone who can reach it can read every "
            "token it holds and change its state through /emulator/ (no credentials are "
            "asked). It is for rehearsals and tests on this machine: prefer 127.0.0.1"
        )

    def ready(emu: FcmEmulator) -> None:
        # What the process holds once started (its modules: some 80,000 objects) lives as
        # long as it does: left to the collector, each full collection walked it, pausing
        # every connection for 35-45 ms, and a quota counted the backlog's arrivals at once.
        gc.freeze()
        say(f"FCM emulator listening on {emu.host_port}")
        say(f"  export FCM_EMULATOR_HOST={emu.host_port}")

    serve(host, port, ready=ready)


@click.command()
@env_option("--days", type=click.IntRange(1, 30), default=3, show_default=True, help="Days to run.")
@env_option(
    "--size", type=click.IntRange(10), default=3000, show_default=True, help="Audience size."
)
@env_option(
    "--workdir", type=click.Path(path_type=Path), default=None, help="Where to write inputs."
)
@settings(*DATABASE)
@json_option
@errors_to_exit
def demo(days: int, size: int, workdir: Path | None, as_json: bool, **params: Any) -> None:
    """Rehearse a few days end to end on a fresh demo database and the local emulator.

    Writes sample audiences with daily churn, runs each day live against an
    in-process FCM emulator and checks that each day's message reached exactly
    that day's valid audience.
    """
    from topic_sync.app.demo import rehearse, render

    settings_ = resolved(click.get_current_context(), params)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="topic-sync-demo-"))
    outcome = rehearse(settings_.settings, cli_io(), days=days, size=size, workdir=workdir)
    if as_json:
        say(render(outcome.days))
        days_ = [{**vars(day), "day": day.day.isoformat()} for day in outcome.days]
        emit_result("demo", {"exit_code": int(outcome.exit_code), "days": days_})
    else:
        click.echo(render(outcome.days))
    if outcome.exit_code:
        say("topic-sync: a day's recipients differed from its audience")
    else:
        say("every day's message reached exactly that day's valid audience")
    finish(outcome.exit_code)
