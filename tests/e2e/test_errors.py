"""FCM's per-token errors end to end, on every transport: dead tokens, a removal that keeps
failing (the publish is withheld), and credentials FCM rejects (the run stops)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support import (
    DAY1,
    describe,
    failures,
    latest_publish,
    make_tokens,
    run_args,
    run_cli,
    run_row,
    subscriptions,
    summary,
    token_row,
    topic,
    write_lines,
)
from topic_sync.redact import shorten

PREFIX = "errreco"
# Per-token errors as each transport reads them, end to end: every test runs on each.
pytestmark = pytest.mark.every_transport
NOT_REGISTERED = "registration-token-not-registered"
DAY2 = DAY1 + dt.timedelta(days=1)


def _run(env, tmp_path, message_file, transport, day, audience, *extra):
    path = write_lines(tmp_path / f"audience-{day}.txt", audience)
    args = run_args(
        day, path, message_file, prefix=PREFIX, pool_size=1, transport=transport, extra=extra
    )
    return run_cli(*args, env=env)


def test_dead_tokens_get_no_message_and_leave_later_diffs(
    env, emulator, engine, tmp_path, message_file, transport
):
    the_topic = topic(PREFIX, 1, DAY1)
    base = make_tokens("d", range(40))
    dead, dies_later = base[0], base[1]
    emulator.unregister(dead)

    day1 = _run(env, tmp_path, message_file, transport, DAY1, base)

    assert day1.returncode == 0, describe(day1)
    result = summary(day1)
    assert (result["audience"], result["to_add"], result["added"]) == (40, 40, 39)
    assert result["failed"] == {NOT_REGISTERED: 1}
    assert result["owed_subscriptions"] == 0
    assert latest_publish(emulator, the_topic).recipients == set(base[1:])
    assert token_row(engine, dead)["invalid_reason"] == NOT_REGISTERED
    assert token_row(engine, dead)["invalid_at"] is not None
    assert subscriptions(engine, the_topic)[dead] == "unsubscribed"
    [failure] = failures(engine)
    assert (failure["token"], failure["op"], failure["code"], failure["reason"]) == (
        dead,
        "subscribe",
        NOT_REGISTERED,
        # FCM's own code on v1 (from its error details); the Instance ID API says NOT_FOUND.
        "NOT_FOUND" if transport == "legacy-iid" else "UNREGISTERED",
    )
    assert failure["resolved_at"] is None

    # Day 2: the dead token is still in the audience; a member died overnight and leaves it.
    emulator.unregister(dies_later)
    new = make_tokens("d", range(40, 45))
    audience2 = [t for t in base if t != dies_later] + new
    stats_before = emulator.stats

    day2 = _run(env, tmp_path, message_file, transport, DAY2, audience2)

    assert day2.returncode == 0, describe(day2)
    result = summary(day2)
    assert result["audience"] == 44
    # Back in a later date's audience, the dead token is tried once more, and is still dead.
    assert (result["skipped_invalid"], result["retried_dead"]) == (0, 1)
    assert (result["to_add"], result["to_remove"]) == (6, 1)
    assert (result["added"], result["removed"]) == (5, 1)
    # Removing a token FCM no longer knows achieved the removal: no failure.
    assert result["failed"] == {NOT_REGISTERED: 1}
    assert result["newly_dead"] == 2  # the retried token again, and the one that died
    assert latest_publish(emulator, the_topic).recipients == set(audience2) - {dead}
    assert token_row(engine, dies_later)["invalid_reason"] == NOT_REGISTERED
    assert subscriptions(engine, the_topic)[dies_later] == "unsubscribed"
    assert token_row(engine, dead)["retried_on"] == DAY2
    assert len(failures(engine)) == 2  # the retry's, and nothing for the removal
    if transport.startswith("v1"):  # one more call for the retried token
        assert emulator.stats[("subscribe", 404)] == stats_before[("subscribe", 404)] + 1

    # Day 3: the same audience. Tried once, not every day: the dead token is left out.
    stats_before = emulator.stats
    day3 = _run(env, tmp_path, message_file, transport, DAY2 + dt.timedelta(days=1), audience2)
    assert day3.returncode == 0, describe(day3)
    result = summary(day3)
    assert (result["skipped_invalid"], result["retried_dead"], result["newly_dead"]) == (1, 0, 0)
    assert len(failures(engine)) == 2  # nothing new for report
    if transport.startswith("v1"):  # the skipped token was not even tried
        assert emulator.stats[("subscribe", 404)] == stats_before[("subscribe", 404)]
    assert run_row(engine, PREFIX, DAY2 + dt.timedelta(days=1))["skipped_invalid"] == 1


def test_failing_removal_withholds_the_publish_until_it_succeeds(
    env, emulator, engine, tmp_path, message_file, transport
):
    the_topic = topic(PREFIX, 1, DAY1)
    base = make_tokens("w", range(30))
    day1 = _run(env, tmp_path, message_file, transport, DAY1, base)
    assert day1.returncode == 0, describe(day1)

    stuck, leaving = base[3], base[4]
    audience2 = [t for t in base if t not in (stuck, leaving)] + make_tokens("w", range(30, 32))
    emulator.inject_token_error(stuck, "INTERNAL", op="unsubscribe")

    withheld = _run(env, tmp_path, message_file, transport, DAY2, audience2, "--max-retries", "2")

    assert withheld.returncode == 4, describe(withheld)
    assert summary(withheld)["kind"] == "withheld"
    assert shorten(stuck) in withheld.stderr  # named, but not whole: cron mail keeps it
    assert stuck not in withheld.stderr
    assert shorten(leaving) not in withheld.stderr
    assert len(emulator.publishes) == 1  # day 1's only
    assert stuck in emulator.members(the_topic)
    assert leaving not in emulator.members(the_topic)
    run = run_row(engine, PREFIX, DAY2)
    assert (run["status"], run["publish_state"], run["message_id"]) == ("withheld", "none", None)
    assert run["failed"] == {"internal-error": 1}
    assert run["retries"] == 2
    assert subscriptions(engine, the_topic)[stuck] == "pending_unsubscribe"
    [failure] = failures(engine)
    assert (failure["token"], failure["op"], failure["code"]) == (
        stuck,
        "unsubscribe",
        "internal-error",
    )
    assert failure["attempts"] == 3  # the first try and two retries
    assert failure["resolved_at"] is None

    emulator.clear_faults()
    rerun = _run(env, tmp_path, message_file, transport, DAY2, audience2)

    assert rerun.returncode == 0, describe(rerun)
    result = summary(rerun)
    assert result["status"] == "published"
    assert (result["to_remove"], result["removed"], result["to_add"]) == (1, 1, 0)
    assert result["failed"] == {}
    assert len(emulator.publishes) == 2
    assert latest_publish(emulator, the_topic).recipients == set(audience2)
    run = run_row(engine, PREFIX, DAY2)
    assert (run["status"], run["publish_state"]) == ("published", "sent")
    assert run["message_id"] == result["message_id"]
    [failure] = failures(engine)
    assert failure["resolved_at"] is not None


def test_rejected_credentials_stop_the_run_without_blaming_tokens(
    env, emulator, engine, tmp_path, message_file, transport
):
    the_topic = topic(PREFIX, 1, DAY1)
    audience = make_tokens("a", range(20))
    for token in audience:
        emulator.inject_token_error(token, "UNAUTHENTICATED")

    stopped = _run(env, tmp_path, message_file, transport, DAY1, audience)

    assert stopped.returncode == 6, describe(stopped)
    assert summary(stopped)["kind"] == "credentials"
    assert "credentials" in stopped.stderr
    assert emulator.publishes == []
    assert emulator.members(the_topic) == set()
    assert failures(engine) == []
    assert all(token_row(engine, t)["invalid_at"] is None for t in audience)
    assert set(subscriptions(engine, the_topic).values()) == {"pending_subscribe"}
    assert run_row(engine, PREFIX, DAY1)["publish_state"] == "none"

    emulator.clear_faults()
    again = _run(env, tmp_path, message_file, transport, DAY1, audience)

    assert again.returncode == 0, describe(again)
    assert summary(again)["added"] == 20
    assert latest_publish(emulator, the_topic).recipients == set(audience)


def test_dead_token_flood_stops_the_run_and_report_says_why(
    env, emulator, engine, tmp_path, message_file
):
    import json

    audience = make_tokens("g", range(200))
    for token in audience[:150]:  # a wrong project looks like this, not a mass uninstall
        emulator.unregister(token)

    run = _run(env, tmp_path, message_file, "v1-direct", DAY1, audience)

    assert run.returncode == 5, describe(run)
    assert "dead-token guard" in run.stderr and "wrong Firebase project" in run.stderr
    assert emulator.publishes == []
    assert run_row(engine, PREFIX, DAY1)["status"] == "guarded"
    shown = run_cli("report", "--format", "json", env=env)
    [row] = json.loads(shown.stdout)["runs"]
    assert row["status"] == "guarded" and not row["published"]
    assert "dead-token guard" in row["why"]
    status = run_cli("status", env=env)
    assert status.returncode == 4 and "GUARDED" in status.stdout, describe(status)
