"""`topic-sync run` end to end: days that publish, reruns, concurrent runs, crash recovery and
configuration from the environment. Each run is the real CLI (in the test's process; the
concurrent runs each in a process of their own), against PostgreSQL and the FCM emulator."""

from __future__ import annotations

import datetime as dt
import math
import subprocess

import pytest

from tests.support import (
    CLI_TIMEOUT,
    DAY1,
    cli_command,
    cli_env,
    db_snapshot,
    describe,
    execute,
    latest_publish,
    make_tokens,
    message_name,
    publishes_to,
    run_args,
    run_cli,
    run_row,
    subscription_calls,
    subscriptions,
    summary,
    topic,
    write_lines,
)

PREFIX = "jobreco"


def _check_published_day(
    proc, emulator, engine, *, day: dt.date, prefix: str, pool_size: int, audience: set[str]
) -> dict:
    """A day that went well: exit 0, FCM holds exactly the audience, which got one message."""
    assert proc.returncode == 0, describe(proc)
    result = summary(proc)
    day_topic = topic(prefix, pool_size, day)
    assert result["status"] == "published"
    assert result["topic"] == day_topic
    sent = latest_publish(emulator, day_topic)
    # Exactly today's audience received today's message: nobody missed, nobody left over.
    assert sent.recipients == audience
    assert emulator.members(day_topic) == audience
    assert sent.message["data"]["date"] == day.isoformat()
    assert result["message_id"] == message_name(sent.message_id)
    assert result["failed"] == {} and result["owed_subscriptions"] == 0
    # The database agrees with FCM and records the publish.
    subs = subscriptions(engine, day_topic)
    assert {t for t, status in subs.items() if status == "subscribed"} == audience
    assert set(subs.values()) <= {"subscribed", "unsubscribed"}
    run = run_row(engine, prefix, day)
    assert run["publish_state"] == "sent"
    assert run["status"] == "published"
    assert run["message_id"] == result["message_id"]
    assert run["topic"] == day_topic
    return result


@pytest.mark.every_transport  # a whole run on each transport
def test_three_days_with_churn_reuse_the_pool_without_misdelivery(
    env, emulator, engine, tmp_path, message_file, transport
):
    pool_size = 2
    days = [DAY1 + dt.timedelta(days=n) for n in range(3)]
    topics = [topic(PREFIX, pool_size, d) for d in days]
    assert topics[2] == topics[0] != topics[1], "day 3 must reuse day 1's topic"

    # Day 1: 2500 tokens (three batches), one of them twice, blank lines around.
    aud1 = make_tokens("u", range(2500))
    lines1 = ["", *aud1[:1200], "", "   ", aud1[7], *aud1[1200:], "", ""]
    # Day 2: 20% of day 1 dropped, 500 new; CRLF line ends and padded lines.
    aud2 = aud1[500:] + make_tokens("u", range(2500, 3000))
    lines2 = [f"  {t}\t\r" if i % 100 == 0 else f"{t}\r" for i, t in enumerate(aud2)]
    # Day 3: 20% of day 2 dropped, 500 new; back on day 1's topic.
    aud3 = aud2[500:] + make_tokens("u", range(3000, 3500))
    lines3 = [*aud3, aud3[0], aud3[-1], "", aud3[1234]]

    expected = [
        # (audience, duplicates, to_add, to_remove)
        (2500, 1, 2500, 0),
        (2500, 0, 2500, 0),  # a fresh topic
        (2500, 3, 1000, 1000),  # day 1's members minus day 3's audience leave
    ]
    for n, (day, lines, audience) in enumerate(
        zip(days, (lines1, lines2, lines3), (aud1, aud2, aud3), strict=True)
    ):
        path = write_lines(tmp_path / f"audience-{day}.txt", lines)
        calls_before = subscription_calls(emulator)
        proc = run_cli(
            *run_args(
                day, path, message_file, prefix=PREFIX, pool_size=pool_size, transport=transport
            ),
            env=env,
        )
        result = _check_published_day(
            proc,
            emulator,
            engine,
            day=day,
            prefix=PREFIX,
            pool_size=pool_size,
            audience=set(audience),
        )
        size, duplicates, to_add, to_remove = expected[n]
        assert {k: result[k] for k in ("audience", "duplicates", "to_add", "to_remove")} == {
            "audience": size,
            "duplicates": duplicates,
            "to_add": to_add,
            "to_remove": to_remove,
        }
        assert result["added"] == to_add and result["removed"] == to_remove
        assert result["skipped_invalid"] == 0
        run = run_row(engine, PREFIX, day)
        assert (run["audience_size"], run["duplicates"], run["added"], run["removed"]) == (
            size,
            duplicates,
            to_add,
            to_remove,
        )
        assert run["transport"] == transport
        # One call per token on v1; batches of at most 1000 tokens on the legacy API (FCM
        # answers 400 to a bigger one), which concurrent workers may split further.
        calls = subscription_calls(emulator) - calls_before
        if transport.startswith("v1"):
            assert calls == to_add + to_remove
        else:
            fewest = math.ceil(to_add / 1000) + math.ceil(to_remove / 1000)
            assert fewest <= calls <= (to_add + to_remove) // 100
        assert all(status == 200 for (kind, status) in emulator.stats if kind != "send")
        assert len(emulator.publishes) == n + 1
        assert len(emulator.validations) == n + 1

    # Day 2's topic still holds day 2's audience; nobody is on both by mistake.
    assert emulator.members(topics[1]) == set(aud2)
    assert emulator.members(topics[0]) == set(aud3)


def test_rerun_of_a_published_date_sends_nothing(env, emulator, engine, tmp_path, message_file):
    audience = make_tokens("r", range(30))
    path = write_lines(tmp_path / "audience.txt", audience)
    args = run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=3)
    first = run_cli(*args, env=env)
    _check_published_day(
        first, emulator, engine, day=DAY1, prefix=PREFIX, pool_size=3, audience=set(audience)
    )
    state, rows = emulator.state(), db_snapshot(engine)

    again = run_cli(*args, env=env)

    assert again.returncode == 0, describe(again)
    result = summary(again)
    assert result["status"] == "already-published"
    assert result["message_id"] == summary(first)["message_id"]
    assert len(emulator.publishes) == 1
    assert emulator.state() == state  # not even a validate_only call
    assert db_snapshot(engine) == rows


def test_two_concurrent_runs_publish_once(env, emulator, engine, tmp_path, message_file):
    audience = make_tokens("c", range(40))
    path = write_lines(tmp_path / "audience.txt", audience)
    args = run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=3)
    emulator.set_latency(0.3)  # each FCM request takes a while: the runs overlap
    procs = [
        subprocess.Popen(
            cli_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=CLI_TIMEOUT)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    day_topic = topic(PREFIX, 3, DAY1)
    assert len(emulator.publishes) == 1, [describe(p) for p in done]
    assert emulator.publishes[0].recipients == set(audience)
    assert len(emulator.validations) == 1
    outcomes = sorted((p.returncode, summary(p)["status"]) for p in done)
    assert outcomes in (
        [(0, "published"), (3, "error")],
        [(0, "already-published"), (0, "published")],
    ), [describe(p) for p in done]
    loser = next(p for p in done if summary(p)["status"] != "published")
    if loser.returncode == 3:
        assert summary(loser)["kind"] == "locked"
        assert "lock" in loser.stderr
    run = run_row(engine, PREFIX, DAY1)
    assert run["publish_state"] == "sent"
    assert run["message_id"] == message_name(emulator.publishes[0].message_id)
    assert publishes_to(emulator, day_topic) == emulator.publishes


def test_crash_between_send_and_record_needs_republish(
    env, emulator, engine, tmp_path, message_file
):
    audience = make_tokens("k", range(25))
    path = write_lines(tmp_path / "audience.txt", audience)
    args = run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=3)
    first = run_cli(*args, env=env)
    _check_published_day(
        first, emulator, engine, day=DAY1, prefix=PREFIX, pool_size=3, audience=set(audience)
    )
    # What a crash after FCM accepted the message, before the answer was recorded, leaves.
    changed = execute(
        engine,
        "UPDATE runs SET publish_state = 'intent', status = 'publishing', message_id = NULL, "
        "published_at = NULL, finished_at = NULL WHERE prefix = :prefix AND run_date = :day",
        prefix=PREFIX,
        day=DAY1,
    )
    assert changed == 1
    state, rows = emulator.state(), db_snapshot(engine)

    withheld = run_cli(*args, env=env)

    assert withheld.returncode == 4, describe(withheld)
    assert summary(withheld)["kind"] == "withheld"
    assert "--republish" in withheld.stderr
    assert emulator.state() == state  # nothing sent, not even validate_only
    assert db_snapshot(engine) == rows

    republished = run_cli(*args, "--republish", env=env)

    result = _check_published_day(
        republished,
        emulator,
        engine,
        day=DAY1,
        prefix=PREFIX,
        pool_size=3,
        audience=set(audience),
    )
    assert len(emulator.publishes) == 2
    assert result["message_id"] != summary(first)["message_id"]
    assert (result["to_add"], result["to_remove"]) == (0, 0)


def test_options_from_environment_variables(env, emulator, engine, tmp_path, message_file):
    audience = make_tokens("v", range(30))
    path = write_lines(tmp_path / "audience.txt", audience)
    day = DAY1 + dt.timedelta(days=1)
    env.update(
        TOPIC_SYNC_DATE=day.isoformat(),
        TOPIC_SYNC_AUDIENCE=str(path),
        TOPIC_SYNC_MESSAGE=str(message_file),
        TOPIC_SYNC_TOPIC_PREFIX="envreco",
        TOPIC_SYNC_POOL_SIZE="3",
        TOPIC_SYNC_TRANSPORT="legacy-iid",
        TOPIC_SYNC_PROPAGATION_DELAY="0",
        TOPIC_SYNC_JSON="1",
        TOPIC_SYNC_BACKFILL="1",  # a fixed test date, far from today
    )
    day_topic = topic("envreco", 3, day)
    assert day_topic != topic("envreco", 7, day), "the pool size must matter for this test"

    dry = run_cli("run", env=env)

    assert dry.returncode == 0, describe(dry)
    assert summary(dry)["status"] == "dry-run"
    assert summary(dry)["topic"] == day_topic
    assert emulator.publishes == [] and subscription_calls(emulator) == 0

    live = run_cli("run", "--live", env=env)

    _check_published_day(
        live, emulator, engine, day=day, prefix="envreco", pool_size=3, audience=set(audience)
    )
    assert emulator.stats[("batchAdd", 200)] == 1  # the transport came from the environment
    assert run_row(engine, "envreco", day)["transport"] == "legacy-iid"


def test_live_mode_from_environment_variable(env, emulator, engine, tmp_path, message_file):
    audience = make_tokens("m", range(10))
    path = write_lines(tmp_path / "audience.txt", audience)
    env["TOPIC_SYNC_LIVE"] = "1"

    proc = run_cli(
        *run_args(DAY1, path, message_file, prefix="envlive", pool_size=3, live=False), env=env
    )

    _check_published_day(
        proc, emulator, engine, day=DAY1, prefix="envlive", pool_size=3, audience=set(audience)
    )


def test_unreachable_database_is_reported_as_an_error(emulator, tmp_path, message_file):
    env = cli_env("postgresql://topic-sync@127.0.0.1:1/absent", emulator)
    path = write_lines(tmp_path / "audience.txt", make_tokens("n", range(3)))

    proc = run_cli(*run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=3), env=env)

    assert emulator.state()["stats"] == {}  # nothing was sent to FCM
    assert proc.returncode == 11, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert "database" in proc.stderr
    assert summary(proc)["status"] == "error"


def test_run_warns_about_a_message_without_type_and_version(tmp_path, env, emulator, message_file):
    audience = write_lines(tmp_path / "warn.txt", make_tokens("w", range(3)))
    args = run_args(DAY1, audience, message_file, prefix="warn", pool_size=1, live=False)
    dry = run_cli(*args, env=env)
    assert dry.returncode == 0, describe(dry)  # a warning never changes the exit code
    [warning] = summary(dry)["warnings"]
    assert "data has no 'type' and 'version' key" in warning
    assert f"warning: {warning}" in dry.stderr
    keys = ("--message-type-key", "kind", "--message-version-key", "date")
    named = run_cli(
        *run_args(DAY1, audience, message_file, prefix="warn", pool_size=1, extra=keys),
        env=env,
    )
    assert named.returncode == 0 and summary(named)["warnings"] == [], describe(named)
    assert "warning:" not in named.stderr
