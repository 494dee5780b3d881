"""Hygiene and retention: when a token was found dead and retried, what each run suppressed
and found dead, and an index for purging old failure rows.

- `tokens.dead_on`: the date of the run that marked the token dead (a repair's: its day);
  `tokens.retried_on`: the audience date a dead token was last tried once more on.
- `runs.newly_dead`, `runs.suppressed`: tokens the run found dead; audience tokens it
  skipped because they were forgotten (opted out).
- `ix_token_failures_last_seen`: `purge` finds failure rows past retention by it;
  `ix_tokens_dead`: `report --dead` lists dead tokens, newest first, without a scan.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("dead_on", sa.Date(), nullable=True))
    op.add_column("tokens", sa.Column("retried_on", sa.Date(), nullable=True))
    op.execute("UPDATE tokens SET dead_on = invalid_at::date WHERE invalid_at IS NOT NULL")
    for name in ("newly_dead", "suppressed"):
        op.add_column("runs", sa.Column(name, sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_token_failures_last_seen", "token_failures", ["last_seen"])
    op.create_index(
        "ix_tokens_dead",
        "tokens",
        ["invalid_at"],
        postgresql_where=sa.text("invalid_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tokens_dead", table_name="tokens")
    op.drop_index("ix_token_failures_last_seen", table_name="token_failures")
    op.drop_column("runs", "suppressed")
    op.drop_column("runs", "newly_dead")
    op.drop_column("tokens", "retried_on")
    op.drop_column("tokens", "dead_on")
