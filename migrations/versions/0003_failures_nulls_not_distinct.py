"""Failures recorded without a run (by reconcile) dedupe like the others.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NAME = "uq_token_failures_run_id_token_id_topic_op"
COLUMNS = ["run_id", "token_id", "topic", "op"]


def upgrade() -> None:
    # Merge duplicates an older release may have written, keeping the latest of each.
    op.execute(
        """
        DELETE FROM token_failures f USING token_failures g
        WHERE f.run_id IS NULL AND g.run_id IS NULL AND f.token_id = g.token_id
          AND f.topic = g.topic AND f.op = g.op AND f.id < g.id
        """
    )
    op.drop_constraint(NAME, "token_failures", type_="unique")
    op.create_unique_constraint(NAME, "token_failures", COLUMNS, postgresql_nulls_not_distinct=True)


def downgrade() -> None:
    op.drop_constraint(NAME, "token_failures", type_="unique")
    op.create_unique_constraint(NAME, "token_failures", COLUMNS)
