"""purge against real PostgreSQL: old failure rows go in bounded batches; what runs,
reruns, reconcile and report's first answer need stays."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from tests.support import ensure_campaign
from topic_sync.engine.retention import purge

NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
RETENTION = 90 * 86400.0
OLD, YOUNG = 100, 10  # days before NOW


def add_run(engine, prefix: str, day: dt.date) -> int:
    with engine.begin() as conn:
        return conn.scalar(
            text(
                "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, status) "
                "VALUES (:c, :p, :d, :p || '-0', 'v1', 'published') RETURNING id"
            ),
            {"c": ensure_campaign(conn, prefix), "p": prefix, "d": day},
        )


def add_failure(
    engine, run: int | None, token: str, days_ago: int, *, resolved: bool = False, owed=None
) -> None:
    with engine.begin() as conn:
        token_id = conn.scalar(
            text("INSERT INTO tokens (token) VALUES (:t) RETURNING id"), {"t": token}
        )
        conn.execute(
            text(
                """
                INSERT INTO token_failures
                    (run_id, token_id, topic, op, code, reason, first_seen, last_seen,
                     resolved_at)
                VALUES (:run, :id, 'a-0', 'unsubscribe', 'internal-error', 'INTERNAL',
                        :seen, :seen, CASE WHEN :resolved THEN CAST(:seen AS timestamptz) END)
                """
            ),
            {
                "run": run,
                "id": token_id,
                "seen": NOW - dt.timedelta(days=days_ago),
                "resolved": resolved,
            },
        )
        if owed:
            conn.execute(
                text("INSERT INTO subscriptions (topic, token_id, status) VALUES ('a-0', :id, :s)"),
                {"id": token_id, "s": owed},
            )


def left(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.scalars(
                text("SELECT t.token FROM token_failures f JOIN tokens t ON t.id = f.token_id")
            )
        )


@pytest.fixture
def history(engine) -> list[str]:
    """Eight purgeable rows, and four that must stay; returns the ones that must stay."""
    old_run = add_run(engine, "a", dt.date(2026, 8, 1))
    latest_a = add_run(engine, "a", dt.date(2026, 8, 2))
    latest_b = add_run(engine, "b", dt.date(2026, 7, 1))
    for i in range(6):
        add_failure(engine, old_run, f"gone:{i}", OLD, resolved=i % 2 == 0)
    add_failure(engine, old_run, "gone:done", OLD, owed="unsubscribed")  # work done: history
    add_failure(engine, None, "gone:repair", OLD)  # a repair's, long ago
    add_failure(engine, latest_a, "keep:latest-a", OLD)  # report's first answer
    add_failure(engine, latest_b, "keep:latest-b", OLD)
    add_failure(engine, old_run, "keep:owed", OLD, owed="pending_unsubscribe")  # explains a debt
    add_failure(engine, old_run, "keep:young", YOUNG)
    return ["keep:latest-a", "keep:latest-b", "keep:owed", "keep:young"]


def test_a_dry_run_counts_and_deletes_nothing(engine, history) -> None:
    before = left(engine)
    result = purge(engine, older_than=RETENTION, live=False, now=NOW)
    assert (result.failures, result.batches, result.live) == (8, 0, False)
    assert left(engine) == before


def test_purge_deletes_in_bounded_batches_and_keeps_what_is_needed(engine, history) -> None:
    result = purge(engine, older_than=RETENTION, live=True, now=NOW, batch=3)
    assert (result.failures, result.batches) == (8, 3)  # 3 + 3 + 2
    assert left(engine) == history
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM runs")) == 3  # summaries are kept
    assert result.summary()["cutoff"] == "2026-08-24T06:00:00Z"
    again = purge(engine, older_than=RETENTION, live=True, now=NOW)
    assert (again.failures, again.batches) == (0, 1)


def test_a_stop_request_ends_purge_between_batches(engine, history) -> None:
    asked = iter([False, True])
    stopped = purge(
        engine, older_than=RETENTION, live=True, now=NOW, batch=3, should_stop=lambda: next(asked)
    )
    assert (stopped.failures, stopped.batches) == (3, 1)
    rest = purge(engine, older_than=RETENTION, live=True, now=NOW, batch=3)
    assert rest.failures == 5 and left(engine) == history


def test_a_shorter_retention_reaches_younger_rows(engine, history) -> None:
    result = purge(engine, older_than=5 * 86400.0, live=True, now=NOW)
    assert result.failures == 9
    assert "keep:young" not in left(engine)


@pytest.fixture
def planned_empty(engine) -> None:
    """Statistics taken while token_failures was empty: the planner expects a row or so."""
    with engine.begin() as conn:
        conn.execute(text("ANALYZE token_failures"))


def test_one_purge_batch_deletes_at_most_its_size_whatever_the_statistics(
    engine, planned_empty, history
) -> None:
    # With statistics taken while the table was empty, the planner expected one row and
    # picked a nested loop that scanned `id IN (subquery ... LIMIT n FOR UPDATE SKIP
    # LOCKED)` again for each row; each scan skipped the rows the statement had just
    # deleted (locked by itself) and picked the next: one batch deleted all eight. The rows
    # are now picked once, in a materialized CTE.
    from topic_sync import store

    cutoff = NOW - dt.timedelta(seconds=RETENTION)
    with engine.begin() as conn:
        assert store.purge_failures(conn, cutoff, 3) == 3
    assert len(left(engine)) == 12 - 3
    stopped = purge(engine, older_than=RETENTION, live=True, now=NOW, batch=3)
    assert (stopped.failures, stopped.batches) == (5, 2)
