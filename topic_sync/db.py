"""Connecting to PostgreSQL: a given URL, or an embedded server for demos.

The embedded server (the `pgserver` wheel ships real PostgreSQL binaries) keeps
the two README commands free of setup; production passes DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from topic_sync.errors import Locked, TopicSyncError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class SchemaError(TopicSyncError):
    """The database is not at the schema this release expects."""


def sqlalchemy_url(url: str) -> str:
    """Accept plain libpq URLs and use psycopg 3 for them."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in data_dir and return its URL."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' notes about XDG_RUNTIME_DIR
        import pgserver

        server = pgserver.get_server(data_dir)
    return server.get_uri()


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return create_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


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


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


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


def lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key for a name."""
    return zlib.crc32(f"topic-sync:{name}".encode()) | (0x7A5 << 32)


class AdvisoryLock:
    """A session-level advisory lock held on its own connection.

    A lock file would survive a crashed host; a PostgreSQL session lock dies with
    its connection, and works across hosts sharing the database. Because it dies
    with its connection, `verify` checks it is still held before anything
    irreversible (a publish) and takes it again if the connection was lost.
    """

    def __init__(self, engine: Engine, name: str, *, what: str) -> None:
        self.engine, self.name, self.what = engine, name, what
        self.key = lock_key(name)
        self.conn: Connection | None = None

    def acquire(self) -> None:
        conn = self.engine.connect()
        try:
            got = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            raise Locked(
                f"another {self.what} holds the lock for {self.name!r}; not starting a second one"
            )
        self.conn = conn

    def verify(self) -> None:
        try:
            assert self.conn is not None
            self.conn.execute(text("SELECT 1"))
            self.conn.commit()
        except Exception:
            self.release()
            self.acquire()

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
def advisory_lock(engine: Engine, name: str, *, what: str) -> Iterator[AdvisoryLock]:
    """Hold the named lock for the duration, or raise Locked at once."""
    lock = AdvisoryLock(engine, name, what=what)
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
