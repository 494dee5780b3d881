"""Connecting to PostgreSQL: a given URL, or an embedded server for demos.

The embedded server (store.embedded, on the binaries the `pgserver` wheel ships) keeps
the two README commands free of setup; production passes DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from topic_sync.errors import BadInput, Locked, TopicSyncError
from topic_sync.store.embedded import EmbeddedServer

MIGRATIONS_PACKAGE = "topic_sync.migrations"

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


class SchemaError(TopicSyncError):
    """The database is not at the schema this release expects."""


def check_postgres_url(url: str, what: str) -> None:
    """Refuse, as bad input, a URL that is not PostgreSQL's (mysql://, sqlite://, a path):
    otherwise the failure would be a missing driver module, or worse, a database that works."""
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise BadInput(
            f"{what} is not a PostgreSQL URL ({scheme + sep if sep else 'no scheme'}): "
            "topic-sync needs PostgreSQL 15 or newer, e.g. postgresql://user@host:5432/dbname"
        )


def sqlalchemy_url(url: str) -> str:
    """Accept plain libpq URLs and use psycopg 3 for them."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def libpq_url(url: str) -> str:
    """The same URL as libpq (psycopg.connect) reads it: SQLAlchemy's driver tag dropped."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return "postgresql://" + rest
    return url


def embedded_url(base: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in base (see store.embedded.default_base)
    and return its URL: a Unix socket in a private folder, no TCP."""
    return EmbeddedServer(base).url()


CONNECT_TIMEOUT_SECONDS = 10
# TCP keepalives: a peer gone without a word (a half-open connection) is noticed in about
# a minute instead of the kernel's two hours. Ignored on Unix sockets.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}
KEEPALIVE_COUNT = 3
# No statement of the job's runs for ever: the longest is a plan over a very large audience.
STATEMENT_TIMEOUT_MS = 30 * 60 * 1000
# A batch's transaction stays open while FCM answers (that is what makes a crash safe), and
# a batch gives up on FCM after fcm.BATCH_BUDGET_SECONDS; a session idle in a transaction
# longer than this is a stuck or half-gone client, and PostgreSQL ends it (rolling back).
IDLE_IN_TRANSACTION_TIMEOUT_MS = 15 * 60 * 1000
SESSION_SETTINGS = {
    "statement_timeout": STATEMENT_TIMEOUT_MS,
    "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT_MS,
}


def connect_args() -> dict[str, Any]:
    """libpq parameters for every connection topic-sync opens."""
    return {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "topic-sync",
        **KEEPALIVES,
        "keepalives_count": KEEPALIVE_COUNT,
    }


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=connect_args(),
    )
    event.listen(engine, "connect", _session_settings)
    return engine


def _session_settings(dbapi_connection: Any, _record: Any) -> None:
    """Timeouts for the job's sessions, set with SET (a pooler in session mode passes it)."""
    with dbapi_connection.cursor() as cur:
        for name, value in SESSION_SETTINGS.items():
            cur.execute(f"SET {name} = {int(value)}")
    dbapi_connection.commit()


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server of server_url; return its URL."""
    from sqlalchemy import make_url

    url = make_url(sqlalchemy_url(server_url))
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def migrations_dir() -> Path:
    """Alembic's scripts, found as the package `topic_sync.migrations` wherever topic-sync is
    installed (pyproject.toml maps the repository's `migrations/` folder to it)."""
    return Path(str(importlib.resources.files(MIGRATIONS_PACKAGE)))


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


_REVISION = re.compile(r'^(down_revision|revision) = (?:"([^"]*)"|None)$', re.M)


def head_revision() -> str:
    """The revision this release's migrations end at, read from their files: every command
    checks it, and Alembic (with what it imports) takes longer to load than most of a day's
    run. tests/integration/test_db.py holds it to Alembic's own answer."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_dir() / "versions").glob("*.py"):
        for kind, value in _REVISION.findall(path.read_text()):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    assert len(heads) == 1, f"the migrations must have one head, not {sorted(heads)}"
    return heads.pop()


def check_schema(engine: Engine) -> None:
    """Refuse to run against a database whose schema is missing or out of date."""
    with engine.connect() as conn:
        exists = conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        current = conn.scalar(text("SELECT version_num FROM alembic_version")) if exists else None
    if current != head_revision():
        raise SchemaError(
            f"database schema is at {current or 'nothing'}, this release needs "
            f"{head_revision()}: run 'topic-sync db upgrade' first"
        )


def campaign_lock(name: str) -> str:
    """The name of the advisory lock a campaign's runs, repairs and changes hold."""
    return f"campaign:{name}"


def lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key for a lock's name (e.g. campaign_lock's)."""
    return zlib.crc32(f"topic-sync:{name}".encode()) | (0x7A5 << 32)


class PoolerError(TopicSyncError):
    """The database connection does not keep its session (a pooler in transaction mode)."""


_HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = :k)"
)


class AdvisoryLock:
    """A session-level advisory lock held on its own connection.

    A lock file would survive a crashed host; a PostgreSQL session lock dies with
    its connection, and works across hosts sharing the database. Nobody tells the
    holder when it dies, so the lock is only the first line: what proves a topic was
    not touched by anyone else is its fence (store.take_fence), checked by every
    batch and the publish. `verify` checks that this session really holds the lock
    and takes it again if it was lost.
    """

    def __init__(
        self, engine: Engine, name: str, *, what: str, log: Callable[[str], None] | None = None
    ) -> None:
        self.engine, self.name, self.what = engine, name, what
        self.key = lock_key(name)
        self.conn: Connection | None = None
        self.log = log or (lambda _line: None)

    def acquire(self) -> None:
        conn = self.engine.connect()
        try:
            got = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
            conn.commit()
            # In a new transaction: through a pooler in transaction mode this may run on
            # another server session, where the lock is not held.
            held = bool(got) and bool(conn.scalar(_HOLDS_LOCK, {"k": self.key}))
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            raise Locked(
                f"another {self.what} holds the lock for {self.name!r}; not starting a second one"
            )
        if not held:
            conn.close()
            raise PoolerError(
                "the database connection did not keep its session between two transactions "
                "(a connection pooler in transaction mode?): topic-sync needs session-level "
                "locks. Connect directly, or through a pooler in session mode"
            )
        self.conn = conn

    def holds(self) -> bool:
        """Whether this session still holds the lock (False if its connection is gone)."""
        try:
            assert self.conn is not None
            held = bool(self.conn.scalar(_HOLDS_LOCK, {"k": self.key}))
            self.conn.commit()
            return held
        except Exception:
            return False

    def verify(self) -> None:
        """Hold the lock again if it was lost; Locked if somebody else has it now."""
        if self.holds():
            return
        self.release()
        self.acquire()
        self.log(
            f"the lock for {self.name!r} had been lost (its connection dropped) and is held "
            "again; the topic's fence decides whether the work done so far still stands"
        )

    def release(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(Exception):
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self.conn.commit()
        with contextlib.suppress(Exception):
            self.conn.close()
        self.conn = None


@contextlib.contextmanager
def advisory_lock(
    engine: Engine, name: str, *, what: str, log: Callable[[str], None] | None = None
) -> Iterator[AdvisoryLock]:
    """Hold the named lock for the duration, or raise Locked at once."""
    lock = AdvisoryLock(engine, name, what=what, log=log)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def is_disconnect(error: BaseException) -> bool:
    """A lost database connection: the transaction rolled back, so redoing it is safe."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and bool(error.connection_invalidated)
    )


def is_unreachable(error: BaseException) -> bool:
    """The server cannot be reached or the connection is gone (refused, timed out, closed,
    unknown database or role): not a statement's own failure (a timeout, a deadlock)."""
    import psycopg
    from sqlalchemy.exc import DBAPIError, InterfaceError

    if not isinstance(error, DBAPIError):
        return False
    if isinstance(error, InterfaceError) or error.connection_invalidated:
        return True
    return type(error.orig) is psycopg.OperationalError


# --- read-only facts for `topic-sync doctor` ------------------------------------------------

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
"""What topic-sync's role needs on each of its tables (see Security in docs/operator-guide.md)."""
OPTIONAL_TABLES = ("scheduler_jobs",)
"""Tables checked only when they exist (the scheduler creates its own on first start)."""


@contextlib.contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection in a READ ONLY transaction that is rolled back: looking, never writing."""
    with engine.connect() as conn:
        conn.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield conn
        finally:
            conn.rollback()


def current_revision(conn: Connection) -> str | None:
    """Alembic's current revision of the database (None: never migrated), read only."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def is_known_revision(revision: str) -> bool:
    """Whether this release's migrations know the revision (not: a newer release's)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def schema_tables() -> tuple[str, ...]:
    """topic-sync's own tables: the models' and Alembic's."""
    from topic_sync.store.models import Base

    return (*(table.name for table in Base.metadata.sorted_tables), "alembic_version")


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    version: str
    database: str
    user: str
    max_connections: int
    reserved_connections: int
    connections_in_use: int
    temporary: bool  # may create temporary tables (the audience is loaded into one)


def server_facts(conn: Connection) -> ServerFacts:
    row = conn.execute(
        text(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'),"
            " current_database(), current_user, current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " has_database_privilege(current_database(), 'TEMPORARY')"
        )
    ).one()
    return ServerFacts(*row)


def missing_tables(conn: Connection, tables: Sequence[str]) -> list[str]:
    """Which of the tables do not exist (in the connection's search path)."""
    return [
        table
        for table in tables
        if not conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table})
    ]


def missing_privileges(
    conn: Connection, tables: Sequence[str], privileges: Sequence[str] = PRIVILEGES
) -> dict[str, list[str]]:
    """table -> the privileges the current role lacks on it (existing tables only)."""
    missing: dict[str, list[str]] = {}
    for table in tables:
        if not conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}):
            continue
        lacking = [
            privilege
            for privilege in privileges
            if not conn.scalar(
                text("SELECT has_table_privilege(:t, :p)"), {"t": table, "p": privilege}
            )
        ]
        if lacking:
            missing[table] = lacking
    return missing


@contextlib.contextmanager
def planner_setting(conn: Connection, name: str, value: str) -> Iterator[None]:
    """One planner setting for the statements inside, in the open transaction only: the
    value it had is put back after (SET LOCAL would hold until the transaction ends). If
    they fail, the transaction is rolled back, and the setting with it: putting it back in
    a failed transaction would raise over the statement's own error."""
    before = conn.scalar(
        text("SELECT current_setting(:name), set_config(:name, :value, true)"),
        {"name": name, "value": value},
    )
    yield
    conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": before})
