"""The tests' databases: one a finished test used is handed on only when emptying it gives
what a clone of the migrated template would (tests.support.DatabasePool)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.support import DatabasePool, admin_engine, ensure_campaign
from topic_sync.store import db


@pytest.fixture
def pool(pg_server_url: str, template_db: str) -> Iterator[DatabasePool]:
    made = DatabasePool(pg_server_url, template_db)
    yield made
    made.close()


def _engine(url: str) -> Engine:
    return create_engine(db.sqlalchemy_url(url), poolclass=NullPool)


def _exists(pool: DatabasePool, name: str) -> bool:
    admin = admin_engine(pool.server_url)
    try:
        with admin.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            return found.first() is not None
    finally:
        admin.dispose()


def test_a_used_database_comes_back_empty_with_its_sequences_restarted(pool) -> None:
    name, url = pool.take()
    engine = _engine(url)
    with engine.begin() as conn:
        first_campaign = ensure_campaign(conn, "used")
        conn.execute(text("INSERT INTO tokens (token) VALUES ('a'), ('b')"))
    engine.dispose()
    pool.give_back(name)

    again, url = pool.take()
    assert again == name  # handed on, not cloned anew
    engine = _engine(url)
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT count(*) FROM tokens")) == 0
        assert conn.scalar(text("SELECT count(*) FROM campaigns")) == 0
        assert ensure_campaign(conn, "next") == first_campaign  # ids start over, as in a clone
    engine.dispose()


BEYOND_ROWS = {
    "a table of its own": ["CREATE TABLE reco (token text)"],
    "grants": [
        "REVOKE ALL ON subscriptions FROM PUBLIC",
        "GRANT SELECT ON subscriptions TO PUBLIC",
    ],
    "a column": ["ALTER TABLE tokens ADD COLUMN note text"],
    "a function": ["CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'SELECT 1'"],
    "its revision table": ["DROP TABLE alembic_version"],
}


@pytest.mark.parametrize("change", BEYOND_ROWS.values(), ids=BEYOND_ROWS.keys())
def test_a_database_changed_beyond_its_rows_is_dropped_not_handed_on(pool, change) -> None:
    name, url = pool.take()
    engine = _engine(url)
    with engine.begin() as conn:
        for statement in change:
            conn.execute(text(statement))
    engine.dispose()
    pool.give_back(name)
    assert not _exists(pool, name)
    assert pool.take()[0] != name


def test_a_database_refusing_connections_is_dropped(pool) -> None:
    name, _ = pool.take()
    admin = admin_engine(pool.server_url)
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    admin.dispose()
    pool.give_back(name)
    assert not _exists(pool, name)


def test_a_session_the_test_left_open_holds_nothing_into_the_next(pool) -> None:
    name, url = pool.take()
    left_open = _engine(url).connect()
    left_open.execute(text("SELECT pg_advisory_lock(42)"))
    left_open.execute(text("BEGIN"))
    left_open.execute(text("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE"))
    pool.give_back(name)

    again, url = pool.take()
    assert again == name
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        assert conn.scalar(text("SELECT pg_try_advisory_lock(42)")) is True
        assert conn.scalar(text("SELECT count(*) FROM tokens")) == 0
    engine.dispose()
    left_open.invalidate()
