from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from topic_sync.errors import Locked
from topic_sync.states import FcmApi, Op, PublishState, RunStatus, SubscriptionStatus
from topic_sync.store import db
from topic_sync.store.models import Base


def test_migrations_and_models_agree(engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_the_head_revision_is_alembics() -> None:
    # Read from the migration files without Alembic (every command checks it at start-up).
    from alembic.script import ScriptDirectory

    alembic = ScriptDirectory.from_config(db.alembic_config("postgresql://"))
    assert db.head_revision() == alembic.get_current_head()


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


def test_a_downgrade_past_0014_clears_the_runs_no_key_kept_before_restoring_the_key(
    database_url, engine
) -> None:
    # Since 0014 a subscription row may name a run deleted after it was written.
    from alembic import command

    with engine.begin() as conn:
        token_id = conn.scalar(text("INSERT INTO tokens (token) VALUES ('tok') RETURNING id"))
        conn.execute(
            text(
                "INSERT INTO subscriptions (topic, token_id, status, run_id) "
                "VALUES ('t-0', :id, 'subscribed', 987654)"
            ),
            {"id": token_id},
        )
    command.downgrade(db.alembic_config(database_url), "0013")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT run_id FROM subscriptions")) is None
        keys = conn.scalar(
            text(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'fk_subscriptions_run_id_runs'"
            )
        )
    assert keys == 1


@pytest.mark.parametrize(
    ("table", "constraint", "states"),
    [
        ("subscriptions", "ck_subscriptions_status_known", SubscriptionStatus),
        ("runs", "ck_runs_status_known", RunStatus),
        ("runs", "ck_runs_publish_state_known", PublishState),
        ("token_failures", "ck_token_failures_op_known", Op),
        ("fcm_quota", "ck_fcm_quota_api_known", FcmApi),
    ],
)
def test_the_database_checks_exactly_the_states_the_code_knows(engine, table, constraint, states):
    # The migrations are history and spell their values out; the enums are the code's truth.
    # A state added to an enum without a migration fails here.
    with engine.connect() as conn:
        definition = conn.scalar(
            text(
                "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_class t ON t.oid = c.conrelid WHERE t.relname = :t AND c.conname = :c"
            ),
            {"t": table, "c": constraint},
        )
    assert definition, f"{table} has no constraint {constraint}"
    assert set(re.findall(r"'([a-z0-9_]+)'::text", definition)) == {s.value for s in states}


def test_the_attempt_columns_written_out_are_the_models() -> None:
    # store.runs lists run_attempts' columns itself, so a run need not import the ORM.
    from topic_sync.store.models import RunAttempt
    from topic_sync.store.runs import ATTEMPT_COLUMNS

    columns = [c.name for c in RunAttempt.__table__.columns if c.name not in ("id", "run_id")]
    assert list(ATTEMPT_COLUMNS) == columns


def test_a_statement_failing_under_a_planner_setting_raises_its_own_error(engine) -> None:
    from sqlalchemy.exc import DBAPIError

    with (
        pytest.raises(DBAPIError) as caught,
        engine.begin() as conn,
        db.planner_setting(conn, "enable_seqscan", "off"),
    ):
        conn.execute(text("SELECT 1 / 0"))
    assert "division by zero" in str(caught.value)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT current_setting('enable_seqscan')")) == "on"
