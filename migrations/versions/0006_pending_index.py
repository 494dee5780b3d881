"""The work queue's partial index, with a predicate queries can use.

0001 created it `WHERE status LIKE 'pending%%'` (the doubled percent sign reached the
database as written), a predicate no query's clause matched, so the planner never used the
index: claiming a batch scanned the whole topic, and its cost grew with the rows done. The
predicate is now an IN list of the pending statuses, which `status = 'pending_subscribe'`
implies.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = "ix_subscriptions_pending"
COLUMNS = ["topic", "status", "token_id"]


def upgrade() -> None:
    op.drop_index(NAME, table_name="subscriptions")
    op.create_index(
        NAME,
        "subscriptions",
        COLUMNS,
        postgresql_where=sa.text("status IN ('pending_subscribe', 'pending_unsubscribe')"),
    )


def downgrade() -> None:
    op.drop_index(NAME, table_name="subscriptions")
    op.create_index(
        NAME, "subscriptions", COLUMNS, postgresql_where=sa.text("status LIKE 'pending%%'")
    )
