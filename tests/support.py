"""Helpers the tests share, in one place: databases cloned from a migrated template, audience
files, a recorder for the engine's log and sleeps, and for end-to-end tests the real
`topic-sync` CLI (in this process, or in one of its own) plus snapshots of both sides to prove
what a run changed."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from topic_sync.app import commands
from topic_sync.cli import main
from topic_sync.config.table import DEFAULTS
from topic_sync.emulator import FcmEmulator, Publish
from topic_sync.engine.reconcile import ReconcileOptions
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.run import RunOptions
from topic_sync.pool import PoolPolicy, topic_for
from topic_sync.store import db

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "demo-e2e"
CLI_TIMEOUT = 120.0
# Nothing in an end-to-end run may sleep: no propagation wait, no retry backoff. The tests'
# dates are fixed (so their topics are), hence --backfill for dates far from today.
FAST = (
    "--propagation-delay",
    "0",
    "--retry-min-wait",
    "0",
    "--retry-max-wait",
    "0",
    "--backfill",
)
# Most tests name a date's topic by the ordinal rule (topic_for: the same topic again POOL
# days later), so the helpers below run under it; the cost policy, the default, has its own
# tests (tests/integration/test_pool_choice.py), which ask for it.
ORDINAL = ("--pool-policy", "ordinal")
TABLES = (
    "tokens",
    "subscriptions",
    "runs",
    "run_attempts",
    "token_failures",
    "campaigns",
    "audiences",
)
DAY1 = dt.date(2026, 11, 20)


# --- databases --------------------------------------------------------------------------------


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections for as long as the block runs: bound, never
    listening. (A port bound and closed again can be taken meanwhile by another test's
    server, which then answers instead of refusing.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def with_database(url: str, name: str) -> str:
    """The URL of another database on the same server."""
    return make_url(db.sqlalchemy_url(url)).set(database=name).render_as_string(hide_password=False)


def admin_engine(url: str) -> Engine:
    """An autocommit engine on the server's `postgres` database, to create and drop databases."""
    return create_engine(with_database(url, "postgres"), isolation_level="AUTOCOMMIT", pool_size=1)


def create_database(server_url: str, template: str, prefix: str = "ts") -> tuple[str, str]:
    """A fresh database cloned from `template` (milliseconds); returns (name, URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = admin_engine(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return name, with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    admin = admin_engine(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# Everything about a database that emptying its tables would not put back: its relations
# (and their columns, defaults, grants), constraints, functions, types, triggers, schemas,
# extensions, migration revision, connection settings and prepared transactions.
_FINGERPRINT_SQL = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT format('rel %s.%s %s %s %s', n.nspname, c.relname, c.relkind, c.relpersistence,
                  c.relacl)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
    UNION ALL
    SELECT format('col %s.%s %s %s %s %s %s', c.relnamespace::regnamespace, c.relname,
                  a.attname, a.atttypid::regtype, a.attnotnull, a.attisdropped,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND c.relnamespace NOT IN ('pg_catalog'::regnamespace,
                                                  'information_schema'::regnamespace)
      AND c.relnamespace::regnamespace::text NOT LIKE 'pg\\_toast%'
    UNION ALL
    SELECT format('con %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace,
                                                  'information_schema'::regnamespace)
    UNION ALL
    SELECT format('proc %s %s', p.oid::regprocedure, p.proacl) FROM pg_proc p
    WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    UNION ALL
    SELECT format('type %s.%s', typnamespace::regnamespace, typname) FROM pg_type
    WHERE typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
      AND typnamespace::regnamespace::text NOT LIKE 'pg\\_toast%'
    UNION ALL
    SELECT format('trigger %s %s', tgrelid::regclass, tgname) FROM pg_trigger
    WHERE NOT tgisinternal
    UNION ALL
    SELECT format('schema %s %s', nspname, nspacl) FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%'
    UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('database %s %s', datallowconn, datacl) FROM pg_database
    WHERE datname = current_database()
    UNION ALL
    SELECT format('setting %s', setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT format('prepared %s', gid) FROM pg_prepared_xacts WHERE database = current_database()
    UNION ALL
    SELECT 'revision ' || version_num FROM alembic_version
) AS everything(item)
"""

# The project's tables, each after every table that references it (so rows delete in order).
_TABLES_SQL = """
SELECT c.oid::regclass::text, coalesce(array_agg(DISTINCT f.conrelid::regclass::text)
       FILTER (WHERE f.conrelid IS NOT NULL AND f.conrelid <> c.oid), '{}')
FROM pg_class c
LEFT JOIN pg_constraint f ON f.confrelid = c.oid AND f.contype = 'f'
WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
  AND c.relname <> 'alembic_version'
GROUP BY c.oid
"""


class DatabasePool:
    """Databases as fresh as a clone of the migrated template, for one test process.

    A clone (CREATE DATABASE … TEMPLATE) and its drop cost about 85 ms, a thousand times a
    run. So a database a test is done with is emptied instead: its other sessions ended, its
    rows deleted, its sequences back at their start. That gives the next test what a clone
    would, but only where the test changed nothing but rows; a database whose schema,
    grants, functions, revision or settings now differ from a clone's (a migration test, a
    role's grants, a table of the test's own) is dropped, as is one that cannot be reached.
    """

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url, self.template = server_url, template
        self._free: list[str] = []
        self._fingerprint: str | None = None
        self._delete_order: list[str] = []

    def take(self) -> tuple[str, str]:
        """A fresh database: (name, URL)."""
        if self._free:
            name = self._free.pop()
            return name, with_database(self.server_url, name)
        name, url = create_database(self.server_url, self.template)
        if self._fingerprint is None:
            self._learn(url)
        return name, url

    def give_back(self, name: str) -> None:
        """Empty the database for the next test, or drop it if emptying is not enough."""
        if self._empty(with_database(self.server_url, name)):
            self._free.append(name)
        else:
            drop_database(self.server_url, name)

    def close(self) -> None:
        for name in self._free:
            drop_database(self.server_url, name)
        self._free.clear()

    def _learn(self, url: str) -> None:
        """What a clone looks like, and the order its tables' rows delete in."""
        engine = create_engine(db.sqlalchemy_url(url), poolclass=NullPool)
        try:
            with engine.connect() as conn:
                self._fingerprint = conn.execute(text(_FINGERPRINT_SQL)).scalar_one()
                referenced_by = {
                    table: set(refs) for table, refs in conn.execute(text(_TABLES_SQL))
                }
        finally:
            engine.dispose()
        while referenced_by:
            leaves = sorted(
                t for t, refs in referenced_by.items() if not refs & referenced_by.keys()
            )
            if not leaves:
                raise RuntimeError(f"a cycle of foreign keys among {sorted(referenced_by)}")
            self._delete_order += leaves
            for table in leaves:
                del referenced_by[table]

    def _empty(self, url: str) -> bool:
        engine = create_engine(db.sqlalchemy_url(url), poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SET lock_timeout = '10s'"))  # a lock still held: drop it
                # Sessions the test left open would hold locks (advisory ones included) into
                # the next test: they end first, and are waited for.
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                if conn.execute(text(_FINGERPRINT_SQL)).scalar_one() != self._fingerprint:
                    return False
                for table in self._delete_order:
                    conn.execute(text(f"DELETE FROM {table}"))
                conn.execute(
                    text(
                        "SELECT setval(format('%I.%I', schemaname, sequencename), start_value, "
                        "false) FROM pg_sequences WHERE schemaname = 'public'"
                    )
                )
                conn.commit()
        except DBAPIError:  # gone, refusing connections, or missing what a clone has
            return False
        finally:
            engine.dispose()
        return True


def ensure_campaign(conn: Any, prefix: str, pool_size: int | None = None) -> int:
    """The id of the campaign named after `prefix`, recorded if new (for rows written by
    hand: every run belongs to a campaign)."""
    conn.execute(
        text(
            "INSERT INTO campaigns (name, prefix, pool_size) VALUES (:p, :p, :n) "
            "ON CONFLICT DO NOTHING"
        ),
        {"p": prefix, "n": pool_size},
    )
    return int(conn.scalar(text("SELECT id FROM campaigns WHERE name = :p"), {"p": prefix}))


# --- files and recorders ----------------------------------------------------------------------


def write_audience(path: Path, tokens: Iterable[str]) -> Path:
    path.write_text("".join(f"{t}\n" for t in tokens))
    return path


class VirtualClock:
    """A monotonic clock that moves only when asked: a sleep moves it on (and is kept), and
    `advance` stands for time spent elsewhere (an FCM call)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


class Recorder:
    """Collects what the engine logs and how long it asked to sleep."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sleeps: list[float] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def cli_env(database_url: str, emulator: FcmEmulator, **extra: str) -> dict[str, str]:
    """A CLI run's whole environment: this database, this emulator, no stray TOPIC_SYNC_*."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TOPIC_SYNC_") and key != "GOOGLE_APPLICATION_CREDENTIALS"
    }
    pythonpath = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        DATABASE_URL=database_url,
        FCM_EMULATOR_HOST=emulator.host_port,
        GOOGLE_CLOUD_PROJECT=PROJECT,
        PYTHONPATH=os.pathsep.join(pythonpath),
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def cli_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "topic_sync.cli", *map(str, args)]


@dataclasses.dataclass(frozen=True)
class CliResult:
    """How an in-process `topic-sync` invocation ended, with the fields of a finished process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: Any, env: dict[str, str], input: str | None = None) -> CliResult:
    """Run `topic-sync ARGS...` to completion in this process and capture its output.

    As the CLI's own process would run it: `env` is the whole environment (cli_env), the
    checkout the working directory, warnings ignored, stdin `input` (else empty); an exit is
    the exit code, an exception escaping `main()` a traceback on stderr and exit 1; then the
    environment is put back (each command lets go of its own firebase-admin app). What needs
    a process of its own (signals, a kill, its memory, the embedded server's lifetime,
    concurrent runs) uses run_cli_process."""
    argv = [str(arg) for arg in args]
    environ_before = dict(os.environ)
    runner = CliRunner()
    with (
        runner.isolation(input=input) as (stdout, stderr, _),
        contextlib.chdir(REPO_ROOT),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        os.environ.clear()
        os.environ.update(env)
        try:
            returncode = _exit_status(main, argv)
        finally:
            os.environ.clear()
            os.environ.update(environ_before)
            sys.stdout.flush()
            sys.stderr.flush()
        return CliResult(argv, returncode, stdout.getvalue().decode(), stderr.getvalue().decode())


def _exit_status(main: Callable[[list[str]], None], argv: list[str]) -> int:
    """What the interpreter makes of `main(argv)`'s end: its exit code, or 1 and the message
    or traceback on stderr."""
    try:
        main(argv)
    except SystemExit as end:
        if end.code is None or isinstance(end.code, int):
            return int(end.code or 0)
        print(end.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def run_cli_process(
    *args: Any, env: dict[str, str], timeout: float = CLI_TIMEOUT, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `topic-sync ARGS...` in a process of its own (`python -m topic_sync.cli`), for what
    an in-process run cannot show: the embedded server outliving the command, and the like."""
    return subprocess.run(
        cli_command(*args),
        env=env,
        cwd=REPO_ROOT,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_args(
    day: dt.date | str,
    audience: Path,
    message: Path,
    *,
    prefix: str,
    pool_size: int,
    transport: str = "v1",
    live: bool = True,
    extra: Sequence[str] = (),
    policy: Sequence[str] = ORDINAL,
) -> list[str]:
    """Arguments of `topic-sync run` for one day, with --json and no waiting (under the
    ordinal rule unless `policy` says otherwise: () for the default)."""
    args = [
        "run",
        "--date",
        str(day),
        "--audience",
        str(audience),
        "--message",
        str(message),
        "--topic-prefix",
        prefix,
        "--pool-size",
        str(pool_size),
        "--transport",
        transport,
        "--json",
        *FAST,
        *policy,
        *extra,
    ]
    if live:
        args.append("--live")
    return args


def summary(proc: CliResult | subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON line `--json` prints on stdout."""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout, got {proc.stdout!r}"
    return json.loads(lines[0])


def describe(proc: CliResult | subprocess.CompletedProcess[str]) -> str:
    """For assertion messages: how the process ended and what it said."""
    return f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"


def make_tokens(tag: str, numbers: Iterable[int]) -> list[str]:
    """Plausible, distinct registration tokens (the FCM token alphabet, fixed length)."""
    return [f"{tag}{n:05d}:APA91bE2e_{n * 7919 % 100003:06d}-tok" for n in numbers]


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def db_snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every topic-sync table, in a stable order."""
    with engine.connect() as conn:
        return {
            table: sorted(
                (tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}"))), key=repr
            )
            for table in TABLES
        }


def record_planned_day(
    engine: Engine, prefix: str, pool_size: int, day: dt.date, topic: str, status: str = "withheld"
) -> None:
    """A run row written by hand: the campaign's `day` planned on `topic` (not published)."""
    with engine.begin() as conn:
        campaign = ensure_campaign(conn, prefix, pool_size)
        conn.execute(
            text(
                "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, status) "
                "VALUES (:c, :p, :d, :t, 'v1', :s)"
            ),
            {"c": campaign, "p": prefix, "d": day, "t": topic, "s": status},
        )


def a_day_passes(engine: Engine, days: int = 1) -> None:
    """Make every publish recorded so far `days` older, as if the next run came that much
    later: the cost policy's rest period is judged on the database's clock, and the tests
    run a month of dates in seconds."""
    execute(
        engine,
        "UPDATE runs SET published_at = published_at - make_interval(days => :n), "
        "publish_intent_at = publish_intent_at - make_interval(days => :n)",
        n=days,
    )


def row_counts(snapshot: dict[str, list[tuple]]) -> dict[str, int]:
    return {table: len(rows) for table, rows in snapshot.items()}


def run_row(engine: Engine, prefix: str, day: dt.date) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM runs WHERE prefix = :prefix AND run_date = :day"),
            {"prefix": prefix, "day": day},
        ).one_or_none()
    return dict(row._mapping) if row else None


def publishes_to(emulator: FcmEmulator, topic: str) -> list[Publish]:
    return [p for p in emulator.publishes if p.topic == topic]


def subscription_calls(emulator: FcmEmulator) -> int:
    """Topic-management requests the emulator has served, whatever their answer."""
    kinds = ("subscribe", "unsubscribe", "batchAdd", "batchRemove")
    return sum(n for (kind, _), n in emulator.stats.items() if kind in kinds)


def topic(prefix: str, pool_size: int, day: dt.date) -> str:
    return topic_for(prefix, pool_size, day)


def latest_publish(emulator: FcmEmulator, topic: str) -> Publish:
    sent = publishes_to(emulator, topic)
    assert sent, f"nothing was published to {topic}"
    return sent[-1]


def message_name(message_id: str) -> str:
    """The resource name firebase-admin returns (and topic-sync records) for a message id."""
    return f"projects/{PROJECT}/messages/{message_id}"


def subscriptions(engine: Engine, topic: str) -> dict[str, str]:
    """token -> subscription status, for one topic, as the database records it."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.token, s.status FROM subscriptions s JOIN tokens t ON t.id = s.token_id "
                "WHERE s.topic = :topic"
            ),
            {"topic": topic},
        ).all()
    return {token: status for token, status in rows}


def token_row(engine: Engine, token: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM tokens WHERE token = :t"), {"t": token}).one()
    return dict(row._mapping)


def failures(engine: Engine) -> list[dict[str, Any]]:
    """token_failures rows joined with their token, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.token, f.* FROM token_failures f JOIN tokens t ON t.id = f.token_id "
                "ORDER BY f.id"
            )
        ).all()
    return [dict(row._mapping) for row in rows]


def execute(engine: Engine, sql: str, **params: Any) -> int:
    with engine.begin() as conn:
        return conn.execute(text(sql), params).rowcount


# --- in-process runs of the engine --------------------------------------------------------------

DAY = dt.date(2026, 11, 22)  # the in-process engine tests' day
PREFIX = "jobreco"
POOL = 2


def toks(start: int, stop: int) -> list[str]:
    return [f"tok:{i:05d}" for i in range(start, stop)]


def opts(
    tmp_path: Path, message_file: Path, tokens: Sequence[str], day: dt.date = DAY, **kw: Any
) -> RunOptions:
    audience = write_audience(tmp_path / f"audience-{day}-{len(tokens)}.txt", tokens)
    base = dict(
        day=day,
        prefix=PREFIX,
        pool_size=POOL,
        audience_path=audience,
        message_path=message_file,
        live=True,
        propagation_delay=0,
        retry=RetryPolicy(min_wait=0, max_wait=0, max_retries=2),
        pool_policy=PoolPolicy.ORDINAL,  # see ORDINAL
    )
    base.update(kw)
    return run_options(**base)


def run_options(**given: Any) -> RunOptions:
    """A day's run options as `run` builds them from the default settings, `given` over them."""
    return commands.run_options(DEFAULTS, **given)


def reconcile_options(**given: Any) -> ReconcileOptions:
    """A repair's options as `reconcile` builds them from the default settings, `given` over
    them."""
    return commands.engine_options(ReconcileOptions, DEFAULTS, **given)


def last_recipients(emulator: FcmEmulator, topic: str) -> frozenset[str]:
    sent = [p for p in emulator.publishes if p.topic == topic]
    assert sent, f"nothing published to {topic}"
    return sent[-1].recipients


def snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2")).all()
            for table in (
                "tokens",
                "subscriptions",
                "runs",
                "run_attempts",
                "token_failures",
                "campaigns",
                "campaign_changes",
                "audiences",
            )
        }


def write_service_account_key(
    path: Path, project_id: str, token_uri: str = "https://oauth2.googleapis.com/token"
) -> Path:
    """A service-account key file as the Firebase console gives it, with a fresh RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": f"topic-sync@{project_id}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(account))
    return path


class TokenEndpoint(BaseHTTPRequestHandler):
    """Google's OAuth token endpoint, played locally: answers every POST with `answer`."""

    answer: tuple[int, dict[str, Any]] = (200, {})

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return None
