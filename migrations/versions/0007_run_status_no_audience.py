"""A run may end as `no_audience`: its audience never came within --wait-timeout.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The values as of this revision (a migration is history: it does not follow later code).
BEFORE = (
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
AFTER = (*BEFORE, "no_audience")


def _check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_runs_status_known"), "runs", type_="check")
    listed = ", ".join(f"'{s}'" for s in statuses)
    op.create_check_constraint(op.f("ck_runs_status_known"), "runs", f"status IN ({listed})")


def upgrade() -> None:
    _check(AFTER)


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'no_audience'")
    _check(BEFORE)
