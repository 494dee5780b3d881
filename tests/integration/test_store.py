"""The set-based SQL: the diff, batch claims and outcome records."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from topic_sync import store

TOPIC = "t-0"


def plan(engine, tokens, run_id=None) -> store.Plan:
    with engine.begin() as conn:
        lines = store.load_audience(conn, iter(tokens))
        return store.plan_topic(conn, TOPIC, run_id, lines)


def statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.token, s.status FROM subscriptions s JOIN tokens t ON t.id = s.token_id "
                "WHERE s.topic = :topic"
            ),
            {"topic": TOPIC},
        ).all()
    return dict(rows)


def set_status(engine, token: str, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE subscriptions SET status = :status FROM tokens t "
                "WHERE t.id = subscriptions.token_id AND t.token = :token"
            ),
            {"status": status, "token": token},
        )


def test_plan_counts_duplicates_and_queues_additions(engine) -> None:
    result = plan(engine, ["a", "b", "a", "c", "b"])
    assert (result.audience_lines, result.audience_size, result.duplicates) == (5, 3, 2)
    assert (result.to_add, result.to_remove, result.members_before) == (3, 0, 0)
    assert statuses(engine) == {t: "pending_subscribe" for t in "abc"}


def test_diff_covers_every_state(engine) -> None:
    plan(engine, ["keep", "leave", "owed_in", "owed_out", "leaving_back"])
    set_status(engine, "keep", "subscribed")
    set_status(engine, "leave", "subscribed")
    set_status(engine, "owed_in", "pending_subscribe")
    set_status(engine, "owed_out", "pending_subscribe")
    set_status(engine, "leaving_back", "pending_unsubscribe")
    result = plan(engine, ["keep", "owed_in", "leaving_back", "new"])
    assert statuses(engine) == {
        "keep": "subscribed",  # nothing to do
        "leave": "pending_unsubscribe",  # member, not in audience
        "owed_in": "pending_subscribe",  # still owed
        "owed_out": "pending_unsubscribe",  # may have reached FCM: remove it
        "leaving_back": "pending_subscribe",  # back in the audience
        "new": "pending_subscribe",
    }
    assert result.members_before == 4 and result.newly_removed == 2
    assert (result.to_add, result.to_remove) == (3, 2)


def test_invalid_tokens_are_skipped_and_removed(engine) -> None:
    plan(engine, ["good", "dead"])
    set_status(engine, "good", "subscribed")
    set_status(engine, "dead", "subscribed")
    with engine.begin() as conn:
        conn.execute(text("UPDATE tokens SET invalid_at = now() WHERE token = 'dead'"))
    result = plan(engine, ["good", "dead"])
    assert result.skipped == 1 and result.skipped_dead == 1
    assert statuses(engine) == {"good": "subscribed", "dead": "pending_unsubscribe"}


def test_long_tokens_are_stored_and_matched(engine) -> None:
    long_token = "x" * 4096
    plan(engine, [long_token])
    again = plan(engine, [long_token])
    assert again.audience_size == 1 and again.to_add == 1


def test_claims_skip_rows_another_worker_holds(engine) -> None:
    plan(engine, [f"k{i}" for i in range(5)])
    with engine.connect() as first, engine.connect() as second:
        since = store.db_now(first)
        mine = store.claim_batch(first, TOPIC, "pending_subscribe", since, 3)
        theirs = store.claim_batch(second, TOPIC, "pending_subscribe", since, 3)
        assert len(mine) == 3 and len(theirs) == 2
        assert not {t for _, t in mine} & {t for _, t in theirs}
        first.rollback()
        second.rollback()


def test_outcomes_record_failures_and_resolve_them(engine) -> None:
    plan(engine, ["a", "b"])
    with engine.begin() as conn:
        since = store.db_now(conn)
        (a_id, _), (b_id, _) = store.claim_batch(conn, TOPIC, "pending_subscribe", since, 10)
        store.record_outcomes(
            conn,
            TOPIC,
            "subscribe",
            None,
            [
                store.TokenOutcome(a_id, "subscribed", None, None, False, False),
                store.TokenOutcome(
                    b_id, "pending_subscribe", "internal-error", "INTERNAL", True, False
                ),
            ],
        )
    with engine.begin() as conn:
        # Attempted since `since`: not claimable again in the same round.
        assert store.claim_batch(conn, TOPIC, "pending_subscribe", since, 10) == []
        store.record_outcomes(
            conn,
            TOPIC,
            "subscribe",
            None,
            [store.TokenOutcome(b_id, "subscribed", None, None, False, False)],
        )
    with engine.connect() as conn:
        failure = conn.execute(
            text("SELECT code, attempts, resolved_at IS NOT NULL FROM token_failures")
        ).one()
    assert failure == ("internal-error", 1, True)
    assert statuses(engine) == {"a": "subscribed", "b": "subscribed"}


def _scans_of_subscriptions(conn) -> tuple[int, int]:
    """(sequential, index) scans of the subscription table so far in this transaction."""
    row = conn.execute(
        text(
            "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables "
            "WHERE relname = 'subscriptions'"
        )
    ).one()
    return int(row[0]), int(row[1])


def test_a_batch_s_answers_find_their_rows_by_key_not_by_scanning_the_table(engine) -> None:
    # 20,000 rows, 1,000 answered: left to its costs, the planner hashes the whole table.
    plan(engine, [f"tok:{i:05d}" for i in range(20_000)])
    with engine.begin() as conn:
        since = store.db_now(conn)
        rows = store.claim_batch(conn, TOPIC, "pending_subscribe", since, 1000)
        seq_before, index_before = _scans_of_subscriptions(conn)
        store.record_outcomes(
            conn,
            TOPIC,
            "subscribe",
            None,
            [store.TokenOutcome(i, "subscribed", None, None, False, False) for i, _ in rows],
        )
        seq_after, index_after = _scans_of_subscriptions(conn)
        setting = conn.scalar(text("SELECT current_setting('enable_seqscan')"))
    assert seq_after == seq_before
    assert index_after > index_before
    assert setting == "on"  # only the record's statement plans without sequential scans
    with engine.connect() as conn:
        done = conn.scalar(text("SELECT count(*) FROM subscriptions WHERE status = 'subscribed'"))
    assert done == 1000


def test_a_claim_starts_past_its_cursor(engine) -> None:
    plan(engine, [f"k{i}" for i in range(6)])
    with engine.connect() as conn:
        since = store.db_now(conn)
        first = store.claim_batch(conn, TOPIC, "pending_subscribe", since, 2)
        past = store.claim_batch(conn, TOPIC, "pending_subscribe", since, 10, after=first[-1][0])
        conn.rollback()
    assert [i for i, _ in past] == sorted(i for i, _ in past)
    assert min(i for i, _ in past) > first[-1][0] and len(past) == 4


def _plan_nodes(node: dict) -> list[dict]:
    return [node, *(n for child in node.get("Plans", []) for n in _plan_nodes(child))]


def test_a_claim_past_the_rows_done_reads_one_batch_and_its_tokens_by_key(engine) -> None:
    # 20,000 tokens, 15,000 done: a claim past them reads about one batch of the queue, and
    # its tokens by key, never the whole tokens table (a hash of every token, per batch).
    import datetime as dt
    import json

    size, done = 20_000, 15_000
    with engine.begin() as conn:
        lines = store.load_audience(conn, (f"tok:{i:06d}" for i in range(size)))
        store.plan_topic(conn, TOPIC, None, lines)
        last_done = conn.scalar(
            text("SELECT token_id FROM subscriptions ORDER BY token_id OFFSET :n LIMIT 1"),
            {"n": done - 1},
        )
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE subscriptions SET status = 'subscribed' WHERE token_id <= :last"),
            {"last": last_done},
        )
    with engine.begin() as conn:
        found = conn.execute(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + store.CLAIM_BATCH_SQL),
            {
                "topic": TOPIC,
                "status": "pending_subscribe",
                "since": dt.datetime.now(dt.UTC),
                "limit": 1000,
                "after": last_done,
            },
        ).scalar_one()
    top = (json.loads(found) if isinstance(found, str) else found)[0]["Plan"]
    assert _scan_rows(top) <= 2000, json.dumps(top)[:2000]
    scans = [n for n in _plan_nodes(top) if n.get("Relation Name") == "tokens"]
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), json.dumps(top)[:2000]


def _scan_rows(node: dict) -> int:
    """The most rows any node of a JSON plan produced."""
    here = int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))
    return max([here, *(_scan_rows(child) for child in node.get("Plans", []))])


@pytest.mark.heavy  # 200,000 tokens
def test_a_batch_claim_reads_one_batch_not_the_whole_queue(engine) -> None:
    # 200,000 tokens planned (the plan refreshes the statistics), 180,000 of them done since
    # (the statistics are stale again, as they are during every run): a claim must still read
    # about one batch, whatever the size of the topic or of the queue.
    import datetime as dt
    import json

    size, done = 200_000, 180_000
    with engine.begin() as conn:
        lines = store.load_audience(conn, (f"tok:{i:06d}" for i in range(size)))
        store.plan_topic(conn, TOPIC, None, lines)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE subscriptions SET status = 'subscribed' "
                "WHERE token_id IN (SELECT token_id FROM subscriptions ORDER BY token_id LIMIT :n)"
            ),
            {"n": done},
        )
    with engine.begin() as conn:
        plan = conn.execute(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + store.CLAIM_BATCH_SQL),
            {
                "topic": TOPIC,
                "status": "pending_subscribe",
                "since": dt.datetime.now(dt.UTC),
                "limit": 1000,
                "after": 0,
            },
        ).scalar_one()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    assert _scan_rows(top) <= 2000, json.dumps(top)[:2000]
    assert "ix_subscriptions_pending" in json.dumps(top)
