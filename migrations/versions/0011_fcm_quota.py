"""The quota learned per FCM target and API, so each command starts from it.

`fcm_quota`: one row per (project, endpoint, API): the requests per second last learned,
whether FCM refused above it (`measured`) or that much merely got through, and when.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fcm_quota",
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("api", sa.Text(), nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("measured", sa.Boolean(), nullable=False),
        sa.Column(
            "learned_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("api IN ('v1', 'iid')", name=op.f("ck_fcm_quota_api_known")),
        sa.CheckConstraint("rate > 0", name=op.f("ck_fcm_quota_rate_positive")),
        sa.PrimaryKeyConstraint("project_id", "endpoint", "api", name=op.f("pk_fcm_quota")),
    )


def downgrade() -> None:
    op.drop_table("fcm_quota")
