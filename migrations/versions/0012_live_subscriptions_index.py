"""An index of each topic's live rows (members and owed work), for the pool's costs.

The cost policy counts, for every topic of a pool, its members and owed rows and how many
of them are in the day's audience (store.pool_costs). Those are the rows not `unsubscribed`;
the confirmed removals, which pile up with every day a topic ever had, cost nothing. This
partial index holds exactly the live rows with all the columns the count reads, so the
count is an index-only scan of the pool's live rows, whatever the history (bench/RESULTS.md,
section H, measures it at a million tokens and 7 topics).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

NAME = "ix_subscriptions_live"


def upgrade() -> None:
    op.create_index(
        NAME,
        "subscriptions",
        ["topic", "status", "token_id"],
        postgresql_where=sa.text("status <> 'unsubscribed'"),
    )


def downgrade() -> None:
    op.drop_index(NAME, table_name="subscriptions")
