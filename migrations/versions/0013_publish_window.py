"""A day may publish at a set time: the run waits for it synced, or misses its window.

- `runs.status` may be `waiting` (synced; the publish waits for publish_at, or for
  `run --publish-only`) and `missed` (publish_by passed before it could publish: the day's
  message is not sent), in `runs` and `run_attempts` alike.
- `runs.publish_at` and `runs.publish_by`: the day's window (NULL: publish once synced).
- `runs.synced_at`: when the current attempt's sync completed with nothing owed to remove
  (NULL: not synced); a rerun of a synced day resumes into the wait instead of syncing again.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
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
    "no_audience",
)
AFTER = (*BEFORE, "waiting", "missed")
COLUMNS = ("publish_at", "publish_by", "synced_at")


def _check(statuses: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{s}'" for s in statuses)
    for table in ("runs", "run_attempts"):
        name = op.f(f"ck_{table}_status_known")
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, f"status IN ({listed})")


def upgrade() -> None:
    _check(AFTER)
    for column in COLUMNS:
        op.add_column("runs", sa.Column(column, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("runs", "run_attempts"):
        op.execute(f"UPDATE {table} SET status = 'interrupted' WHERE status = 'waiting'")
        op.execute(f"UPDATE {table} SET status = 'failed' WHERE status = 'missed'")
    _check(BEFORE)
    for column in reversed(COLUMNS):
        op.drop_column("runs", column)
