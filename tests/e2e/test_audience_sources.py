"""Audience sources that pipelines produce, through the real CLI: standard input, gzip and
zstd files told by their content, a chosen CSV column, a PostgreSQL query or table, and
waiting for the producer (--wait-for) until the audience never came."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import zstandard

from tests.support import (
    DAY1,
    db_snapshot,
    describe,
    execute,
    latest_publish,
    make_tokens,
    publishes_to,
    run_args,
    run_cli,
    run_row,
    subscription_calls,
    summary,
    topic,
)

PREFIX = "sources"
POOL = 2
AUDIENCE = make_tokens("s", range(40))


def _published_exactly(proc, emulator, audience) -> dict:
    assert proc.returncode == 0, describe(proc)
    result = summary(proc)
    assert result["status"] == "published"
    sent = latest_publish(emulator, topic(PREFIX, POOL, DAY1))
    assert sent.recipients == set(audience)
    return result


def _args(audience: Path | str, message: Path, *extra: str, live: bool = True) -> list[str]:
    return run_args(DAY1, audience, message, prefix=PREFIX, pool_size=POOL, live=live, extra=extra)


def _query_args(message: Path, *extra: str) -> list[str]:
    """`run` with an audience query instead of an audience file."""
    args = _args("unused", message, *extra)
    at = args.index("--audience")
    return args[:at] + args[at + 2 :]


def _nothing_changed(before, engine, emulator, calls_before) -> None:
    assert db_snapshot(engine) == before
    assert subscription_calls(emulator) == calls_before
    assert publishes_to(emulator, topic(PREFIX, POOL, DAY1)) == []


def test_audience_from_standard_input(env, emulator, engine, message_file):
    data = "".join(f"{t}\n" for t in AUDIENCE)
    proc = run_cli(*_args("-", message_file), env=env, input=data)
    _published_exactly(proc, emulator, AUDIENCE)
    assert run_row(engine, PREFIX, DAY1)["audience_path"] == "<stdin>"


def test_bad_line_on_standard_input_names_stdin_and_changes_nothing(
    env, emulator, engine, message_file
):
    before, calls = db_snapshot(engine), subscription_calls(emulator)
    proc = run_cli(
        *_args("-", message_file), env=env, input=f"{AUDIENCE[0]}\n{AUDIENCE[1]}\nnot a token\n"
    )
    assert proc.returncode == 2, describe(proc)
    assert "<stdin>:3: whitespace inside token" in proc.stderr
    _nothing_changed(before, engine, emulator, calls)


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, lambda data: zstandard.ZstdCompressor().compress(data)],
    ids=["gzip", "zstd"],
)
def test_compressed_audience_named_txt(env, emulator, engine, message_file, tmp_path, compress):
    path = tmp_path / "audience.txt"
    path.write_bytes(compress("".join(f"{t}\n" for t in AUDIENCE).encode()))
    result = _published_exactly(run_cli(*_args(path, message_file), env=env), emulator, AUDIENCE)
    assert result["audience"] == len(AUDIENCE)


def test_truncated_gzip_is_bad_input_and_changes_nothing(
    env, emulator, engine, message_file, tmp_path
):
    whole = gzip.compress("".join(f"{t}\n" for t in make_tokens("g", range(50_000))).encode())
    path = tmp_path / "audience.txt"
    path.write_bytes(whole[: len(whole) // 2])
    before, calls = db_snapshot(engine), subscription_calls(emulator)
    proc = run_cli(*_args(path, message_file), env=env)
    assert proc.returncode == 2, describe(proc)
    assert f"{path}: gzip data is corrupt or truncated" in proc.stderr
    assert summary(proc)["kind"] == "bad_input"
    _nothing_changed(before, engine, emulator, calls)


def test_a_gzip_cut_between_members_is_caught_by_the_markers_manifest(
    env, emulator, engine, message_file, tmp_path
):
    """Two whole gzip members of three: nothing in the bytes says so. The producer's
    _SUCCESS marker says how many lines it wrote, and the run holds the file to it."""
    members = [
        gzip.compress("".join(f"{t}\n" for t in AUDIENCE[i : i + 20]).encode()) for i in (0, 20)
    ]
    path = tmp_path / "audience.txt.gz"
    path.write_bytes(members[0])
    marker = tmp_path / "_SUCCESS"
    marker.write_text(f"lines={len(AUDIENCE)}\ndate={DAY1}\n")
    before, calls = db_snapshot(engine), subscription_calls(emulator)
    proc = run_cli(*_args(path, message_file, "--wait-for", str(marker)), env=env)
    assert proc.returncode == 2, describe(proc)
    assert f"{path}: 20 lines, but its manifest {marker} says 40" in proc.stderr
    _nothing_changed(before, engine, emulator, calls)

    path.write_bytes(b"".join(members))
    proc = run_cli(*_args(path, message_file, "--wait-for", str(marker)), env=env)
    _published_exactly(proc, emulator, AUDIENCE)
    assert f"is checked against its manifest {marker} (lines 40, date {DAY1})" in proc.stderr


def test_token_column(env, emulator, engine, message_file, tmp_path):
    path = tmp_path / "export.txt"
    path.write_text("user,fcm\n" + "".join(f"u{i},{t}\n" for i, t in enumerate(AUDIENCE)))
    proc = run_cli(*_args(path, message_file, "--token-column", "fcm"), env=env)
    _published_exactly(proc, emulator, AUDIENCE)


def test_missing_token_column_names_file_and_header_line(
    env, emulator, engine, message_file, tmp_path
):
    path = tmp_path / "export.csv"
    path.write_text("user,token\nu1," + AUDIENCE[0] + "\n")
    before, calls = db_snapshot(engine), subscription_calls(emulator)
    proc = run_cli(*_args(path, message_file, "--token-column", "fcm"), env=env)
    assert proc.returncode == 2, describe(proc)
    assert f"{path}:1: no 'fcm' column in the CSV header (found: 'user', 'token')" in proc.stderr
    _nothing_changed(before, engine, emulator, calls)


@pytest.fixture
def reco_table(engine):
    execute(engine, "CREATE SCHEMA reco")
    execute(engine, "CREATE TABLE reco.daily (user_id int, token text, day date)")
    for i, token in enumerate(AUDIENCE):
        execute(
            engine,
            "INSERT INTO reco.daily VALUES (:i, :t, :d)",
            i=i,
            t=token,
            d=DAY1 if i % 2 == 0 else DAY1.replace(day=1),
        )
    return "reco.daily"


def test_audience_query(env, emulator, engine, message_file, reco_table):
    query = f"SELECT token FROM reco.daily WHERE day = '{DAY1}'"
    proc = run_cli(*_query_args(message_file, "--audience-query", query), env=env)
    even = AUDIENCE[::2]
    _published_exactly(proc, emulator, even)
    assert run_row(engine, PREFIX, DAY1)["audience_path"] == "query"


def test_audience_table_name_from_another_database_url(
    env, emulator, engine, message_file, reco_table, database_url
):
    # The table's `token` column is taken among several; the URL is masked in config show.
    proc = run_cli(
        *_query_args(message_file, "--audience-query", "Reco.Daily"),
        "--audience-database-url",
        database_url,
        env=env,
    )
    _published_exactly(proc, emulator, AUDIENCE)


def test_audience_query_row_errors_name_the_row_and_change_nothing(
    env, emulator, engine, message_file, reco_table
):
    execute(engine, "INSERT INTO reco.daily VALUES (99, NULL, :d)", d=DAY1)
    before, calls = db_snapshot(engine), subscription_calls(emulator)
    query = "SELECT token FROM reco.daily ORDER BY user_id"
    proc = run_cli(*_query_args(message_file, "--audience-query", query), env=env)
    assert proc.returncode == 2, describe(proc)
    assert f"query:{len(AUDIENCE) + 1}: NULL token" in proc.stderr
    _nothing_changed(before, engine, emulator, calls)

    # A query that would write is refused by the READ ONLY transaction.
    execute(engine, "CREATE SEQUENCE reco.counter")
    query = "SELECT token FROM reco.daily WHERE nextval('reco.counter') > 0"
    proc = run_cli(*_query_args(message_file, "--audience-query", query), env=env)
    assert proc.returncode == 2, describe(proc)
    assert "read-only transaction" in proc.stderr
    assert execute(engine, "SELECT 1 FROM reco.counter WHERE NOT is_called") == 1
    _nothing_changed(before, engine, emulator, calls)


def test_an_audience_query_cannot_unpublish_a_day(env, emulator, engine, message_file, reco_table):
    """The reported attack: statements smuggled after the query commit a DELETE of the
    publish records, and the rerun of a published day sends it again."""
    query = f"SELECT token FROM reco.daily WHERE day = '{DAY1}'"
    _published_exactly(
        run_cli(*_query_args(message_file, "--audience-query", query), env=env),
        emulator,
        AUDIENCE[::2],
    )
    attack = (
        "SELECT token FROM reco.daily) AS audience; COMMIT; DELETE FROM runs; "
        "SELECT * FROM (SELECT token FROM reco.daily"
    )
    before = db_snapshot(engine)
    for live in (False, True):
        args = [*_query_args(message_file, "--audience-query", attack), "--date", "2026-11-21"]
        if not live:
            args.remove("--live")
        proc = run_cli(*args, env=env)
        assert proc.returncode == 2, describe(proc)
        assert "query: PostgreSQL refused it: it is more than one statement" in proc.stderr
        assert db_snapshot(engine) == before
    again = run_cli(*_query_args(message_file, "--audience-query", query), env=env)
    assert again.returncode == 0, describe(again)
    assert summary(again)["status"] == "already-published"
    assert len(publishes_to(emulator, topic(PREFIX, POOL, DAY1))) == 1


def test_audience_and_audience_query_exclude_each_other(env, engine, message_file, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(AUDIENCE[0] + "\n")
    proc = run_cli(*_args(path, message_file, "--audience-query", "reco.daily"), env=env)
    assert proc.returncode == 2, describe(proc)
    assert "--audience and --audience-query exclude each other" in summary(proc)["error"]


def test_wait_timeout_ends_as_audience_never_came(env, emulator, engine, message_file, tmp_path):
    marker = tmp_path / "{date}" / "_SUCCESS"
    audience = tmp_path / "audience.txt"
    before_calls = subscription_calls(emulator)
    proc = run_cli(
        *_args(audience, message_file, "--wait-for", str(marker), "--wait-timeout", "0s"),
        env=env,
    )
    assert proc.returncode == 10, describe(proc)
    doc = summary(proc)
    assert doc["kind"] == "no_audience"
    assert "the audience never came" in doc["error"]
    assert str(tmp_path / DAY1.isoformat() / "_SUCCESS") in doc["error"]
    run = run_row(engine, PREFIX, DAY1)
    assert run["status"] == "no_audience" and run["publish_state"] == "none"
    assert subscription_calls(emulator) == before_calls
    assert publishes_to(emulator, topic(PREFIX, POOL, DAY1)) == []

    report = run_cli("report", "--runs", "--format", "json", env=env)
    assert report.returncode == 0, describe(report)
    (row,) = summary(report)["runs"]
    assert row["status"] == "no_audience" and not row["published"]
    assert "audience never came" in row["why"]

    # The producer delivers; the rerun waits no more and publishes the day.
    (tmp_path / DAY1.isoformat()).mkdir()
    (tmp_path / DAY1.isoformat() / "_SUCCESS").touch()
    audience.write_text("".join(f"{t}\n" for t in AUDIENCE))
    proc = run_cli(
        *_args(audience, message_file, "--wait-for", str(marker), "--wait-timeout", "0s"),
        env=env,
    )
    _published_exactly(proc, emulator, AUDIENCE)
    assert run_row(engine, PREFIX, DAY1)["status"] == "published"
