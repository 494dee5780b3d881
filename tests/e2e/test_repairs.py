"""The morning after, through the real CLI: status, report, reconcile, forget."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shlex

from tests.support import (
    DAY1,
    describe,
    latest_publish,
    make_tokens,
    publishes_to,
    run_args,
    run_cli,
    summary,
    topic,
    write_lines,
)
from topic_sync.redact import shorten

PREFIX = "fix"
NO_WAIT = ("--retry-min-wait", "0", "--retry-max-wait", "0")
POOL = 2


def test_withheld_day_reported_reconciled_then_published(tmp_path, env, emulator, message_file):
    day1 = make_tokens("a", range(40))
    run = run_cli(
        *run_args(
            DAY1,
            write_lines(tmp_path / "d1.txt", day1),
            message_file,
            prefix=PREFIX,
            pool_size=POOL,
        ),
        env=env,
    )
    assert run.returncode == 0, describe(run)
    stuck = day1[:2]
    for token in stuck:
        emulator.inject_token_error(token, "INTERNAL", op="unsubscribe")
    day3 = DAY1 + dt.timedelta(days=POOL)  # the same topic again
    audience3 = write_lines(tmp_path / "d3.txt", day1[2:] + make_tokens("b", range(5)))
    args3 = run_args(day3, audience3, message_file, prefix=PREFIX, pool_size=POOL)
    withheld = run_cli(*args3, env=env)
    assert withheld.returncode == 4, describe(withheld)

    status = run_cli("status", env=env)
    assert status.returncode == 4 and "WITHHELD" in status.stdout, describe(status)

    listed = run_cli(
        "report", "--code", "internal-error", "--format", "json", "--full-tokens", env=env
    )
    assert listed.returncode == 0, describe(listed)
    doc = json.loads(listed.stdout)
    assert doc["version"] == 1 and doc["kind"] == "failures"
    assert sorted(f["token"] for f in doc["failures"]) == sorted(stuck)
    assert {f["op"] for f in doc["failures"]} == {"unsubscribe"}

    as_csv = run_cli("report", "--date", day3.isoformat(), "--format", "csv", env=env)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 2 and all(r["code"] == "internal-error" for r in rows)
    assert all(r["token"] not in stuck for r in rows)  # shortened: device identifiers

    runs = run_cli("report", env=env)  # no filter: the latest run and its failed tokens
    assert runs.returncode == 0 and "withheld" in runs.stdout.lower(), describe(runs)
    assert "2 failed tokens not resolved" in runs.stdout
    assert "internal-error  unsubscribe  2" in runs.stdout
    assert all(shorten(t) in runs.stdout and t not in runs.stdout for t in stuck)
    history = run_cli("report", "--runs", env=env)
    assert len(history.stdout.strip().splitlines()) == 3, describe(history)  # header, 2 days
    assert not any(shorten(t) in history.stdout for t in stuck)
    overview = json.loads(run_cli("report", "--format", "json", env=env).stdout)
    assert (overview["version"], overview["kind"], len(overview["runs"])) == (1, "runs", 2)
    [campaign] = overview["campaigns"]
    assert campaign["run"]["date"] == day3.isoformat() and campaign["failed_tokens"] == 2

    dry = run_cli(
        "reconcile", "--topic-prefix", PREFIX, "--pool-size", str(POOL), *NO_WAIT, env=env
    )
    assert dry.returncode == 0 and "owed 2 removals" in dry.stderr, describe(dry)
    emulator.clear_faults()
    fixed = run_cli(
        "reconcile",
        "--topic-prefix",
        PREFIX,
        "--pool-size",
        str(POOL),
        "--live",
        "--json",
        *NO_WAIT,
        env=env,
    )
    assert fixed.returncode == 0, describe(fixed)
    assert len(publishes_to(emulator, topic(PREFIX, POOL, day3))) == 1  # reconcile never publishes

    published = run_cli(*args3, env=env)
    assert published.returncode == 0, describe(published)
    sent = latest_publish(emulator, topic(PREFIX, POOL, day3))
    assert sent.recipients == frozenset(day1[2:] + make_tokens("b", range(5)))
    assert run_cli("status", env=env).returncode == 0


def test_forget_live_removes_from_every_pool_topic(tmp_path, env, emulator, message_file):
    tokens = make_tokens("c", range(12))
    for offset in range(POOL):
        day = DAY1 + dt.timedelta(days=offset)
        done = run_cli(
            *run_args(
                day,
                write_lines(tmp_path / f"{offset}.txt", tokens),
                message_file,
                prefix=PREFIX,
                pool_size=POOL,
            ),
            env=env,
        )
        assert done.returncode == 0, describe(done)
    gone = tokens[3]
    assert len(emulator.topics_of(gone)) == POOL
    forgot = run_cli("forget", gone, "--live", "--json", *NO_WAIT, env=env)
    assert forgot.returncode == 0, describe(forgot)
    assert json.loads(forgot.stdout)["forgotten"] == 1
    assert emulator.topics_of(gone) == set()

    # Suppressed: a later audience that holds it skips it, and the run counts it.
    later = DAY1 + dt.timedelta(days=POOL)
    args = run_args(
        later,
        write_lines(tmp_path / "later.txt", tokens),
        message_file,
        prefix=PREFIX,
        pool_size=POOL,
    )
    skipped = run_cli(*args, env=env)
    assert skipped.returncode == 0 and summary(skipped)["suppressed"] == 1, describe(skipped)
    assert gone not in latest_publish(emulator, topic(PREFIX, POOL, later)).recipients

    undone = run_cli("forget", "--undo", gone, "--live", "--json", env=env)
    expected = {"version": 1, "kind": "forget", "live": True, "restored": 1, "removals_lifted": 0}
    assert undone.returncode == 0 and json.loads(undone.stdout) == expected, describe(undone)
    assert emulator.topics_of(gone) == set()  # nothing sent by the undo itself
    again = later + dt.timedelta(days=1)
    back = run_cli(
        *run_args(
            again,
            write_lines(tmp_path / "again.txt", tokens),
            message_file,
            prefix=PREFIX,
            pool_size=POOL,
        ),
        env=env,
    )
    assert back.returncode == 0 and summary(back)["suppressed"] == 0, describe(back)
    assert gone in latest_publish(emulator, topic(PREFIX, POOL, again)).recipients


def test_every_report_format(tmp_path, env, emulator, message_file):
    emulator.unregister(make_tokens("d", [0])[0])
    tokens = make_tokens("d", range(6))
    done = run_cli(
        *run_args(
            DAY1,
            write_lines(tmp_path / "a.txt", tokens),
            message_file,
            prefix=PREFIX,
            pool_size=POOL,
        ),
        env=env,
    )
    assert done.returncode == 0, describe(done)
    for fmt in ("table", "csv", "json"):
        failed = run_cli("report", "--failed", "--format", fmt, env=env)
        assert failed.returncode == 0 and "registration-token-not-registered" in failed.stdout
        assert tokens[0] not in failed.stdout
        runs = run_cli("report", "--runs", "--format", fmt, env=env)
        assert runs.returncode == 0 and topic(PREFIX, POOL, DAY1) in runs.stdout
    whole = run_cli("report", "--failed", "--full-tokens", env=env)
    assert tokens[0] in whole.stdout
    dead = run_cli("report", "--dead", env=env)
    assert dead.returncode == 0 and "registration-token-not-registered" in dead.stdout
    assert tokens[0] not in dead.stdout and shorten(tokens[0]) in dead.stdout
    dead_json = json.loads(
        run_cli("report", "--dead", "--format", "json", "--full-tokens", env=env).stdout
    )
    [item] = dead_json["dead"]
    assert (item["token"], item["dead_on"], item["retried_on"]) == (
        tokens[0],
        DAY1.isoformat(),
        None,
    )
    mixed = run_cli("report", "--dead", "--runs", env=env)
    assert mixed.returncode == 2 and "does not combine" in mixed.stderr, describe(mixed)


def test_a_withheld_day_names_the_exact_commands_that_finish_it(
    env, emulator, engine, tmp_path, message_file
):
    """Not a bare 'topic-sync reconcile' (a dry run, without scope): the live reconcile of the
    day's topic and the rerun of the day, with the date spelled out. Run as printed, once FCM
    recovers, they finish the day."""
    prefix, day2 = "finishreco", DAY1 + dt.timedelta(days=1)
    base = make_tokens("f", range(12))
    first = write_lines(tmp_path / "day1.txt", base)
    assert (
        run_cli(
            *run_args(DAY1, first, message_file, prefix=prefix, pool_size=1), env=env
        ).returncode
        == 0
    )
    stuck = base[0]
    emulator.inject_token_error(stuck, "INTERNAL", op="unsubscribe")
    second = write_lines(tmp_path / "day2.txt", base[1:])
    args = run_args(
        day2, second, message_file, prefix=prefix, pool_size=1, extra=["--max-retries", "0"]
    )

    withheld = run_cli(*args, env=env)

    assert withheld.returncode == 4, describe(withheld)
    error = summary(withheld)["error"]
    finish = error.split(f"To finish {day2}: ", 1)[1]
    repair, rerun = finish.split(", then ")
    assert repair.startswith(
        f"topic-sync reconcile --date {day2} --backfill --topic-prefix {prefix} --pool-size 1"
    )
    assert repair.endswith(" --live")
    assert rerun.startswith(f"topic-sync run --date {day2} --backfill") and rerun.endswith(
        " --live"
    )
    assert f"--audience {second}" in rerun and "--max-retries 0" in rerun
    assert len(emulator.publishes) == 1

    emulator.clear_faults()
    for printed in (repair, rerun):
        words = shlex.split(printed)
        assert words[0] == "topic-sync"
        done = run_cli(*words[1:], env=env)
        assert done.returncode == 0, describe(done)
    assert latest_publish(emulator, f"{prefix}-0").recipients == set(base[1:])
