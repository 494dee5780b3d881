"""`topic-sync doctor` through the real CLI: the checklist, its exit codes, the --json shape,
and proof that it changes nothing in the database or at FCM."""

from __future__ import annotations

import json

from sqlalchemy import text

from tests.support import (
    DAY1,
    FAST,
    db_snapshot,
    describe,
    make_tokens,
    run_args,
    run_cli,
    run_row,
    subscription_calls,
    summary,
    topic,
    write_lines,
)
from topic_sync.app.doctor import NAMES

PREFIX = "docreco"
POOL = 2
DAY2 = DAY1.replace(day=DAY1.day + 1)


def doctor_args(day, audience, message, *extra: str) -> list[str]:
    return [
        "doctor",
        "--date",
        str(day),
        "--audience",
        str(audience),
        "--message",
        str(message),
        "--topic-prefix",
        PREFIX,
        "--pool-size",
        str(POOL),
        *FAST,
        *extra,
    ]


def test_a_ready_setup_prints_a_checklist_and_exits_0(env, emulator, tmp_path, message_file):
    audience = write_lines(tmp_path / "audience.txt", make_tokens("d", range(20)))

    proc = run_cli(*doctor_args(DAY1, audience, message_file), env=env)

    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.splitlines()
    for name in NAMES:
        assert any(line.split()[:2] == ["ok", name] for line in lines), (name, proc.stdout)
    assert lines[-1] == f"doctor for {DAY1}: {len(NAMES)} ok: ready"
    assert "FCM emulator at" in proc.stderr  # as every command says


def test_json_is_one_object_with_every_check(env, emulator, tmp_path, message_file):
    missing = tmp_path / "nothing-here.csv"

    proc = run_cli(*doctor_args(DAY1, missing, message_file, "--json"), env=env)

    assert proc.returncode == 9, describe(proc)
    document = summary(proc)
    assert set(document) == {"version", "kind", "ready", "exit_code", "date", "checks"}
    assert (document["version"], document["kind"]) == (1, "doctor")
    assert (document["ready"], document["exit_code"], document["date"]) == (False, 9, str(DAY1))
    assert [c["name"] for c in document["checks"]] == list(NAMES)
    for check in document["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in ("ok", "warn", "fail", "skip")
        if check["status"] == "fail":
            assert check["fix"], check
        elif check["status"] in ("ok", "skip"):
            assert check["fix"] is None, check
    failed = [c for c in document["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["audience"]
    assert failed[0]["detail"] == f"{missing}: no such file"
    assert "FAIL  audience" in proc.stderr  # the checklist, for people, on stderr


def test_failures_print_their_fix_and_exit_9(env, emulator, engine, tmp_path, message_file):
    audience = write_lines(tmp_path / "audience.txt", ["tok:1", "bad token", "tok:2"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO fcm_target (id, project_id, endpoint) "
                "VALUES (1, 'prod', 'fcm.googleapis.com')"
            )
        )

    proc = run_cli(*doctor_args(DAY1, audience, message_file), env=env)

    assert proc.returncode == 9, describe(proc)
    out = proc.stdout
    assert f"FAIL  audience     {audience}:2: whitespace inside token" in out
    assert "FAIL  target       the database's state belongs to project 'prod'" in out
    assert out.count("fix: ") == 2
    assert out.splitlines()[-1].endswith("2 FAIL: NOT ready (exit 9)")


def test_doctor_changes_nothing_in_the_database_or_at_fcm(
    env, emulator, engine, tmp_path, message_file
):
    # A live first day, so there is state to leave alone: members, a run, a publish, a binding.
    day1 = write_lines(tmp_path / "day1.txt", make_tokens("n", range(40)))
    first = run_cli(*run_args(DAY1, day1, message_file, prefix=PREFIX, pool_size=POOL), env=env)
    assert first.returncode == 0, describe(first)
    day2 = write_lines(tmp_path / "day2.txt", make_tokens("n", range(20, 70)))
    db_before = every_row(engine)
    state = emulator.state()
    calls = subscription_calls(emulator)

    for extra in ((), ("--json",), ("--live",)):
        proc = run_cli(*doctor_args(DAY2, day2, message_file, *extra), env=env)
        assert proc.returncode == 0, describe(proc)

    assert every_row(engine) == db_before
    assert run_row(engine, PREFIX, DAY2) is None
    after = emulator.state()
    for key in ("topics", "publishes", "unregistered"):
        assert after[key] == state[key], key
    assert subscription_calls(emulator) == calls
    assert after["validations"] == state["validations"] + 3
    assert [v.topic for v in emulator.validations[-3:]] == [topic(PREFIX, POOL, DAY2)] * 3


def every_row(engine) -> dict:
    """Every row of every table topic-sync has (db_snapshot's four, and the rest)."""
    tables = ("topic_fences", "fcm_target", "alembic_version")
    with engine.connect() as conn:
        more = {
            table: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {table}"))), key=repr)
            for table in tables
        }
    return db_snapshot(engine) | more


def test_a_usage_error_is_one_json_object(env, tmp_path, message_file):
    proc = run_cli("doctor", "--pool-size", "0", "--json", env=env)
    assert proc.returncode == 2, describe(proc)
    assert json.loads(proc.stdout)["status"] == "error"
