"""Campaigns and dry runs through the real CLI: a prefix change is one recorded operation,
a host with the old configuration is refused, and forget changes nothing without --live."""

from __future__ import annotations

import json

from tests.support import (
    DAY1,
    db_snapshot,
    describe,
    make_tokens,
    publishes_to,
    run_args,
    run_cli,
    summary,
    topic,
    write_lines,
)

PREFIX = "camp"
POOL = 3


def test_a_prefix_change_mid_rollout_publishes_each_date_once(
    tmp_path, env, emulator, engine, message_file
) -> None:
    audience = write_lines(tmp_path / "a.txt", make_tokens("c", range(30)))
    first = run_cli(*run_args(DAY1, audience, message_file, prefix=PREFIX, pool_size=POOL), env=env)
    assert first.returncode == 0, describe(first)
    assert "campaign 'camp' registered" in first.stderr

    # Dry run: says what would change, changes nothing.
    before = db_snapshot(engine)
    dry = run_cli("campaign", "update", PREFIX, "--topic-prefix", "camp2", "--json", env=env)
    assert dry.returncode == 0, describe(dry)
    assert summary(dry)["changed"] == {"prefix": {"was": PREFIX, "becomes": "camp2"}}
    assert summary(dry)["live"] is False and db_snapshot(engine) == before

    live = run_cli(
        "campaign", "update", PREFIX, "--topic-prefix", "camp2", "--live", "--json", env=env
    )
    assert live.returncode == 0, describe(live)
    assert summary(live)["after"]["prefix"] == "camp2"

    # The new host: the same date is already published.
    new = run_cli(*run_args(DAY1, audience, message_file, prefix="camp2", pool_size=POOL), env=env)
    assert new.returncode == 0, describe(new)
    assert summary(new)["status"] == "already-published"
    assert summary(new)["campaign"] == PREFIX
    # The old host, still configured with the old prefix: refused, told the fix.
    old = run_cli(*run_args(DAY1, audience, message_file, prefix=PREFIX, pool_size=POOL), env=env)
    assert old.returncode == 2, describe(old)
    assert "topic-sync campaign update camp --topic-prefix camp --live" in old.stderr
    assert len(publishes_to(emulator, topic(PREFIX, POOL, DAY1))) == 1
    assert publishes_to(emulator, topic("camp2", POOL, DAY1)) == []

    shown = run_cli("campaign", "show", PREFIX, "--json", env=env)
    assert shown.returncode == 0, describe(shown)
    [record] = summary(shown)["campaigns"]
    assert (record["prefix"], record["pool_size"]) == ("camp2", POOL)
    assert [c["kind"] for c in record["changes"]] == ["registered", "changed"]
    assert record["target"]["project_id"] == "demo-e2e"
    # status reads the campaign, not its prefix: one line, published.
    status = run_cli("status", "--json", env=env)
    assert status.returncode == 0, describe(status)
    assert [(r["campaign"], r["published"]) for r in json.loads(status.stdout)["runs"]] == [
        (PREFIX, True)
    ]


def test_forget_without_live_changes_nothing(tmp_path, env, emulator, engine, message_file):
    tokens = make_tokens("f", range(10))
    audience = write_lines(tmp_path / "a.txt", tokens)
    run = run_cli(*run_args(DAY1, audience, message_file, prefix=PREFIX, pool_size=POOL), env=env)
    assert run.returncode == 0, describe(run)
    before = db_snapshot(engine)
    for args in (["forget", tokens[0]], ["forget", "--undo", tokens[0]]):
        dry = run_cli(*args, "--json", env=env)
        assert dry.returncode == 0, describe(dry)
        assert summary(dry)["live"] is False and "dry run" in dry.stderr
        assert db_snapshot(engine) == before
    assert summary(run_cli("forget", tokens[0], "--json", env=env))["removals_queued"] == 1
    assert topic(PREFIX, POOL, DAY1) in emulator.topics_of(tokens[0])  # FCM untouched
    done = run_cli("forget", tokens[0], "--live", "--json", env=env)
    assert done.returncode == 0, describe(done)
    assert emulator.topics_of(tokens[0]) == set()
