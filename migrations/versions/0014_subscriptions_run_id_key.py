"""`subscriptions.run_id` is a plain column, no longer a foreign key to `runs`.

The column says which run last planned or answered the row; nothing finds a run through
it, and runs are deleted only by a reset of the FCM target, which deletes the subscription
rows first. But the key's check ran once for every row a plan inserted or re-planned: on a
day of 10,000 new and 10,000 removed subscriptions, 0.18 s of a 1.4-s plan (bench/RESULTS.md,
section I.8).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

RUN_KEY = "fk_subscriptions_run_id_runs"


def upgrade() -> None:
    op.drop_constraint(RUN_KEY, "subscriptions", type_="foreignkey")


def downgrade() -> None:
    # A row may name a run deleted since (no key cleared it): the key would refuse it.
    op.execute(
        "UPDATE subscriptions s SET run_id = NULL WHERE run_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = s.run_id)"
    )
    op.create_foreign_key(RUN_KEY, "subscriptions", "runs", ["run_id"], ["id"], ondelete="SET NULL")
