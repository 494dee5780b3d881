"""`fcm_quota.waits`: whether the 429s of the FCM a quota was learned against said how long
to wait (a `Retry-After` header or a RetryInfo detail).

A 429 that carries a wait holds what it refused that long: in a day's last second, it ends
the day that much later. A command that knows from the start that FCM's 429s carry one
paces its stream's last second with a margin under the quota (bench/RESULTS.md, I.17).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "fcm_quota",
        sa.Column("waits", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("fcm_quota", "waits")
