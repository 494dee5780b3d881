"""Repairs against real PostgreSQL and the emulator, through the real SDK."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from tests.support import (
    DAY,
    POOL,
    PREFIX,
    last_recipients,
    opts,
    reconcile_options,
    snapshot,
    toks,
)
from topic_sync.engine.reconcile import (
    forget,
    prefix_of,
    reconcile,
    unforget,
)
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.run import run_day
from topic_sync.errors import Locked, PublishWithheld
from topic_sync.pool import pool_topics, topic_for

FAST = RetryPolicy(min_wait=0, max_wait=0, max_retries=2)
POOL_TOPICS = tuple(pool_topics(PREFIX, POOL))


def repair(deps, **kw):
    return reconcile(reconcile_options(topics=POOL_TOPICS, retry=FAST, **kw), deps)


def two_days(tmp_path, message_file, deps) -> None:
    """Two pool topics with different members (day 2's audience is mostly new: allowed)."""
    run_day(opts(tmp_path, message_file, toks(0, 30)), deps)
    day2 = opts(
        tmp_path, message_file, toks(20, 50), DAY + dt.timedelta(days=1), allow_large_churn=True
    )
    run_day(day2, deps)


def test_prefix_of() -> None:
    assert prefix_of("jobreco-3") == "jobreco"
    assert prefix_of("a-b-12") == "a-b"
    assert prefix_of("solo") == "solo"


def test_withheld_day_is_published_after_reconcile(tmp_path, message_file, deps, emulator):
    run_day(opts(tmp_path, message_file, toks(0, 30)), deps)
    for token in toks(0, 3):
        emulator.inject_token_error(token, "INTERNAL", op="unsubscribe")
    later = DAY + dt.timedelta(days=POOL)
    options = opts(tmp_path, message_file, toks(3, 33), later)
    with pytest.raises(PublishWithheld):
        run_day(options, deps)
    assert len(emulator.publishes) == 1

    dry = repair(deps)
    assert [t.owed_remove for t in dry.topics if t.topic == options_topic(later)] == [3]
    assert len(emulator.publishes) == 1
    emulator.clear_faults()
    result = repair(deps, live=True)
    topic = options_topic(later)
    report = next(t for t in result.topics if t.topic == topic)
    assert (report.removed, report.left_remove) == (3, 0)
    assert len(emulator.publishes) == 1  # reconcile never publishes
    published = run_day(options, deps)
    assert published.status == "published"
    assert last_recipients(emulator, topic) == frozenset(toks(3, 33))


def options_topic(day: dt.date) -> str:
    return topic_for(PREFIX, POOL, day)


def tamper(emulator) -> tuple[str, set[str], set[str]]:
    """Change FCM behind the database's back: drop two members, add two strangers."""
    topic = options_topic(DAY)
    dropped = set(toks(0, 2))
    stray = set(toks(40, 42))  # known tokens (day 2), never subscribed to day 1's topic
    for token in dropped:
        emulator.unsubscribe_direct(token, topic)
    for token in stray:
        emulator.subscribe_direct(token, topic)
    return topic, dropped, stray


def test_full_reasserts_the_table(tmp_path, message_file, deps, emulator) -> None:
    two_days(tmp_path, message_file, deps)
    topic, dropped, _ = tamper(emulator)
    result = repair(deps, full=True, live=True)
    assert emulator.members(topic) >= set(toks(0, 30))
    assert dropped <= emulator.members(topic)
    report = next(t for t in result.topics if t.topic == topic)
    assert report.full_add == 30 and report.left_add == report.left_remove == 0


def test_full_is_resumable_after_a_kill(tmp_path, message_file, deps, emulator) -> None:
    two_days(tmp_path, message_file, deps)
    topic, dropped, _ = tamper(emulator)
    calls = []
    inner = deps.client

    class DiesOnce:
        transport = inner.transport
        target = inner.target

        def subscribe(self, tokens, t, **kw):
            calls.append(t)
            result = inner.subscribe(tokens, t, **kw)
            if len(calls) == 1:
                raise SystemExit("killed")
            return result

        unsubscribe = inner.unsubscribe
        publish = inner.publish
        list_topics = inner.list_topics

    import dataclasses

    with pytest.raises(SystemExit):
        reconcile(
            reconcile_options(
                topics=(topic,), full=True, live=True, retry=FAST, batch_size=5, concurrency=1
            ),
            dataclasses.replace(deps, client=DiesOnce()),
        )
    with deps.engine.connect() as conn:
        owed = conn.scalar(
            text("SELECT count(*) FROM subscriptions WHERE topic = :t AND status LIKE 'pending%'"),
            {"t": topic},
        )
    assert owed > 0  # the re-assertion is recorded as owed work, not lost
    repair(deps, live=True)  # a plain reconcile finishes it
    assert dropped <= emulator.members(topic)


def test_audit_reports_drift_exactly_and_changes_nothing(tmp_path, message_file, deps, emulator):
    two_days(tmp_path, message_file, deps)
    topic, dropped, stray = tamper(emulator)
    before, members = snapshot(deps.engine), emulator.members(topic)
    result = repair(deps, audit=True)
    assert result.audited == 50
    found = {(d.token, d.topic, d.in_fcm) for d in result.drift}
    expected = {(t, topic, False) for t in dropped} | {(t, topic, True) for t in stray}
    assert found == expected
    assert (result.drift_in_fcm, result.drift_missing) == (2, 2)
    assert snapshot(deps.engine) == before
    assert emulator.members(topic) == members


def test_audit_live_heals_the_drift(tmp_path, message_file, deps, emulator) -> None:
    two_days(tmp_path, message_file, deps)
    topic, dropped, stray = tamper(emulator)
    repair(deps, audit=True, live=True)
    assert emulator.members(topic) == set(toks(0, 30))
    again = repair(deps, audit=True)
    assert again.drift == []


def test_audit_sample_limits_the_tokens(tmp_path, message_file, deps, emulator) -> None:
    two_days(tmp_path, message_file, deps)
    result = repair(deps, audit=True, sample=7)
    assert result.audited == 7 and result.drift == []


def test_forget_removes_a_token_from_every_pool_topic(tmp_path, message_file, deps, emulator):
    two_days(tmp_path, message_file, deps)
    gone = toks(0, 50)[25]  # in both days' audiences: subscribed to both pool topics
    assert {options_topic(DAY), options_topic(DAY + dt.timedelta(days=1))} <= (
        emulator.topics_of(gone)
    )
    marked, queued, owing = forget(deps, [gone, "never-seen-token"], live=True)
    assert (marked, queued) == (2, 2) and sorted(owing) == sorted(POOL_TOPICS)
    repair(deps, live=True)
    assert emulator.topics_of(gone) == set()
    # A later audience that still lists it does not bring it back.
    later = DAY + dt.timedelta(days=2)
    result = run_day(
        opts(tmp_path, message_file, toks(20, 50), later, allow_large_churn=True), deps
    )
    assert gone not in last_recipients(emulator, result.topic)
    assert result.plan.skipped == 1
    assert result.plan.suppressed == result.summary()["suppressed"] == 1
    with deps.engine.connect() as conn:
        stored = conn.scalar(text("SELECT suppressed FROM runs WHERE run_date = :d"), {"d": later})
    assert stored == 1


def test_forget_undo_lets_later_audiences_include_the_token(tmp_path, message_file, deps, emulator):
    two_days(tmp_path, message_file, deps)
    gone = toks(0, 50)[25]
    forget(deps, [gone], live=True)
    repair(deps, live=True)
    assert emulator.topics_of(gone) == set()
    # Only what was forgotten; its removals were confirmed, so none is left to lift.
    assert unforget(deps, [gone, "never-seen-token"], live=True) == (1, 0)
    assert unforget(deps, [gone], live=True) == (0, 0)  # undoing twice changes nothing
    assert emulator.topics_of(gone) == set()  # nothing sent until an audience has it
    later = DAY + dt.timedelta(days=2)
    result = run_day(
        opts(tmp_path, message_file, toks(20, 50), later, allow_large_churn=True), deps
    )
    assert gone in last_recipients(emulator, result.topic)
    assert (result.plan.skipped, result.plan.suppressed) == (0, 0)
    # "never-seen-token" was forgotten by nobody: it stays off the list, and a forget of it
    # still suppresses it later.
    forget(deps, ["never-seen-token"], live=True)
    with deps.engine.connect() as conn:
        assert conn.scalar(
            text("SELECT forgotten_at IS NOT NULL FROM tokens WHERE token = 'never-seen-token'")
        )


def test_reconcile_takes_the_prefix_lock(tmp_path, message_file, deps) -> None:
    from topic_sync.store.db import advisory_lock, campaign_lock

    with advisory_lock(deps.engine, campaign_lock(PREFIX), what="run"), pytest.raises(Locked):
        repair(deps)


def test_repair_failures_are_one_row_per_token(tmp_path, message_file, deps, emulator) -> None:
    two_days(tmp_path, message_file, deps)
    gone = toks(0, 50)[25]
    forget(deps, [gone], live=True)
    emulator.inject_token_error(gone, "INTERNAL", op="unsubscribe")
    repair(deps, live=True)
    repair(deps, live=True)
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT topic, attempts FROM token_failures f JOIN tokens t ON t.id = f.token_id "
                "WHERE t.token = :t ORDER BY topic"
            ),
            {"t": gone},
        ).all()
    assert [r.topic for r in rows] == sorted(POOL_TOPICS)  # one row per topic, not per try
    assert all(r.attempts == 6 for r in rows)  # 2 reconciles x (1 try + 2 retries)


def test_forget_without_live_changes_nothing(tmp_path, message_file, deps, emulator) -> None:
    two_days(tmp_path, message_file, deps)
    gone = toks(0, 50)[25]
    before = snapshot(deps.engine)
    # The dry run counts what --live would do ...
    assert forget(deps, [gone, "never-seen-token"], live=False) == (2, 2, sorted(POOL_TOPICS))
    assert unforget(deps, [gone], live=False) == (0, 0)
    # ... and changes nothing: no mark, no owed removal, FCM untouched.
    assert snapshot(deps.engine) == before
    assert {options_topic(DAY), options_topic(DAY + dt.timedelta(days=1))} <= (
        emulator.topics_of(gone)
    )


def subscription(engine, token: str, topic: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT s.status, s.forgotten_from FROM subscriptions s "
                    "JOIN tokens t ON t.id = s.token_id WHERE t.token = :t AND s.topic = :topic"
                ),
                {"t": token, "topic": topic},
            ).one()
        )


def test_forget_undo_lifts_the_removals_still_owed(tmp_path, message_file, deps, emulator):
    two_days(tmp_path, message_file, deps)
    gone = toks(0, 50)[25]  # subscribed to both pool topics
    done, owed = options_topic(DAY), options_topic(DAY + dt.timedelta(days=1))
    forget(deps, [gone], live=True)
    assert subscription(deps.engine, gone, owed) == ("pending_unsubscribe", "subscribed")
    # The removal from one topic is confirmed; the other's is tried and proves nothing.
    emulator.inject_token_error(gone, "INTERNAL", op="unsubscribe")
    reconcile(reconcile_options(topics=(owed,), retry=FAST, live=True), deps)
    emulator.clear_faults()
    reconcile(reconcile_options(topics=(done,), retry=FAST, live=True), deps)
    assert emulator.topics_of(gone) == {owed}
    assert subscription(deps.engine, gone, owed) == ("pending_unsubscribe", "subscribed")

    assert unforget(deps, [gone], live=True) == (1, 1)
    # A confirmed removal stays done; the owed one is lifted, re-asserted (it was tried).
    assert subscription(deps.engine, gone, done) == ("unsubscribed", None)
    assert subscription(deps.engine, gone, owed) == ("pending_subscribe", None)
    repair(deps, live=True)
    assert emulator.topics_of(gone) == {owed}  # never removed: nothing to bring back
    # Lifted before any try: back to what the forget found, nothing to send.
    other = toks(0, 50)[22]  # in both days too
    forget(deps, [other], live=True)
    assert unforget(deps, [other], live=True) == (1, 2)
    assert {subscription(deps.engine, other, t) for t in POOL_TOPICS} == {("subscribed", None)}
    with deps.engine.connect() as conn:
        assert (
            conn.scalar(text("SELECT count(*) FROM subscriptions WHERE status LIKE 'pending%'"))
            == 0
        )
