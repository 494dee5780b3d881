"""The `topic-sync` command line: a thin layer over the library.

Each command turns options into plain values, builds the dependencies (database
engine, FCM client) and calls one library function. User-facing errors are
turned into a message and an exit code in exactly one place, `_errors_to_exit`.
Every option can also be set as an environment variable TOPIC_SYNC_<OPTION>.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from topic_sync import __version__
from topic_sync.errors import BadInput, TopicSyncError

_app_names = itertools.count()


def _env(name: str) -> str:
    return "TOPIC_SYNC_" + name.upper().replace("-", "_")


def option(*decls: str, **kwargs: Any) -> Callable:
    """A click option that can also come from TOPIC_SYNC_<OPTION>."""
    long = next(d for d in decls if d.startswith("--")).split("/", 1)[0]
    envvar = kwargs.pop("envvar", None)
    envs = [_env(long[2:])] + ([envvar] if envvar else [])
    return click.option(*decls, envvar=envs, show_envvar=True, **kwargs)


def say(message: str) -> None:
    """Output for people goes to stderr; stdout is kept for --json."""
    click.echo(message, err=True)


def _errors_to_exit(func: Callable) -> Callable:
    """The one place where a TopicSyncError becomes output and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            return func(*args, **kwargs)
        except TopicSyncError as error:
            code = error.exit_code
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "status": "error",
                            "exit_code": int(code),
                            "kind": code.name.lower(),
                            "error": error.message,
                        }
                    )
                )
            say(f"topic-sync: {error.message}")
            sys.exit(int(code))

    return wrapper


def _parse_date(value: str, tz=None) -> dt.date:
    """YYYY-MM-DD, or today/yesterday in the given time zone (local time without one)."""
    today = dt.datetime.now(tz).date()
    if value == "today":
        return today
    if value == "yesterday":
        return today - dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadInput(f"--date {value!r}: expected YYYY-MM-DD, 'today' or 'yesterday'") from None


def database_url(explicit: str | None) -> str:
    """The URL to use; without one, start the embedded PostgreSQL and say so."""
    if explicit:
        return explicit
    from topic_sync.store.db import default_data_dir, embedded_url

    data_dir = default_data_dir(os.environ) / "pgdata"
    say(f"DATABASE_URL is not set: using the embedded PostgreSQL in {data_dir}")
    return embedded_url(data_dir)


def open_engine(explicit_url: str | None, *, check: bool = True):
    from sqlalchemy.exc import OperationalError

    from topic_sync.store.db import check_schema, make_engine

    engine = make_engine(database_url(explicit_url))
    if check:
        try:
            check_schema(engine)
        except OperationalError as error:
            engine.dispose()
            raise TopicSyncError(f"cannot reach the database: {error.orig}") from None
    return engine


def _parse_duration(value: str, option_name: str) -> float:
    """'3h', '90m', '1h30m', '45s' or plain seconds."""
    from topic_sync.inputs.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError:
        raise BadInput(
            f"{option_name} {value!r}: expected a duration such as 3h, 90m, 45s"
        ) from None


class ProgressLine:
    """Progress for people: a live line on a terminal, a log line now and then in cron."""

    def __init__(self, *, tty: bool, every: float = 10.0, clock=time.monotonic) -> None:
        self.tty, self.every, self.clock = tty, every, clock
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, p) -> None:
        now = self.clock()
        finished = p.done >= p.total
        with self._lock:
            if not finished and now - self._last < (0.2 if self.tty else self.every):
                return
            self._last = now
            elapsed = max(now - p.started, 1e-6)
            rate = p.done / elapsed
            eta = (p.total - p.done) / rate if rate > 0 and not finished else 0.0
            pct = 100.0 * p.done / p.total if p.total else 100.0
            line = (
                f"{p.op}: {p.done}/{p.total} ({pct:.0f}%) {rate:.0f} tokens/s "
                f"ETA {eta:.0f}s, {p.failed} failed"
            )
            if self.tty:
                click.echo("\r" + line.ljust(78) + ("\n" if finished else ""), err=True, nl=False)
            else:
                say(line)


def fcm_client(transport: str, emulator_host: str | None, project: str | None, pacer=None):
    from topic_sync.fcm.client import make_client
    from topic_sync.fcm.sdk_bridge import initialize_app

    if emulator_host:
        say(f"FCM emulator at {emulator_host}: nothing goes to production FCM")
    try:
        app = initialize_app(
            name=f"topic-sync-{next(_app_names)}-{uuid.uuid4().hex[:6]}",
            project_id=project,
            emulator_host=emulator_host,
            pacer=pacer,
        )
    except (ValueError, OSError) as error:
        from topic_sync.errors import CredentialsError

        raise CredentialsError(f"cannot set up Firebase credentials: {error}") from error
    return make_client(app, transport)


database_option = option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    help="PostgreSQL URL. Unset: an embedded PostgreSQL in the per-user data directory.",
)
json_option = option(
    "--json", "as_json", is_flag=True, help="Print a one-line JSON summary on stdout."
)


def fcm_options(func: Callable) -> Callable:
    func = option(
        "--project",
        envvar="GOOGLE_CLOUD_PROJECT",
        default=None,
        help="Firebase project id (default: from the credentials).",
    )(func)
    func = option(
        "--emulator-host",
        envvar="FCM_EMULATOR_HOST",
        default=None,
        help="host:port of a local FCM emulator; no credentials needed.",
    )(func)
    func = option(
        "--transport",
        type=click.Choice(["v1", "v1-direct", "legacy-iid"]),
        default="v1",
        show_default=True,
        help="v1: FCM topic subscription API via firebase-admin. v1-direct: the same "
        "requests over a lean pool (reaches FCM's quota). legacy-iid: Instance ID batch "
        "API (until 2027-09-29).",
    )(func)
    return func


def work_options(func: Callable) -> Callable:
    """Options shared by every command that talks to FCM in batches: retries, pacing,
    concurrency, deadline, transport, credentials and database."""
    for decorator in reversed(
        [
            option(
                "--retry-min-wait",
                type=click.FloatRange(0),
                default=None,
                help="First retry wait in seconds [default: 60, FCM's guidance].",
            ),
            option(
                "--retry-max-wait",
                type=click.FloatRange(0),
                default=None,
                help="Longest retry wait in seconds [default: 3600].",
            ),
            option(
                "--max-retries",
                type=click.IntRange(0),
                default=None,
                help="Retry rounds for retryable tokens [default: 4].",
            ),
            option(
                "--deadline",
                default="3h",
                show_default=True,
                help="Stop retrying after this long (e.g. 3h, 90m); a rerun continues.",
            ),
            option(
                "--concurrency",
                type=click.IntRange(1, 64),
                default=4,
                show_default=True,
                help="FCM batches in flight at once, each in its own transaction.",
            ),
            option(
                "--max-dead",
                type=click.FloatRange(0, 1),
                default=0.05,
                show_default=True,
                help="Stop, believing no more, once more than this share of the work (at "
                "least 100 tokens) is answered 'dead token': likelier a systemic fault.",
            ),
            option(
                "--rate-limit",
                type=click.FloatRange(0, min_open=True),
                default=3000.0,
                show_default=True,
                help="FCM topic requests per second (one per token on v1), for all workers.",
            ),
            fcm_options,
            database_option,
        ]
    ):
        func = decorator(func)
    return func


@dataclass(frozen=True)
class WorkArgs:
    """The parsed `work_options`, and the dependencies they describe."""

    retry: Any
    deadline: float
    concurrency: int
    max_dead: float
    rate_limit: float
    transport: str
    emulator_host: str | None
    project: str | None
    database_url: str | None

    @classmethod
    def parse(cls, work: dict[str, Any]) -> WorkArgs:
        from topic_sync.engine.retry import RetryPolicy

        default = RetryPolicy()
        try:
            retry = RetryPolicy(
                min_wait=_or(work["retry_min_wait"], default.min_wait),
                max_wait=_or(work["retry_max_wait"], default.max_wait),
                max_retries=_or(work["max_retries"], default.max_retries),
            )
        except ValueError as error:
            raise BadInput(str(error)) from None
        return cls(
            retry=retry,
            deadline=_parse_duration(work["deadline"], "--deadline"),
            concurrency=work["concurrency"],
            max_dead=work["max_dead"],
            rate_limit=work["rate_limit"],
            transport=work["transport"],
            emulator_host=work["emulator_host"],
            project=work["project"],
            database_url=work["database_url"],
        )

    def settings(self) -> dict[str, Any]:
        """The sync settings a run or a repair takes (see sync.WorkSettings)."""
        return {
            "retry": self.retry,
            "concurrency": self.concurrency,
            "deadline": self.deadline,
            "max_dead": self.max_dead,
        }

    def deps(self, shutdown=None):
        from topic_sync.engine.run import Deps
        from topic_sync.fcm.pacer import Pacer

        engine = open_engine(self.database_url)
        pacer = Pacer(self.rate_limit)
        return Deps(
            engine=engine,
            client=fcm_client(self.transport, self.emulator_host, self.project, pacer),
            sleep=shutdown.sleep if shutdown else time.sleep,
            now=lambda: dt.datetime.now(dt.UTC),
            log=say,
            pacer=pacer,
            progress=ProgressLine(tty=sys.stderr.isatty()),
            should_stop=shutdown.should_stop if shutdown else (lambda: False),
        )


# Settings a configuration campaign can supply: run parameter -> campaign key.
_CAMPAIGN_KEYS = {
    "topic_prefix": "topic_prefix",
    "pool_size": "pool_size",
    "message": "message",
}
_SYNC_PARAMS = (
    "max_churn",
    "allow_large_churn",
    "propagation_delay",
    "retry_min_wait",
    "retry_max_wait",
    "max_retries",
    "deadline",
    "concurrency",
    "max_dead",
    "rate_limit",
    "transport",
)


def resolve_settings(ctx: click.Context, params: dict[str, Any]) -> tuple[dict, dict]:
    """Merge the command line, TOPIC_SYNC_* variables, the config file and defaults.

    Returns (effective values, source of each: flag, env, file or default). The date
    is parsed here because 'today' means today in the campaign's time zone.
    """
    import os

    from click.core import ParameterSource

    from topic_sync.inputs.config import load_config

    kinds = {ParameterSource.COMMANDLINE: "flag", ParameterSource.ENVIRONMENT: "env"}
    sources = {name: kinds.get(ctx.get_parameter_source(name), "default") for name in params}
    values = dict(params)
    campaign = cfg = None
    if params.get("config"):
        cfg = load_config(params["config"])
        campaign = cfg.campaign(params.get("campaign"))

    def from_file(name: str, value: Any) -> None:
        if sources[name] == "default" and value is not None:
            values[name], sources[name] = value, "file"

    tz = None
    if campaign is not None and cfg is not None:
        for name, key in _CAMPAIGN_KEYS.items():
            from_file(name, getattr(campaign, key))
        for name in _SYNC_PARAMS:
            if name in values:
                from_file(name, campaign.sync.get(name))
        if "live" in values:
            from_file("live", campaign.mode == "live")
        if "database_url" in values and cfg.database_url:
            from_file("database_url", cfg.resolve_database_url(os.environ))
        if "project" in values:
            from_file("project", cfg.project)
        if "emulator_host" in values:
            from_file("emulator_host", cfg.emulator_host)
        tz = campaign.zone
    if "day" in values and values["day"] is not None:
        values["day"] = _parse_date(values["day"], tz)
        if campaign is not None and sources.get("audience") == "default":
            values["audience"], sources["audience"] = campaign.audience_for(values["day"]), "file"
    return values, sources


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="topic-sync")
def cli() -> None:
    """Keep an FCM topic's subscribers equal to each day's audience, then publish once."""


@cli.group()
def db() -> None:
    """Manage topic-sync's PostgreSQL schema."""


@db.command("upgrade")
@database_option
@_errors_to_exit
def db_upgrade(database_url: str | None) -> None:
    """Create or migrate the schema to the latest version (alembic upgrade head)."""
    from topic_sync.store.db import head_revision, upgrade

    upgrade(globals()["database_url"](database_url))
    say(f"database schema is at {head_revision()}")


config_option = option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML configuration file (campaigns, database, mode, sync settings).",
)
campaign_option = option(
    "--campaign", default=None, help="Campaign of the configuration file (optional if only one)."
)


@cli.command()
@option("--date", "day", required=True, help="The day to run: YYYY-MM-DD, today or yesterday.")
@option("--audience", type=click.Path(path_type=Path), default=None, help="Audience file.")
@option("--message", type=click.Path(path_type=Path), default=None, help="Message JSON file.")
@option("--topic-prefix", default=None, help="Topic pool prefix: topics are PREFIX-<slot>.")
@option("--pool-size", type=int, default=7, show_default=True, help="Topics in the pool.")
@option("--live/--dry-run", default=False, help="Change FCM and publish, or only plan (default).")
@option(
    "--max-churn",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Refuse to remove more than this share of the topic's members.",
)
@option("--allow-large-churn", is_flag=True, help="Skip the churn and empty-audience guard.")
@option("--republish", is_flag=True, help="Resend a publish that was started but never confirmed.")
@option(
    "--mark-published",
    is_flag=True,
    help="A publish that was started but never confirmed did go out: record it, send nothing.",
)
@option(
    "--propagation-delay",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds to let new subscriptions propagate before publishing.",
)
@config_option
@campaign_option
@work_options
@json_option
@_errors_to_exit
def run(
    day: str,
    audience: Path,
    message: Path,
    topic_prefix: str,
    pool_size: int,
    live: bool,
    max_churn: float,
    allow_large_churn: bool,
    republish: bool,
    mark_published: bool,
    propagation_delay: float,
    config: Path | None,
    campaign: str | None,
    as_json: bool,
    **work: Any,
) -> None:
    """Sync the day's topic to the audience and publish the day's message once.

    Dry run unless --live: prints the plan and validates the message with FCM.
    With --config, a campaign supplies whatever the command line does not.
    """
    from topic_sync.engine.run import run_day
    from topic_sync.pool import validate_pool

    params = dict(click.get_current_context().params)
    effective, _sources = resolve_settings(click.get_current_context(), params)
    for name in ("topic_prefix", "audience", "message"):
        if effective.get(name) is None:
            flag = "--" + name.replace("_", "-")
            raise BadInput(f"{flag} is required (or a --config campaign that sets it)")
    topic_prefix, pool_size = effective["topic_prefix"], effective["pool_size"]
    audience, message, live = effective["audience"], effective["message"], effective["live"]
    max_churn, propagation_delay = effective["max_churn"], effective["propagation_delay"]
    allow_large_churn = effective["allow_large_churn"]
    work = {k: effective[k] for k in work}
    validate_pool(topic_prefix, pool_size)
    args = WorkArgs.parse(work)
    try:
        opts = _run_options(
            day=effective["day"],
            prefix=topic_prefix,
            pool_size=pool_size,
            audience_path=audience,
            message_path=message,
            live=live,
            max_churn=max_churn,
            allow_large_churn=allow_large_churn,
            republish=republish,
            mark_published=mark_published,
            propagation_delay=propagation_delay,
            **args.settings(),
        )
    except ValueError as error:
        raise BadInput(str(error)) from None
    from topic_sync.app.shutdown import PROCESS as shutdown

    deps = args.deps(shutdown)
    try:
        with shutdown.on_signals(say):
            result = run_day(opts, deps)
    finally:
        deps.engine.dispose()
    summary = result.summary()
    say(_describe(summary))
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    sys.exit(int(result.exit_code))


def _run_options(**values: Any):
    from topic_sync.engine.run import RunOptions

    return RunOptions(**values)


def _describe(summary: dict) -> str:
    s = summary
    lines = [f"{s['date']} {s['prefix']} -> {s['topic']}: {s['status']}"]
    if s["audience"] is not None:
        lines.append(
            f"  audience {s['audience']} tokens ({s['duplicates']} duplicates merged, "
            f"{s['skipped_invalid']} known-invalid skipped)"
        )
        lines.append(f"  plan: {s['to_remove']} to remove, {s['to_add']} to add")
    if s["status"] != "dry-run":
        lines.append(f"  done: {s['removed']} removed, {s['added']} added")
    if s["failed"]:
        failed = ", ".join(f"{code} {n}" for code, n in sorted(s["failed"].items()))
        lines.append(f"  failed tokens: {failed}")
    if s["message_id"]:
        lines.append(f"  message: {s['message_id']}")
    if s["note"]:
        lines.append(f"  {s['note']}")
    return "\n".join(lines)


def _scope(
    engine, topics: tuple[str, ...], prefix: str | None, pool_size: int, day: str | None
) -> tuple[str, ...]:
    """The topics a repair covers: --topic, else --topic-prefix's pool (or its --date
    topic), else every topic the database knows."""
    from topic_sync.pool import pool_topics, topic_for

    if topics:
        return topics
    if prefix:
        if day:
            return (topic_for(prefix, pool_size, _parse_date(day)),)
        return tuple(pool_topics(prefix, pool_size))
    if day:
        raise BadInput("--date needs --topic-prefix")
    from topic_sync import store

    with engine.connect() as conn:
        return tuple(store.topics_with_rows(conn))


@cli.command()
@option("--topic", "topics", multiple=True, help="A topic to repair (repeatable).")
@option("--topic-prefix", default=None, help="Repair every topic of this pool.")
@option("--pool-size", type=int, default=7, show_default=True, help="Topics in the pool.")
@option("--date", "day", default=None, help="Only the topic of this date (with --topic-prefix).")
@option("--live", is_flag=True, help="Change FCM. Without it: report what would be done.")
@option("--full", is_flag=True, help="Re-assert every subscription and removal the table holds.")
@option("--audit", is_flag=True, help="List each token's topics in FCM and compare (v1 API).")
@option("--sample", type=click.IntRange(1), default=None, help="Audit a random sample of N tokens.")
@work_options
@json_option
@_errors_to_exit
def reconcile(
    topics: tuple[str, ...],
    topic_prefix: str | None,
    pool_size: int,
    day: str | None,
    live: bool,
    full: bool,
    audit: bool,
    sample: int | None,
    as_json: bool,
    **work: Any,
) -> None:
    """Repair what runs left pending or failed; never publishes.

    Re-drives pending and retryable tokens, removes invalid and forgotten tokens from
    the pool, and with --full or --audit checks FCM against the table. After it, a
    withheld day is published by rerunning `topic-sync run --date D`.
    """
    from topic_sync.engine.reconcile import ReconcileOptions
    from topic_sync.engine.reconcile import reconcile as do_reconcile

    if sample and not audit:
        raise BadInput("--sample goes with --audit")
    if audit and work["transport"] != "v1":
        say("note: --audit lists subscriptions through the v1 API whatever the transport")
    args = WorkArgs.parse(work)
    deps = args.deps()
    try:
        scope = _scope(deps.engine, topics, topic_prefix, pool_size, day)
        result = do_reconcile(
            ReconcileOptions(
                topics=scope,
                live=live,
                full=full,
                audit=audit,
                sample=sample,
                **args.settings(),
            ),
            deps,
        )
    finally:
        deps.engine.dispose()
    say(_describe_reconcile(result))
    if as_json:
        click.echo(json.dumps(result.summary(), sort_keys=True))
    if not result.finished:
        from topic_sync.errors import DeadlineReached

        raise DeadlineReached("reconcile's deadline passed with work left; run it again")


def _describe_reconcile(result) -> str:
    mode = "live" if result.live else "dry run (pass --live to apply)"
    lines = [f"reconcile, {mode}:"]
    for t in result.topics:
        line = (
            f"  {t.topic}: owed {t.owed_remove} removals, {t.owed_add} additions; "
            f"{t.stale} invalid/forgotten members"
        )
        if t.full_add or t.full_remove:
            line += f"; --full re-asserts {t.full_add} members, {t.full_remove} removals"
        if result.live:
            line += f" -> removed {t.removed}, added {t.added}; still owed "
            line += f"{t.left_remove} removals, {t.left_add} additions"
        lines.append(line)
    if result.audited:
        lines.append(
            f"  audit: {result.audited} tokens; in FCM but not in the table: "
            f"{result.drift_in_fcm}; in the table but not in FCM: {result.drift_missing}; "
            f"unknown to FCM: {result.unknown_tokens}"
        )
        for d in result.drift:
            where = "FCM holds, table does not" if d.in_fcm else "table holds, FCM does not"
            lines.append(f"    {d.topic}  {d.token}  ({where})")
    if not result.topics:
        lines.append("  nothing to reconcile: no topics known")
    return "\n".join(lines)


@cli.command()
@click.argument("tokens", nargs=-1)
@option(
    "--from-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read tokens to forget from this file (one per line, or a CSV token column).",
)
@option("--live", is_flag=True, help="Also remove them from FCM right away.")
@work_options
@json_option
@_errors_to_exit
def forget(
    tokens: tuple[str, ...], from_file: Path | None, live: bool, as_json: bool, **work: Any
) -> None:
    """Mark tokens as gone (logout, deleted account) and queue their removal from every topic.

    Later audiences skip them. The removal from FCM happens with --live, or at the next
    `topic-sync reconcile --live`.
    """
    import itertools

    from topic_sync.engine.reconcile import ReconcileOptions
    from topic_sync.engine.reconcile import forget as do_forget
    from topic_sync.engine.reconcile import reconcile as do_reconcile
    from topic_sync.inputs.audience import iter_audience, validate_token

    for token in tokens:
        reason = validate_token(token)
        if reason:
            raise BadInput(f"token {token!r}: {reason}")
    if not tokens and not from_file:
        raise BadInput("give tokens to forget, or --from-file")
    args = WorkArgs.parse(work)
    deps = args.deps()
    try:
        source = itertools.chain(tokens, iter_audience(from_file) if from_file else ())
        marked, queued, owing = do_forget(deps, source)
        say(f"forgot {marked} tokens; {queued} removals queued on {len(owing)} topics")
        summary = {"forgotten": marked, "removals_queued": queued, "topics": owing}
        if live and owing:
            result = do_reconcile(
                ReconcileOptions(
                    topics=tuple(owing),
                    live=True,
                    **args.settings(),
                ),
                deps,
            )
            say(_describe_reconcile(result))
            summary["reconcile"] = result.summary()
        elif owing:
            say("run 'topic-sync reconcile --live' (or pass --live) to remove them from FCM")
    finally:
        deps.engine.dispose()
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))


@cli.group("target")
def target_group() -> None:
    """Which FCM target (project and endpoint) the database's state belongs to."""


@target_group.command("show")
@database_option
@json_option
@_errors_to_exit
def target_show(database_url: str | None, as_json: bool) -> None:
    """Print the FCM target the state is bound to (bound by the first live command)."""
    from topic_sync.fcm.target import bound_target

    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            bound = bound_target(conn)
    finally:
        engine.dispose()
    click.echo(f"bound to {bound}" if bound else "not bound yet: the first live command binds it")
    if as_json:
        shown = {"project_id": bound.project_id, "endpoint": bound.endpoint} if bound else None
        click.echo(json.dumps({"target": shown}))


def _target_change(action: str, live: bool, as_json: bool, work: dict[str, Any]) -> None:
    from topic_sync.fcm import target as tgt

    engine = open_engine(work["database_url"])
    try:
        client = fcm_client("v1", work["emulator_host"], work["project"])
        change = (tgt.reset if action == "reset" else tgt.rebind)(engine, client.target, live=live)
    finally:
        engine.dispose()
    before = str(change.before) if change.before else "nothing (not bound)"
    verb = "now bound" if live else "would be bound (dry run; pass --live to apply)"
    say(f"state of this database: was bound to {before}; {verb} to {change.after}")
    if change.reset:
        cleared = ", ".join(f"{n} {kind}" for kind, n in change.cleared.items())
        done = "deleted or cleared" if live else "would be deleted or cleared"
        say(f"  reset: {cleared} {done}; tokens and forgotten marks kept")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "live": live,
                    "before": vars(change.before) if change.before else None,
                    "after": vars(change.after),
                    "cleared": change.cleared,
                },
                sort_keys=True,
            )
        )


@target_group.command("bind")
@option("--live", is_flag=True, help="Re-bind. Without it: say what would change.")
@fcm_options
@database_option
@json_option
@_errors_to_exit
def target_bind(live: bool, as_json: bool, **work: Any) -> None:
    """Declare the state to belong to this target (--project, --emulator-host), keeping it.

    For when the state really is this target's: the same project reached at a new
    emulator port, say. To start over for another target, use `target reset`.
    """
    _target_change("bind", live, as_json, work)


@target_group.command("reset")
@option("--live", is_flag=True, help="Reset. Without it: say what would be deleted.")
@fcm_options
@database_option
@json_option
@_errors_to_exit
def target_reset(live: bool, as_json: bool, **work: Any) -> None:
    """Forget what the state says about FCM and bind it to this target.

    Deletes subscriptions, run and publish records, failures and topic fences, and clears
    dead-token marks; tokens and their forgotten marks are kept. The next run re-subscribes
    its whole audience.
    """
    _target_change("reset", live, as_json, work)


@cli.command()
@config_option
@database_option
@_errors_to_exit
def schedule(config: Path | None, database_url: str | None) -> None:
    """Run every campaign daily at its configured time, in the foreground.

    Jobs are kept in PostgreSQL: after a restart, a run missed by less than the
    configuration's grace period is run once; older ones are logged and skipped.
    SIGTERM/SIGINT: the run in flight stops after its current batch; the next start
    resumes it.
    """
    import os

    from topic_sync.app import scheduler as sched
    from topic_sync.app.shutdown import PROCESS as shutdown
    from topic_sync.inputs.config import load_config

    if config is None:
        raise BadInput("schedule needs --config (or TOPIC_SYNC_CONFIG)")
    cfg = load_config(config)
    url = database_url or cfg.resolve_database_url(os.environ)
    engine = open_engine(url)
    url = engine.url.render_as_string(hide_password=False)
    scheduler = sched.make_scheduler(url)
    sched.watch(scheduler, say)
    scheduler.start(paused=True)
    try:
        changed = sched.install_jobs(scheduler, cfg)
        resumed = sched.resume_interrupted(scheduler, cfg, engine, dt.datetime.now(dt.UTC))
        for name in changed:
            say(f"campaign {name}: schedule installed")
        for name in resumed:
            say(f"campaign {name}: resuming today's interrupted run")
        for line in sched.describe(scheduler):
            say(line)
        scheduler.resume()
        with shutdown.on_signals(say):
            while not shutdown.requested.wait(1.0):
                pass
    finally:
        say("scheduler stopping: waiting for the run in flight to reach a safe point")
        scheduler.shutdown(wait=True)
        engine.dispose()


@cli.command()
@option("--date", "day", default=None, help="Failures of the run of this date.")
@option("--run", "run_id", type=int, default=None, help="Failures of this run id.")
@option("--code", default=None, help="Only this error code (see the error table).")
@option("--op", type=click.Choice(["subscribe", "unsubscribe"]), default=None, help="Only this op.")
@option("--topic-prefix", default=None, help="Only this campaign's topic pool.")
@option("--failed", "list_failed", is_flag=True, help="List failed tokens even with no filter.")
@option("--runs", "list_runs", is_flag=True, help="Show the run summary (the default view).")
@option("--all", "include_resolved", is_flag=True, help="Include failures later resolved.")
@option("--limit", type=click.IntRange(1), default=None, help="At most this many rows.")
@option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format; the JSON shape is versioned and stable.",
)
@option("--full-tokens", is_flag=True, help="Show tokens whole (they are device identifiers).")
@database_option
@_errors_to_exit
def report(
    day: str | None,
    run_id: int | None,
    code: str | None,
    op: str | None,
    topic_prefix: str | None,
    list_failed: bool,
    list_runs: bool,
    include_resolved: bool,
    limit: int | None,
    fmt: str,
    full_tokens: bool,
    database_url: str | None,
) -> None:
    """Failed tokens and why, or (with no filter) a summary of the recent runs.

    The summary shows per run: date, topic, audience, added, removed, failures per code,
    retries, duration, and whether it published, or why not.
    """
    from topic_sync.app import report as rep

    filtered = any(v is not None for v in (day, run_id, code, op)) or list_failed
    engine = open_engine(database_url)
    try:
        if list_runs or not filtered:
            rows = rep.run_summaries(engine, prefix=topic_prefix, limit=limit or 10)
            click.echo(rep.render_runs(rows, fmt))
            return
        flt = rep.FailureFilter(
            date=_parse_date(day) if day else None,
            run_id=run_id,
            code=code,
            op=op,
            prefix=topic_prefix,
            include_resolved=include_resolved,
            limit=limit,
        )
        click.echo(
            rep.render_failures(rep.failed_tokens(engine, flt), fmt, full_tokens=full_tokens)
        )
    finally:
        engine.dispose()


@cli.command()
@option("--topic-prefix", default=None, help="Only this campaign.")
@database_option
@_errors_to_exit
def status(topic_prefix: str | None, database_url: str | None) -> None:
    """The latest run of each campaign at a glance.

    Exits 4 if the latest run of a prefix did not publish (1 if nothing ever ran), so
    monitoring can alert on it.
    """
    from topic_sync.app import report as rep

    engine = open_engine(database_url)
    try:
        latest = rep.latest_runs(engine, topic_prefix)
        click.echo(rep.render_status(latest))
        code = rep.status_exit_code(engine, topic_prefix)
    finally:
        engine.dispose()
    sys.exit(int(code))


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration file."""


@config_group.command(
    "show", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@json_option
@_errors_to_exit
def config_show(run_args: tuple[str, ...], as_json: bool) -> None:
    """Print the settings a `run` would use, each with its source; secrets masked.

    Takes the same options as `run` (e.g. --config F --campaign N --pool-size 9), so it
    shows exactly what that command line would do: flag > env > file > default.
    """
    from topic_sync.engine.retry import RetryPolicy
    from topic_sync.inputs.config import mask_url

    args = list(run_args)
    dated = "--date" in args or any(a.startswith("--date=") for a in args)
    with run.make_context(
        "run", [*args, *([] if dated else ["--date", "today"])], resilient_parsing=True
    ) as sub:
        values, sources = resolve_settings(sub, dict(sub.params))
    if not dated:
        sources["day"] = "default"
    policy = RetryPolicy()
    for name, default in (
        ("retry_min_wait", policy.min_wait),
        ("retry_max_wait", policy.max_wait),
        ("max_retries", policy.max_retries),
    ):
        if values.get(name) is None:
            values[name] = default
    shown = {}
    for name in sorted(values):
        if name in ("as_json",):
            continue
        value = values[name]
        if name == "database_url":
            value = mask_url(value) if value else None
        if isinstance(value, Path | dt.date):
            value = str(value)
        shown[name] = {"value": value, "source": sources[name]}
    if as_json:
        click.echo(json.dumps(shown, sort_keys=True))
        return
    width = max(len(name) for name in shown)
    for name, item in shown.items():
        value = (
            "(embedded PostgreSQL)"
            if name == "database_url" and item["value"] is None
            else item["value"]
        )
        click.echo(f"{name.ljust(width)}  {value!s:<40}  {item['source']}")


@cli.command()
@option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@option("--port", type=int, default=9099, show_default=True, help="Port to listen on.")
def emulator(host: str, port: int) -> None:
    """Run the local FCM emulator in the foreground (for rehearsals and tests)."""
    from topic_sync.emulator import serve

    def ready(emu) -> None:
        say(f"FCM emulator listening on {emu.host_port}")
        say(f"  export FCM_EMULATOR_HOST={emu.host_port}")

    serve(host, port, ready=ready)


@cli.command()
@option("--days", type=click.IntRange(1, 30), default=3, show_default=True, help="Days to run.")
@option("--size", type=click.IntRange(10), default=3000, show_default=True, help="Audience size.")
@option("--workdir", type=click.Path(path_type=Path), default=None, help="Where to write inputs.")
@database_option
@_errors_to_exit
def demo(days: int, size: int, workdir: Path | None, database_url: str | None) -> None:
    """Rehearse a few days end to end on a fresh demo database and the local emulator.

    Writes sample audiences with daily churn, runs each day live against an
    in-process FCM emulator and checks that each day's message reached exactly
    that day's valid audience.
    """
    import tempfile

    from topic_sync.app.demo import render, run_demo
    from topic_sync.emulator import FcmEmulator
    from topic_sync.engine.run import Deps
    from topic_sync.store.db import recreate_database

    url = recreate_database(globals()["database_url"](database_url), "topic_sync_demo")
    from topic_sync.store.db import make_engine, upgrade

    upgrade(url)
    engine = make_engine(url)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="topic-sync-demo-"))
    with FcmEmulator() as emu:
        say(f"demo: database topic_sync_demo, FCM emulator on {emu.host_port}, inputs in {workdir}")
        deps = Deps(
            engine=engine,
            client=fcm_client("v1", emu.host_port, "demo-topic-sync"),
            sleep=time.sleep,
            now=lambda: dt.datetime.now(dt.UTC),
            log=lambda line: say(f"  {line}"),
        )
        results = run_demo(deps, emu, workdir, dt.date.today(), days, size)
    engine.dispose()
    click.echo(render(results))
    if not all(r.exact for r in results):
        raise TopicSyncError("a day's recipients differed from its audience")
    say("every day's message reached exactly that day's valid audience")


def main() -> None:
    cli(prog_name="topic-sync")


if __name__ == "__main__":
    main()
