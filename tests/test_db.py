from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from topic_sync.errors import Locked
from topic_sync.store import db
from topic_sync.store.models import Base


def test_migrations_and_models_agree(engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_check_schema_accepts_head(engine) -> None:
    db.check_schema(engine)


def test_check_schema_refuses_unmigrated_database(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(db.SchemaError, match="topic-sync db upgrade"):
        db.check_schema(engine)


def test_advisory_lock_refuses_second_holder(engine) -> None:
    with db.advisory_lock(engine, "prefix:x", what="run"):
        with (
            pytest.raises(Locked, match="prefix:x"),
            db.advisory_lock(engine, "prefix:x", what="run"),
        ):
            pass
        with db.advisory_lock(engine, "prefix:other", what="run"):
            pass
    with db.advisory_lock(engine, "prefix:x", what="run"):
        pass


def test_sqlalchemy_url_uses_psycopg() -> None:
    assert db.sqlalchemy_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.sqlalchemy_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"


def test_migrations_downgrade_and_upgrade_again(database_url, engine) -> None:
    from alembic import command

    cfg = db.alembic_config(database_url)
    command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT to_regclass('runs')")) is None
    command.upgrade(cfg, "head")
    db.check_schema(engine)
