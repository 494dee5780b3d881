"""The campaigns' previous audiences, for the audience guard: a day's audience is compared
with the campaign's previous one (how much left, how much is new, how its size changed)
rather than with the members of a pool topic last synced days ago.

`audiences` holds, per campaign and date, the sorted ids of the
audience's distinct tokens in one bigint[]; runs keep the two latest dates.

Seeded from each campaign's latest run that planned (it recorded an audience size): the
members of its topic (subscribed or owed a subscription) stand for that run's audience, so
the first run after the upgrade is guarded too (tokens that audience held but that were
dead or forgotten are missing from the seed: they count as new on that first day).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audiences",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("run_date", sa.Date(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("token_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column(
            "saved_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_audiences_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_audiences_run_id_runs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "run_date", name="pk_audiences"),
    )
    op.execute(
        """
        INSERT INTO audiences (campaign_id, run_date, run_id, size, token_ids)
        SELECT r.campaign_id, r.run_date, r.id, count(s.token_id),
               coalesce(array_agg(s.token_id ORDER BY s.token_id)
                        FILTER (WHERE s.token_id IS NOT NULL), '{}')
        FROM (
            SELECT DISTINCT ON (campaign_id) id, campaign_id, run_date, topic FROM runs
            WHERE audience_size > 0
            ORDER BY campaign_id, run_date DESC
        ) r
        LEFT JOIN subscriptions s ON s.topic = r.topic
             AND s.status IN ('subscribed', 'pending_subscribe')
        GROUP BY r.campaign_id, r.run_date, r.id
        HAVING count(s.token_id) > 0
        """
    )


def downgrade() -> None:
    op.drop_table("audiences")
