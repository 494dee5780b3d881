"""Topic fences (who last planned a topic) and the FCM target the state belongs to.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "topic_fences",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "taken_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_topic_fences_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_topic_fences")),
    )
    op.create_table(
        "fcm_target",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column(
            "bound_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_fcm_target_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fcm_target")),
    )


def downgrade() -> None:
    op.drop_table("fcm_target")
    op.drop_table("topic_fences")
