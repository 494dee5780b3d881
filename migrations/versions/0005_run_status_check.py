"""Run status is one of the known states (states.RunStatus), checked by the database.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The values as of this revision (a migration is history: it does not follow later code).
# tests/integration/test_models.py checks that the database's constraints equal the enums.
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
)


def upgrade() -> None:
    listed = ", ".join(f"'{s}'" for s in STATUSES)
    op.create_check_constraint(op.f("ck_runs_status_known"), "runs", f"status IN ({listed})")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_runs_status_known"), "runs", type_="check")
