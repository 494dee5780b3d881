"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 03:14:09.512808
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("run_date", sa.Date(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("transport", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="planned", nullable=False),
        sa.Column("audience_path", sa.Text(), nullable=True),
        sa.Column("audience_lines", sa.Integer(), server_default="0", nullable=False),
        sa.Column("audience_size", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duplicates", sa.Integer(), server_default="0", nullable=False),
        sa.Column("skipped_invalid", sa.Integer(), server_default="0", nullable=False),
        sa.Column("to_add", sa.Integer(), server_default="0", nullable=False),
        sa.Column("to_remove", sa.Integer(), server_default="0", nullable=False),
        sa.Column("added", sa.Integer(), server_default="0", nullable=False),
        sa.Column("removed", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "failed",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("retries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("wait_seconds", sa.Double(), server_default="0", nullable=False),
        sa.Column("publish_state", sa.Text(), server_default="none", nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("publish_intent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "publish_state IN ('none', 'intent', 'sent')", name=op.f("ck_runs_publish_state_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("prefix", "run_date", name=op.f("uq_runs_prefix_run_date")),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column(
            "token_key", sa.UUID(), sa.Computed("md5(token)::uuid", persisted=True), nullable=False
        ),
        sa.Column("invalid_reason", sa.Text(), nullable=True),
        sa.Column("invalid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_key", name=op.f("uq_tokens_token_key")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_code", sa.Text(), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending_subscribe', 'subscribed', 'pending_unsubscribe', 'unsubscribed')",
            name=op.f("ck_subscriptions_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_subscriptions_run_id_runs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["tokens.id"],
            name=op.f("fk_subscriptions_token_id_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("topic", "token_id", name=op.f("pk_subscriptions")),
    )
    op.create_index(
        "ix_subscriptions_pending",
        "subscriptions",
        ["topic", "status", "token_id"],
        unique=False,
        postgresql_where=sa.text("status LIKE 'pending%%'"),
    )
    op.create_index("ix_subscriptions_token_id", "subscriptions", ["token_id"], unique=False)
    op.create_table(
        "token_failures",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "first_seen",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "op IN ('subscribe', 'unsubscribe')", name=op.f("ck_token_failures_op_known")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_token_failures_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["tokens.id"],
            name=op.f("fk_token_failures_token_id_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_failures")),
        sa.UniqueConstraint(
            "run_id",
            "token_id",
            "topic",
            "op",
            name=op.f("uq_token_failures_run_id_token_id_topic_op"),
        ),
    )
    op.create_index("ix_token_failures_token_id", "token_failures", ["token_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_token_failures_token_id", table_name="token_failures")
    op.drop_table("token_failures")
    op.drop_index("ix_subscriptions_token_id", table_name="subscriptions")
    op.drop_index(
        "ix_subscriptions_pending",
        table_name="subscriptions",
        postgresql_where=sa.text("status LIKE 'pending%%'"),
    )
    op.drop_table("subscriptions")
    op.drop_table("tokens")
    op.drop_table("runs")
