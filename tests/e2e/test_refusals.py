"""Runs that must change nothing: bad input, a dry run, and the churn guard. Each compares a
snapshot of every table and of the emulator before and after the CLI ran."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from tests.support import (
    DAY1,
    cli_env,
    db_snapshot,
    describe,
    latest_publish,
    make_tokens,
    row_counts,
    run_args,
    run_cli,
    subscription_calls,
    summary,
    topic,
    write_lines,
)
from topic_sync.emulator import FcmEmulator
from topic_sync.store import db

PREFIX = "guardreco"
DAY2 = DAY1 + dt.timedelta(days=1)
GOOD_MESSAGE = '{"notification": {"title": "Jobs for {date}", "body": "Your picks are ready"}}'


# --- bad input ------------------------------------------------------------------------------


@dataclasses.dataclass
class Baseline:
    """One published day 1 that every bad-input case tries (and fails) to build on."""

    engine: Engine
    emulator: FcmEmulator
    env: dict[str, str]
    audience: Path
    message: Path


@pytest.fixture(scope="module")
def baseline(pg_server_url: str, template_db: str, tmp_path_factory) -> Iterator[Baseline]:
    """A database and an emulator shared by the bad-input cases, which must not change them."""
    name = f"ts_e2e_{uuid.uuid4().hex[:12]}"
    server = make_url(db.sqlalchemy_url(pg_server_url))
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    files = tmp_path_factory.mktemp("baseline")
    # A token of the longest accepted length goes through, unlike the 4097-character one below.
    audience = write_lines(files / "audience.txt", [*make_tokens("b", range(30)), "L" * 4096])
    message = files / "message.json"
    message.write_text(GOOD_MESSAGE)
    try:
        with FcmEmulator() as emulator:
            env = cli_env(url, emulator)
            day1 = run_cli(*run_args(DAY1, audience, message, prefix=PREFIX, pool_size=1), env=env)
            assert day1.returncode == 0, describe(day1)
            assert len(emulator.members(topic(PREFIX, 1, DAY1))) == 31
            yield Baseline(engine, emulator, env, audience, message)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclasses.dataclass
class Case:
    """One refused input: the CLI arguments and what the error message must name."""

    args: list[str]
    expect: list[str]
    # A live run validates the message with FCM (validate_only) before it reads the audience.
    validates_first: bool = False


def _args(base: Baseline, *, audience=None, message=None, day=DAY2, prefix=PREFIX) -> list[str]:
    return run_args(
        day, audience or base.audience, message or base.message, prefix=prefix, pool_size=1
    )


def _audience(base: Baseline, d: Path, lines: list[str], line: int | None, reason: str) -> Case:
    path = write_lines(d / "audience.txt", lines)
    where = f"{path}:{line}: " if line else f"{path}: "
    return Case(_args(base, audience=path), [where + reason], validates_first=True)


def _message(base: Baseline, d: Path, content: str, where: str, reason: str) -> Case:
    path = d / "message.json"
    path.write_text(content)
    return Case(_args(base, message=path), [f"{path}{where}: {reason}"])


GOOD = make_tokens("b", range(3))
CASES: dict[str, Callable[[Baseline, Path], Case]] = {
    "audience-bad-character": lambda b, d: _audience(
        b, d, [GOOD[0], GOOD[1], "tok#3", GOOD[2]], 3, "character '#' not allowed"
    ),
    "audience-whitespace-inside-token": lambda b, d: _audience(
        b, d, [GOOD[0], "two tokens", GOOD[1]], 2, "whitespace inside token"
    ),
    "audience-token-too-long": lambda b, d: _audience(
        b, d, [*GOOD, "x" * 4097], 4, "token is 4097 characters; at most 4096"
    ),
    "audience-empty-file": lambda b, d: _audience(b, d, [], None, "no tokens"),
    "audience-blank-lines-only": lambda b, d: _audience(b, d, ["", "  ", ""], None, "no tokens"),
    "audience-missing-file": lambda b, d: Case(
        _args(b, audience=d / "absent.txt"),
        [f"{d / 'absent.txt'}: no such file"],
        validates_first=True,
    ),
    "message-bad-json": lambda b, d: _message(
        b, d, '{\n  "notification": {"title": "Jobs",\n    "body": }\n}\n', ":3", "invalid JSON"
    ),
    "message-with-topic": lambda b, d: _message(
        b,
        d,
        '{"topic": "jobreco-1", "notification": {"title": "t", "body": "b"}}',
        "",
        "topic: remove this field",
    ),
    "bad-date": lambda b, d: Case(_args(b, day="2026-02-30"), ["--date '2026-02-30'"]),
    "bad-topic-prefix": lambda b, d: Case(_args(b, prefix="job reco"), ["topic prefix 'job reco'"]),
}


@pytest.mark.parametrize("case_name", CASES)
def test_bad_input_changes_nothing(baseline: Baseline, tmp_path: Path, case_name: str):
    case = CASES[case_name](baseline, tmp_path)
    emulator = baseline.emulator
    rows, state, calls = (
        db_snapshot(baseline.engine),
        emulator.state(),
        subscription_calls(emulator),
    )
    assert row_counts(rows) == {
        "tokens": 31,
        "subscriptions": 31,
        "runs": 1,
        "run_attempts": 0,
        "token_failures": 0,
        "campaigns": 1,
        "audiences": 1,
    }

    proc = run_cli(*case.args, env=baseline.env)

    assert proc.returncode == 2, describe(proc)
    error = summary(proc)
    assert (error["status"], error["kind"], error["exit_code"]) == ("error", "bad_input", 2)
    for fragment in case.expect:
        assert fragment in proc.stderr, describe(proc)
        assert fragment in error["error"]
    assert "Traceback" not in proc.stderr
    assert db_snapshot(baseline.engine) == rows
    after = emulator.state()
    assert subscription_calls(emulator) == calls
    assert after["topics"] == state["topics"]
    assert after["publishes"] == state["publishes"]
    if case.validates_first:
        # At most the live run's validate_only send, which changes nothing in FCM.
        assert after["validations"] - state["validations"] <= 1
    else:
        assert after == state, "refused before anything was sent to FCM"


# --- dry run --------------------------------------------------------------------------------


def test_dry_run_plans_and_validates_but_changes_nothing(
    env, emulator, engine, tmp_path, message_file
):
    day1_topic = topic(PREFIX, 1, DAY1)
    audience = make_tokens("p", range(50))
    path = write_lines(tmp_path / "day1.txt", [*audience, audience[3], ""])
    empty = db_snapshot(engine)

    dry = run_cli(
        *run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=1, live=False), env=env
    )

    assert dry.returncode == 0, describe(dry)
    result = summary(dry)
    assert result["status"] == "dry-run"
    assert result["topic"] == day1_topic
    assert (result["audience"], result["duplicates"]) == (50, 1)
    assert (result["to_add"], result["to_remove"], result["added"], result["removed"]) == (
        50,
        0,
        0,
        0,
    )
    assert result["message_id"] is None
    assert "plan: 0 to remove, 50 to add" in dry.stderr
    assert "--live" in dry.stderr
    assert db_snapshot(engine) == empty
    assert subscription_calls(emulator) == 0
    assert emulator.publishes == []
    assert emulator.members(day1_topic) == set()
    [validation] = emulator.validations
    assert validation.topic == day1_topic
    assert validation.message["notification"]["title"] == f"Jobs for {DAY1}"

    # After a live day 1, a dry run of day 2 shows the diff and still changes nothing.
    live = run_cli(*run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=1), env=env)
    assert live.returncode == 0, describe(live)
    audience2 = audience[10:] + make_tokens("p", range(50, 55))
    path2 = write_lines(tmp_path / "day2.txt", audience2)
    rows, state = db_snapshot(engine), emulator.state()

    dry2 = run_cli(
        *run_args(DAY2, path2, message_file, prefix=PREFIX, pool_size=1, live=False), env=env
    )

    assert dry2.returncode == 0, describe(dry2)
    result = summary(dry2)
    assert (result["status"], result["to_add"], result["to_remove"]) == ("dry-run", 5, 10)
    assert "plan: 10 to remove, 5 to add" in dry2.stderr
    assert db_snapshot(engine) == rows
    after = emulator.state()
    assert after["topics"] == state["topics"]
    assert after["publishes"] == state["publishes"]
    assert after["validations"] == state["validations"] + 1
    assert {k: v for k, v in after["stats"].items() if k != "send"} == {
        k: v for k, v in state["stats"].items() if k != "send"
    }


# --- churn guard ----------------------------------------------------------------------------


def test_churn_guard_refuses_a_suspicious_audience_until_allowed(
    env, emulator, engine, tmp_path, message_file
):
    the_topic = topic(PREFIX, 1, DAY1)
    audience = make_tokens("g", range(100))
    day1 = run_cli(
        *run_args(
            DAY1,
            write_lines(tmp_path / "day1.txt", audience),
            message_file,
            prefix=PREFIX,
            pool_size=1,
        ),
        env=env,
    )
    assert day1.returncode == 0, describe(day1)
    audience2 = audience[:10] + make_tokens("g", range(100, 105))
    path2 = write_lines(tmp_path / "day2.txt", audience2)
    args = run_args(DAY2, path2, message_file, prefix=PREFIX, pool_size=1)
    rows, state, calls = db_snapshot(engine), emulator.state(), subscription_calls(emulator)

    refused = run_cli(*args, env=env)

    assert refused.returncode == 5, describe(refused)
    assert summary(refused)["kind"] == "refused"
    assert "90 of the previous audience's 100 tokens are gone (90%" in refused.stderr
    assert "--allow-large-churn" in refused.stderr
    assert db_snapshot(engine) == rows
    assert subscription_calls(emulator) == calls
    assert emulator.state()["topics"] == state["topics"]
    assert emulator.state()["publishes"] == state["publishes"]

    allowed = run_cli(*args, "--allow-large-churn", env=env)

    assert allowed.returncode == 0, describe(allowed)
    result = summary(allowed)
    assert result["status"] == "published"
    assert (result["removed"], result["added"]) == (90, 5)
    assert latest_publish(emulator, the_topic).recipients == set(audience2)
    assert len(emulator.publishes) == 2


# --- the embedded PostgreSQL against production FCM ------------------------------------------


def test_live_against_production_fcm_with_the_embedded_database_is_refused(
    database_url, emulator, tmp_path, message_file
):
    """A DATABASE_URL lost on the way (an env file a shell misread) must not make a private
    folder the record of production's topics: refused, exit 5, no server started, no call."""
    env = cli_env(database_url, emulator)
    for name in ("DATABASE_URL", "FCM_EMULATOR_HOST"):
        del env[name]
    folder = tmp_path / "embedded"
    env["TOPIC_SYNC_EMBEDDED_DIR"] = str(folder)
    path = write_lines(tmp_path / "audience.txt", make_tokens("x", range(5)))

    proc = run_cli(*run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=1), env=env)

    assert proc.returncode == 5, describe(proc)
    assert summary(proc)["kind"] == "refused"
    assert "--allow-embedded-database" in proc.stderr
    assert not folder.exists()
    assert subscription_calls(emulator) == 0 and emulator.validations == []
