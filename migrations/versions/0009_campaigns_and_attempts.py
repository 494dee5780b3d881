"""Campaigns (a stable identity for "one publish per date"), every attempt's figures, and
what a forget found.

- `campaigns`: name, topic prefix, pool size, time zone. Runs, their publish records and the
  run lock are keyed on the campaign, not on the prefix: renaming the prefix can no longer
  make a published date look unpublished. Existing runs get one campaign per prefix, named
  after it; its pool size is not known (NULL) until its next live run records the
  configured one, checked against the topics the campaign used.
- `campaign_changes`: every change of a campaign's identity (registered, migrated, changed).
- `runs.campaign_id` (unique with `run_date`, replacing prefix and date), `runs.attempt`.
- `run_attempts`: an earlier attempt at a day's run as it ended; a rerun keeps it.
- `subscriptions.forgotten_from`: the status a forget found while the removal it queued is
  owed, so `forget --undo` can lift that removal.

The downgrade fails if two campaigns ran the same date under one prefix (the old key).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The values as of this revision (a migration is history: it does not follow later code).
KINDS = ("registered", "migrated", "changed")
STATUSES = (
    "planned",
    "syncing",
    "publishing",
    "published",
    "withheld",
    "deadline",
    "interrupted",
    "fenced",
    "guarded",
    "failed",
    "no_audience",
)


def _now(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _count(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _jsonb(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        postgresql.JSONB(astext_type=sa.Text()),
        server_default=sa.text("'{}'"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("pool_size", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint(
            "pool_size BETWEEN 1 AND 2000", name=op.f("ck_campaigns_pool_size_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("name", name=op.f("uq_campaigns_name")),
        sa.UniqueConstraint("prefix", name=op.f("uq_campaigns_prefix")),
    )
    listed = ", ".join(f"'{k}'" for k in KINDS)
    op.create_table(
        "campaign_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("changed_by", sa.Text(), nullable=False),
        _now("changed_at"),
        sa.CheckConstraint(f"kind IN ({listed})", name=op.f("ck_campaign_changes_kind_known")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_changes_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_changes")),
    )
    op.create_index("ix_campaign_changes_campaign_id", "campaign_changes", ["campaign_id"])

    # One campaign per prefix that ran, named after it.
    op.execute("INSERT INTO campaigns (name, prefix) SELECT DISTINCT prefix, prefix FROM runs")
    op.execute(
        """
        INSERT INTO campaign_changes (campaign_id, kind, after, changed_by)
        SELECT id, 'migrated',
               jsonb_build_object('name', name, 'prefix', prefix, 'pool_size', pool_size,
                                  'timezone', timezone),
               'db upgrade (revision 0010)'
        FROM campaigns
        """
    )
    op.add_column("runs", sa.Column("campaign_id", sa.BigInteger(), nullable=True))
    op.execute("UPDATE runs SET campaign_id = c.id FROM campaigns c WHERE c.prefix = runs.prefix")
    op.alter_column("runs", "campaign_id", nullable=False)
    op.create_foreign_key(
        op.f("fk_runs_campaign_id_campaigns"),
        "runs",
        "campaigns",
        ["campaign_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_constraint(op.f("uq_runs_prefix_run_date"), "runs", type_="unique")
    op.create_unique_constraint(
        op.f("uq_runs_campaign_id_run_date"), "runs", ["campaign_id", "run_date"]
    )
    op.add_column("runs", sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))

    statuses = ", ".join(f"'{s}'" for s in STATUSES)
    op.create_table(
        "run_attempts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("transport", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="planned", nullable=False),
        sa.Column("audience_path", sa.Text(), nullable=True),
        *(
            _count(name)
            for name in (
                "audience_lines",
                "audience_size",
                "duplicates",
                "skipped_invalid",
                "suppressed",
                "newly_dead",
                "to_add",
                "to_remove",
                "added",
                "removed",
            )
        ),
        _jsonb("failed"),
        _jsonb("outcomes"),
        _count("attempts"),
        _count("retries"),
        sa.Column("wait_seconds", sa.Double(), server_default="0", nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        _now("started_at"),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_run_attempts_status_known")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_attempts_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_attempts")),
        sa.UniqueConstraint("run_id", "attempt", name=op.f("uq_run_attempts_run_id_attempt")),
    )

    op.add_column("subscriptions", sa.Column("forgotten_from", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_subscriptions_forgotten_from_known"),
        "subscriptions",
        "forgotten_from IN ('subscribed', 'pending_subscribe')",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_subscriptions_forgotten_from_known"), "subscriptions", type_="check"
    )
    op.drop_column("subscriptions", "forgotten_from")
    op.drop_table("run_attempts")
    op.drop_column("runs", "attempt")
    op.drop_constraint(op.f("uq_runs_campaign_id_run_date"), "runs", type_="unique")
    op.create_unique_constraint(op.f("uq_runs_prefix_run_date"), "runs", ["prefix", "run_date"])
    op.drop_constraint(op.f("fk_runs_campaign_id_campaigns"), "runs", type_="foreignkey")
    op.drop_column("runs", "campaign_id")
    op.drop_index("ix_campaign_changes_campaign_id", table_name="campaign_changes")
    op.drop_table("campaign_changes")
    op.drop_table("campaigns")
