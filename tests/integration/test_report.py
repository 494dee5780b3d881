"""Reports against real PostgreSQL: failures from real runs on the emulator, plus rows
written directly where a case is easier to set up by hand (other prefixes, repairs)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import re

import pytest
from sqlalchemy import text

from tests.support import DAY, POOL, PREFIX, ensure_campaign, opts
from topic_sync.app.report import (
    ATTEMPT_FIELDS,
    CAMPAIGN_FIELDS,
    DEAD_FIELDS,
    FAILURE_FIELDS,
    GROUP_FIELDS,
    RUN_FIELDS,
    FailedToken,
    FailureFilter,
    RunSummary,
    dead_tokens,
    failed_tokens,
    latest_runs,
    overview,
    render_dead,
    render_failures,
    render_overview,
    render_runs,
    render_status,
    run_summaries,
    shorten,
    status_exit_code_of,
)
from topic_sync.engine.run import run_day
from topic_sync.errors import BadInput, ExitCode, PublishWithheld
from topic_sync.pool import topic_for

LATER = DAY + dt.timedelta(days=POOL)  # the same topic as DAY
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DATE = re.compile(r"^\d{4}-\d\d-\d\d$")


@pytest.fixture
def transport() -> str:
    return "v1"  # reports read the database; one transport is enough


def tok(i: int) -> str:
    """Tokens long enough to be shortened as real ones are (real ones are ~160 chars)."""
    return f"device:{i:04d}:{'x' * 24}{i:04d}"


@dataclasses.dataclass
class Day:
    audience: list[str]
    dead: str  # unregistered before day one: its subscribe fails for good
    leaving: str  # its removal on LATER fails with INTERNAL until cleared
    first_run: int
    later_run: int
    later_options: object


def run_id(engine, prefix: str, day: dt.date) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            text("SELECT id FROM runs WHERE prefix = :p AND run_date = :d"), {"p": prefix, "d": day}
        )


@pytest.fixture
def withheld(tmp_path, message_file, deps, emulator) -> Day:
    """DAY published (one dead token failed); LATER withheld by an unconfirmed removal."""
    audience = [tok(i) for i in range(6)]
    dead, leaving = audience[4], audience[5]
    emulator.unregister(dead)
    assert run_day(opts(tmp_path, message_file, audience), deps).status == "published"
    emulator.inject_token_error(leaving, "INTERNAL", op="unsubscribe")
    later = opts(tmp_path, message_file, audience[:4], LATER)
    with pytest.raises(PublishWithheld):
        run_day(later, deps)
    return Day(
        audience,
        dead,
        leaving,
        run_id(deps.engine, PREFIX, DAY),
        run_id(deps.engine, PREFIX, LATER),
        later,
    )


# --- rows written by hand -------------------------------------------------------------------


def add_run(engine, prefix: str, day: dt.date, status: str, **cols) -> int:
    values = {
        "prefix": prefix,
        "run_date": day,
        "topic": f"{prefix}-0",
        "transport": "v1",
        "status": status,
        **cols,
    }
    if status == "published":
        values.setdefault("publish_state", "sent")
        values.setdefault("message_id", f"projects/p/messages/{prefix}-{day}")
    if status != "syncing":
        values.setdefault("finished_at", dt.datetime(2026, 11, 22, 7, 0, tzinfo=dt.UTC))
    values.setdefault("started_at", dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC))
    with engine.begin() as conn:
        values["campaign_id"] = ensure_campaign(conn, prefix)
        names = ", ".join(values)
        binds = ", ".join(f":{name}" for name in values)
        return conn.scalar(
            text(f"INSERT INTO runs ({names}) VALUES ({binds}) RETURNING id"), values
        )


def add_failure(
    engine,
    run: int | None,
    token: str,
    topic: str,
    op: str,
    code: str,
    reason: str,
    *,
    days_ago: int,
) -> None:
    with engine.begin() as conn:
        token_id = conn.scalar(
            text(
                "INSERT INTO tokens (token) VALUES (:t) ON CONFLICT (token_key) "
                "DO UPDATE SET token = excluded.token RETURNING id"
            ),
            {"t": token},
        )
        conn.execute(
            text(
                """
                INSERT INTO token_failures
                    (run_id, token_id, topic, op, code, reason, first_seen, last_seen)
                VALUES (:run, :token_id, :topic, :op, :code, :reason,
                        now() - make_interval(days => :ago + 1),
                        now() - make_interval(days => :ago))
                """
            ),
            {
                "run": run,
                "token_id": token_id,
                "topic": topic,
                "op": op,
                "code": code,
                "reason": reason,
                "ago": days_ago,
            },
        )


@pytest.fixture
def more(withheld, engine) -> Day:
    """Besides the real runs: another prefix's failure and two repairs' (no run)."""
    other = add_run(engine, "other", DAY, "withheld", note="2 removals from other-0 unconfirmed")
    add_failure(
        engine,
        other,
        tok(100),
        "other-0",
        "subscribe",
        "too-many-topics",
        "TOO_MANY_TOPICS",
        days_ago=1,
    )
    add_failure(
        engine,
        None,
        tok(101),
        f"{PREFIX}-1",
        "subscribe",
        "rate-limited",
        "RESOURCE_EXHAUSTED",
        days_ago=2,
    )
    add_failure(
        engine,
        None,
        tok(102),
        f"{PREFIX}-beta-0",
        "unsubscribe",
        "unknown-error",
        "WEIRD",
        days_ago=3,
    )
    return withheld


def tokens(rows) -> list[str]:
    return [row.token for row in rows]


# --- failed tokens --------------------------------------------------------------------------


def test_unresolved_failures_newest_first_with_their_run(withheld, engine) -> None:
    rows = failed_tokens(engine, FailureFilter())
    assert tokens(rows) == [withheld.leaving, withheld.dead]
    leaving, dead = rows
    topic = topic_for(PREFIX, POOL, DAY)
    assert (leaving.op, leaving.code, leaving.reason) == (
        "unsubscribe",
        "internal-error",
        "INTERNAL",
    )
    assert leaving.attempts == 3  # first try + max_retries
    assert (leaving.run_id, leaving.run_date, leaving.prefix) == (withheld.later_run, LATER, PREFIX)
    assert (dead.op, dead.code) == ("subscribe", "registration-token-not-registered")
    assert dead.reason in {"NOT_FOUND", "UNREGISTERED"} and dead.attempts == 1
    assert (dead.run_id, dead.run_date, dead.prefix) == (withheld.first_run, DAY, PREFIX)
    for row in rows:
        assert row.topic == topic and not row.resolved
        assert row.first_seen <= row.last_seen and row.last_seen.utcoffset() == dt.timedelta(0)
    assert failed_tokens(engine) == rows  # the filter is optional


def test_each_filter_narrows(more, engine) -> None:
    def only(**kw) -> list[str]:
        return tokens(failed_tokens(engine, FailureFilter(**kw)))

    everything = [more.leaving, more.dead, tok(100), tok(101), tok(102)]
    assert only() == everything
    assert only(date=DAY) == [more.dead, tok(100)]  # repairs have no date
    assert only(date=LATER) == [more.leaving]
    assert only(date=DAY - dt.timedelta(days=1)) == []
    assert only(run_id=more.first_run) == [more.dead]
    assert only(code="internal-error") == [more.leaving]
    assert only(code="rate-limited") == [tok(101)]
    assert only(code="credentials") == []
    assert only(op="unsubscribe") == [more.leaving, tok(102)]
    assert only(op="subscribe") == [more.dead, tok(100), tok(101)]
    # A prefix covers its runs and repairs on its own pool topics, not "jobreco-beta-0".
    assert only(prefix=PREFIX) == [more.leaving, more.dead, tok(101)]
    assert only(prefix=f"{PREFIX}-beta") == [tok(102)]
    assert only(prefix="other") == [tok(100)]
    assert only(prefix="job") == []
    assert only(prefix=PREFIX, date=DAY, op="subscribe") == [more.dead]
    assert only(limit=2) == everything[:2]
    runless = failed_tokens(engine, FailureFilter(code="rate-limited"))[0]
    assert (runless.run_id, runless.run_date, runless.prefix) == (None, None, None)


def test_resolved_failures_are_listed_only_on_request(withheld, engine, deps, emulator) -> None:
    emulator.clear_faults()
    assert run_day(withheld.later_options, deps).status == "published"
    assert tokens(failed_tokens(engine)) == [withheld.dead]
    rows = failed_tokens(engine, FailureFilter(include_resolved=True))
    assert [(row.token, row.resolved) for row in rows] == [
        (withheld.leaving, True),
        (withheld.dead, False),
    ]
    resolved_only = FailureFilter(include_resolved=True, code="internal-error", date=LATER)
    assert tokens(failed_tokens(engine, resolved_only)) == [withheld.leaving]


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (FailureFilter(code="not-registered"), "registration-token-not-registered, sender-id"),
        (FailureFilter(code="INTERNAL"), "unknown error code 'INTERNAL'; valid: invalid-argument"),
        (FailureFilter(op="remove"), "unknown operation 'remove'; valid: subscribe, unsubscribe"),
        (FailureFilter(limit=0), "limit must be at least 1"),
    ],
)
def test_bad_filter_values_are_bad_input(engine, flt, message) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        failed_tokens(engine, flt)


# --- run summaries and status ---------------------------------------------------------------


def test_run_summaries_say_whether_each_day_went_out(withheld, engine, deps, emulator) -> None:
    later, first = run_summaries(engine)
    topic = topic_for(PREFIX, POOL, DAY)
    assert (later.run_id, later.date, later.status, later.published) == (
        withheld.later_run,
        LATER,
        "withheld",
        False,
    )
    assert later.why == f"1 removals from {topic} unconfirmed"
    assert later.failed == {"internal-error": 1} and later.message_id is None
    assert (later.audience, later.removed, later.retries) == (4, 0, 2)  # the removal failed
    assert later.duration_seconds is not None and later.duration_seconds >= 0
    assert (first.status, first.published, first.why) == ("published", True, "published")
    assert first.message_id and (first.audience, first.added) == (6, 5)
    assert first.failed == {"registration-token-not-registered": 1}
    assert first.started_at.utcoffset() == dt.timedelta(0)
    table = render_runs([later, first], "table")
    assert f"1 removals from {topic} unconfirmed" in table
    assert "internal-error=1" in table and "registration-token-not-registered=1" in table

    emulator.clear_faults()
    run_day(withheld.later_options, deps)
    now = run_summaries(engine, limit=1)[0]
    assert (now.run_id, now.status, now.published, now.why) == (
        withheld.later_run,
        "published",
        True,
        "published",
    )
    assert now.failed == {} and now.removed == 1


def test_why_is_derived_from_the_status_when_there_is_no_note(engine) -> None:
    add_run(engine, "a", DAY, "withheld")
    add_run(engine, "b", DAY, "syncing")
    add_run(engine, "c", DAY, "deadline", note="deadline reached: 3 removals and 0 additions")
    by_prefix = {run.prefix: run for run in run_summaries(engine)}
    assert by_prefix["a"].why == "withheld: removals unconfirmed"
    assert by_prefix["b"].why == "in progress" and by_prefix["b"].duration_seconds is None
    assert by_prefix["c"].why == "deadline reached: 3 removals and 0 additions"
    assert by_prefix["a"].duration_seconds == 3600.0
    assert all("already published" not in run.why for run in by_prefix.values())


def test_run_summaries_order_prefix_and_limit(engine) -> None:
    early = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
    ids = {
        "old": add_run(engine, "jobreco", DAY, "published"),
        "first": add_run(engine, "other", DAY + dt.timedelta(days=1), "failed", started_at=early),
        "new": add_run(
            engine,
            "jobreco",
            DAY + dt.timedelta(days=1),
            "withheld",
            started_at=early + dt.timedelta(hours=1),  # same date, started later
        ),
        "newest": add_run(engine, "other", DAY + dt.timedelta(days=2), "published"),
    }
    order = [run.run_id for run in run_summaries(engine)]
    assert order == [ids["newest"], ids["new"], ids["first"], ids["old"]]
    assert [run.run_id for run in run_summaries(engine, prefix="jobreco")] == [
        ids["new"],
        ids["old"],
    ]
    assert [run.run_id for run in run_summaries(engine, limit=1)] == [ids["newest"]]
    assert len(run_summaries(engine, limit=None)) == 4
    assert run_summaries(engine, prefix="nothing") == []
    with pytest.raises(BadInput, match="limit"):
        run_summaries(engine, limit=0)


def test_status_exit_code_is_failed_when_nothing_ever_ran(engine) -> None:
    assert status_exit_code_of(latest_runs(engine)) is ExitCode.FAILED
    assert status_exit_code_of(latest_runs(engine, "jobreco")) is ExitCode.FAILED
    assert latest_runs(engine) == []


def test_status_exit_code_follows_the_latest_run(withheld, engine, deps, emulator) -> None:
    assert status_exit_code_of(latest_runs(engine)) is ExitCode.WITHHELD
    assert status_exit_code_of(latest_runs(engine, PREFIX)) is ExitCode.WITHHELD
    assert status_exit_code_of(latest_runs(engine, "other")) is ExitCode.FAILED
    emulator.clear_faults()
    run_day(withheld.later_options, deps)
    assert status_exit_code_of(latest_runs(engine)) is ExitCode.OK
    assert status_exit_code_of(latest_runs(engine, PREFIX)) is ExitCode.OK


def test_status_exit_code_checks_every_prefix(engine) -> None:
    add_run(engine, "jobreco", DAY, "withheld")
    add_run(engine, "jobreco", DAY + dt.timedelta(days=1), "published")  # the latest counts
    add_run(engine, "other", DAY + dt.timedelta(days=1), "published")
    assert status_exit_code_of(latest_runs(engine)) is ExitCode.OK
    add_run(engine, "other", DAY + dt.timedelta(days=2), "deadline")
    assert status_exit_code_of(latest_runs(engine)) is ExitCode.WITHHELD
    assert status_exit_code_of(latest_runs(engine, "jobreco")) is ExitCode.OK
    assert status_exit_code_of(latest_runs(engine, "other")) is ExitCode.WITHHELD
    assert [(run.prefix, run.status) for run in latest_runs(engine)] == [
        ("jobreco", "published"),
        ("other", "deadline"),
    ]


def summary(prefix: str, day: dt.date, hour: int = 6, **kw) -> RunSummary:
    values = dict(
        run_id=day.toordinal() * 100 + hour,
        campaign=prefix,
        prefix=prefix,
        date=day,
        topic=f"{prefix}-3",
        status="published",
        audience=1000,
        added=120,
        removed=80,
        failed={},
        retries=0,
        attempts=200,
        wait_seconds=0.0,
        duration_seconds=61.5,
        published=True,
        message_id="projects/p/messages/1",
        why="published",
        started_at=dt.datetime.combine(day, dt.time(hour), dt.UTC),
    )
    values.update(kw)
    return RunSummary(**values)


def test_latest_runs_are_each_campaigns_latest_whatever_the_order_written(engine) -> None:
    newest = add_run(engine, "jobreco", DAY + dt.timedelta(days=1), "published")
    add_run(engine, "jobreco", DAY, "withheld")  # written after, but of an earlier date
    alerts = add_run(engine, "alerts", DAY, "published")
    latest = latest_runs(engine)
    assert [(run.prefix, run.run_id) for run in latest] == [("alerts", alerts), ("jobreco", newest)]


def test_render_status_shows_published_counts_or_why_not() -> None:
    runs = [  # each campaign's latest, by campaign name, as latest_runs reads them
        summary(
            "alerts",
            DAY + dt.timedelta(days=1),
            status="withheld",
            published=False,
            message_id=None,
            why="3 removals from alerts-3 unconfirmed",
        ),
        summary("jobreco", DAY, failed={"internal-error": 2, "invalid-argument": 1}),
    ]
    lines = render_status(runs).splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"alerts\s+2026-11-23\s+alerts-3\s+WITHHELD\s+3 removals from alerts-3 unconfirmed",
        lines[0],
    )
    assert re.fullmatch(
        r"jobreco\s+2026-11-22\s+jobreco-3\s+published\s+added 120 removed 80 newly dead 0 "
        r"failed 3 "
        r"\(internal-error=2, invalid-argument=1\)",
        lines[1],
    )
    assert lines[0].index("2026") == lines[1].index("2026")  # aligned
    assert render_status([]) == "no runs"


def test_render_status_of_real_runs(withheld, engine) -> None:
    (line,) = render_status(latest_runs(engine)).splitlines()
    topic = topic_for(PREFIX, POOL, DAY)
    assert line.split()[:4] == [PREFIX, LATER.isoformat(), topic, "WITHHELD"]
    assert line.endswith(f"1 removals from {topic} unconfirmed")


# --- renderings -----------------------------------------------------------------------------


def test_shorten_never_shows_a_whole_token() -> None:
    assert shorten(tok(7)) == "device:0…0007"
    assert shorten("a" * 17) == "aaaaaaaa…aaaa"
    assert shorten("0123456789abcdef") == "0123…"  # 16 characters
    assert shorten("tok:00001") == "tok:…"
    assert shorten("abcd") == "ab…" and shorten("") == "…"


def test_failures_json_is_the_documented_shape(more, engine) -> None:
    rows = failed_tokens(engine, FailureFilter(include_resolved=True))
    doc = json.loads(render_failures(rows, "json"))
    assert list(doc) == ["version", "kind", "failures"]
    assert (doc["version"], doc["kind"]) == (1, "failures")
    keys = ["token", "op", "code", "reason", "attempts", "first_seen", "last_seen"]
    keys += ["run_id", "date", "prefix", "topic", "resolved"]
    assert list(FAILURE_FIELDS) == keys
    assert len(doc["failures"]) == len(rows) == 5
    for item, row in zip(doc["failures"], rows, strict=True):
        assert list(item) == keys
        assert item["token"] == shorten(row.token) != row.token
        for key in ("op", "code", "reason", "topic"):
            assert isinstance(item[key], str)
        assert type(item["attempts"]) is int and type(item["resolved"]) is bool
        assert TIMESTAMP.match(item["first_seen"]) and TIMESTAMP.match(item["last_seen"])
        if row.run_id is None:
            assert item["run_id"] is item["date"] is item["prefix"] is None
        else:
            assert type(item["run_id"]) is int and DATE.match(item["date"])
            assert isinstance(item["prefix"], str)
    first = doc["failures"][0]
    assert first["last_seen"] == rows[0].last_seen.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (first["date"], first["code"]) == (LATER.isoformat(), "internal-error")
    whole = json.loads(render_failures(rows, "json", full_tokens=True))
    assert [item["token"] for item in whole["failures"]] == tokens(rows)
    assert json.loads(render_failures([], "json")) == {
        "version": 1,
        "kind": "failures",
        "failures": [],
    }


def test_runs_json_is_the_documented_shape(more, engine) -> None:
    rows = run_summaries(engine)
    doc = json.loads(render_runs(rows, "json"))
    assert list(doc) == ["version", "kind", "runs"]
    assert (doc["version"], doc["kind"]) == (1, "runs")
    keys = ["run_id", "campaign", "prefix", "date", "topic", "status", "published", "why"]
    keys += ["message_id", "audience", "added", "removed", "failed", "retries", "attempts"]
    keys += ["wait_seconds", "duration_seconds", "started_at", "newly_dead", "tries"]
    assert list(RUN_FIELDS) == keys
    assert len(doc["runs"]) == 3
    for item in doc["runs"]:
        assert list(item) == [*keys, "history"]
        assert [list(a) for a in item["history"]] == [list(ATTEMPT_FIELDS)] * item["tries"]
        assert type(item["run_id"]) is int and type(item["published"]) is bool
        for key in ("prefix", "topic", "status", "why"):
            assert isinstance(item[key], str)
        assert DATE.match(item["date"]) and TIMESTAMP.match(item["started_at"])
        for key in ("audience", "added", "removed", "retries", "attempts"):
            assert type(item[key]) is int
        assert type(item["wait_seconds"]) is float
        assert type(item["duration_seconds"]) is float
        assert isinstance(item["failed"], dict)
        assert all(type(n) is int for n in item["failed"].values())
        assert item["message_id"] is None or isinstance(item["message_id"], str)
    by_date = {(item["prefix"], item["date"]): item for item in doc["runs"]}
    later = by_date[(PREFIX, LATER.isoformat())]
    assert (later["status"], later["published"], later["message_id"]) == ("withheld", False, None)
    assert later["failed"] == {"internal-error": 1}
    first = by_date[(PREFIX, DAY.isoformat())]
    assert first["published"] is True and first["message_id"]
    syncing = dataclasses.replace(rows[0], duration_seconds=None)
    assert json.loads(render_runs([syncing], "json"))["runs"][0]["duration_seconds"] is None


def test_csv_parses_back_with_its_header(more, engine) -> None:
    rows = failed_tokens(engine)
    parsed = list(csv.DictReader(io.StringIO(render_failures(rows, "csv"))))
    assert len(parsed) == len(rows)
    assert list(parsed[0]) == list(FAILURE_FIELDS)
    assert [item["token"] for item in parsed] == [shorten(row.token) for row in rows]
    assert parsed[0]["attempts"] == "3" and parsed[0]["resolved"] == "false"
    assert parsed[0]["date"] == LATER.isoformat() and TIMESTAMP.match(parsed[0]["last_seen"])
    runless = next(item for item in parsed if item["code"] == "rate-limited")
    assert runless["run_id"] == runless["date"] == runless["prefix"] == ""
    full = csv.DictReader(io.StringIO(render_failures(rows, "csv", full_tokens=True)))
    assert [item["token"] for item in full] == tokens(rows)

    runs = list(csv.DictReader(io.StringIO(render_runs(run_summaries(engine), "csv"))))
    assert list(runs[0]) == list(RUN_FIELDS)
    by_key = {(item["prefix"], item["date"]): item for item in runs}
    later = by_key[(PREFIX, LATER.isoformat())]
    assert (later["status"], later["published"], later["failed"]) == (
        "withheld",
        "false",
        "internal-error=1",
    )
    assert by_key[(PREFIX, DAY.isoformat())]["published"] == "true"
    assert render_failures([], "csv") == ",".join(FAILURE_FIELDS)


def test_table_shows_shortened_tokens_unless_asked(more, engine) -> None:
    rows = failed_tokens(engine)
    table = render_failures(rows, "table")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["LAST", "SEEN", "DATE"] and len(lines) == len(rows) + 1
    for row, line in zip(rows, lines[1:], strict=True):
        assert row.token not in table and shorten(row.token) in line
        assert line.startswith(row.last_seen.strftime("%Y-%m-%dT%H:%MZ"))
        column = lines[0].index("TOPIC")
        assert line[column:].startswith(row.topic)  # aligned under its header
        assert line == line.rstrip()
    whole = render_failures(rows, "table", full_tokens=True)
    assert all(row.token in whole for row in rows)
    assert render_failures([], "table") == "no failed tokens"


def test_runs_table_aligns_and_formats(withheld, engine) -> None:
    rows = run_summaries(engine)
    lines = render_runs(rows, "table").splitlines()
    assert lines[0].startswith("DATE") and lines[0].rstrip().endswith("WHY")
    column = lines[0].index("STATUS")
    assert [line[column:].split()[0] for line in lines[1:]] == ["withheld", "published"]
    assert all(re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", line) for line in lines[1:])
    assert render_runs([], "table") == "no runs"


def test_table_escapes_control_characters_from_fcm() -> None:
    when = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
    row = FailedToken(
        tok(1),
        "subscribe",
        "unknown-error",
        "BAD\x1b[31m\nNEWS",
        4,
        when,
        when,
        None,
        None,
        None,
        "jobreco-3",
        False,
    )
    table = render_failures([row], "table")
    assert "\x1b" not in table and len(table.splitlines()) == 2
    assert table.splitlines()[1].endswith("BAD\\x1b[31m\\nNEWS")
    assert "2026-11-22T06:00Z" in table


@pytest.mark.parametrize("render", [render_failures, render_runs])
def test_unknown_format_is_bad_input(render) -> None:
    with pytest.raises(BadInput, match="valid: table, csv, json"):
        render([], "yaml")


# --- the overview: report with no filter ------------------------------------------------------


def test_overview_is_each_campaigns_latest_run_and_its_failed_tokens(more, engine) -> None:
    campaigns = overview(engine)
    assert [c.run.prefix for c in campaigns] == [PREFIX, "other"]
    mine, other = campaigns
    assert (mine.run.run_id, mine.run.status) == (more.later_run, "withheld")
    # Only the latest run's unresolved failures: DAY's dead token belongs to an older run.
    assert [(g.code, g.op, g.count, g.tokens) for g in mine.groups] == [
        ("internal-error", "unsubscribe", 1, [more.leaving])
    ]
    assert mine.failed_tokens == 1
    assert [(g.code, g.op, g.count, g.tokens) for g in other.groups] == [
        ("too-many-topics", "subscribe", 1, [tok(100)])
    ]
    assert [c.run.prefix for c in overview(engine, prefix="other")] == ["other"]
    assert overview(engine, prefix="nobody") == []


def test_overview_groups_count_everything_and_name_a_few(engine) -> None:
    run = add_run(engine, "big", DAY, "published")
    for i in range(15):
        add_failure(
            engine,
            run,
            tok(200 + i),
            "big-0",
            "subscribe",
            "internal-error",
            "INTERNAL",
            days_ago=i,
        )
    for i in range(3):
        add_failure(
            engine,
            run,
            tok(300 + i),
            "big-0",
            "unsubscribe",
            "internal-error",
            "INTERNAL",
            days_ago=i,
        )
    add_failure(
        engine,
        run,
        tok(400),
        "big-0",
        "subscribe",
        "invalid-argument",
        "INVALID_ARGUMENT",
        days_ago=0,
    )
    with engine.begin() as conn:  # a later success resolves a failure: no longer listed
        conn.execute(
            text(
                "UPDATE token_failures SET resolved_at = now() WHERE token_id = "
                "(SELECT id FROM tokens WHERE token = :t)"
            ),
            {"t": tok(302)},
        )
    [big] = overview(engine, per_group=4)
    assert [(g.code, g.op, g.count) for g in big.groups] == [
        ("internal-error", "subscribe", 15),  # the largest group first
        ("internal-error", "unsubscribe", 2),
        ("invalid-argument", "subscribe", 1),
    ]
    assert big.groups[0].tokens == [tok(200 + i) for i in range(4)]  # most recent first
    assert big.failed_tokens == 18
    assert len(overview(engine, per_group=None)[0].groups[0].tokens) == 15

    table = render_overview([big], [big.run], "table")
    assert "18 failed tokens not resolved" in table
    assert shorten(tok(200)) in table and tok(200) not in table
    assert f"… 11 more: topic-sync report --run {run} --code internal-error --op subscribe" in (
        table
    )
    assert "more:" not in table.split("invalid-argument")[1]
    whole = render_overview([big], [big.run], "table", full_tokens=True)
    assert tok(200) in whole
    with pytest.raises(BadInput, match="limit must be at least 1"):
        overview(engine, per_group=0)


def test_overview_table_says_why_a_day_did_not_go_out(more, engine) -> None:
    table = render_overview(overview(engine), run_summaries(engine), "table")
    first, second = table.split("\n\n")
    topic = topic_for(PREFIX, POOL, DAY)
    assert first.splitlines()[0] == (
        f"{PREFIX}  {LATER.isoformat()}  {topic}  WITHHELD: 1 removals from {topic} unconfirmed"
    )
    assert "audience 4, added 0, removed 0, newly dead 0, suppressed 0" in first
    assert "internal-error  unsubscribe  1" in first and shorten(more.leaving) in first
    assert more.leaving not in table and more.dead not in table
    assert second.startswith("other  ")
    assert render_overview([], [], "table") == "no runs"


def test_overview_json_adds_campaigns_to_the_runs_document(more, engine) -> None:
    recent = run_summaries(engine)
    campaigns = overview(engine)
    doc = json.loads(render_overview(campaigns, recent, "json"))
    assert list(doc) == ["version", "kind", "runs", "campaigns"]
    # Version 1's runs document, unchanged: its readers keep working.
    assert {k: doc[k] for k in ("version", "kind", "runs")} == json.loads(
        render_runs(recent, "json")
    )
    assert [list(c) for c in doc["campaigns"]] == [list(CAMPAIGN_FIELDS)] * 2
    mine = doc["campaigns"][0]
    assert mine["prefix"] == PREFIX and mine["failed_tokens"] == 1
    assert mine["run"] == json.loads(render_runs([campaigns[0].run], "json"))["runs"][0]
    assert mine["failures"] == [
        {
            "code": "internal-error",
            "op": "unsubscribe",
            "count": 1,
            "tokens": [shorten(more.leaving)],
        }
    ]
    assert list(mine["failures"][0]) == list(GROUP_FIELDS)
    whole = json.loads(render_overview(campaigns, recent, "json", full_tokens=True))
    assert whole["campaigns"][0]["failures"][0]["tokens"] == [more.leaving]
    # CSV is flat: the runs CSV, as before.
    assert render_overview(campaigns, recent, "csv") == render_runs(recent, "csv")


# --- dead tokens ------------------------------------------------------------------------------


def test_dead_tokens_are_listed_with_reason_and_dates(withheld, engine) -> None:
    [dead] = dead_tokens(engine)
    assert (dead.token, dead.reason) == (withheld.dead, "registration-token-not-registered")
    assert (dead.dead_on, dead.retried_on) == (DAY, None)
    assert dead.marked_at.utcoffset() == dt.timedelta(0)
    [first] = [c for c in overview(engine, prefix=PREFIX)]
    assert first.run.newly_dead == 0  # the latest run (LATER) found none; DAY found one
    assert [r.newly_dead for r in run_summaries(engine)] == [0, 1]

    doc = json.loads(render_dead([dead], "json"))
    assert (doc["version"], doc["kind"], list(doc)) == (1, "dead", ["version", "kind", "dead"])
    [item] = doc["dead"]
    assert list(item) == list(DEAD_FIELDS)
    assert item["token"] == shorten(withheld.dead) and TIMESTAMP.match(item["marked_at"])
    assert (item["dead_on"], item["retried_on"]) == (DAY.isoformat(), None)
    whole = json.loads(render_dead([dead], "json", full_tokens=True))
    assert whole["dead"][0]["token"] == withheld.dead
    [row] = list(csv.DictReader(io.StringIO(render_dead([dead], "csv"))))
    assert row["token"] == shorten(withheld.dead) and row["retried_on"] == ""
    table = render_dead([dead], "table")
    assert table.splitlines()[0].split()[:2] == ["MARKED", "DEAD"]
    assert withheld.dead not in table and shorten(withheld.dead) in table
    assert render_dead([], "table") == "no dead tokens"
    assert dead_tokens(engine, limit=1) == [dead]
    with pytest.raises(BadInput, match="limit must be at least 1"):
        dead_tokens(engine, limit=0)


# --- a day's attempts: a rerun keeps the history ----------------------------------------------


def test_a_rerun_after_a_withheld_day_keeps_every_attempts_figures(
    tmp_path, message_file, deps, emulator, engine
) -> None:
    yesterday = [tok(i) for i in range(20)]
    assert run_day(opts(tmp_path, message_file, yesterday), deps).status == "published"
    # LATER reuses the topic: 8 leave (one of them, stuck, withholds the publish), 12 join
    # (3 of them dead: marked so).
    today = yesterday[8:] + [tok(i) for i in range(100, 112)]
    stuck = yesterday[0]
    emulator.inject_token_error(stuck, "INTERNAL", op="unsubscribe")
    for dead in today[-3:]:
        emulator.unregister(dead)
    options = opts(tmp_path, message_file, today, LATER)
    with pytest.raises(PublishWithheld):
        run_day(options, deps)
    emulator.clear_faults()
    rerun = run_day(options, deps)
    assert rerun.status == "published"
    assert (rerun.counts.added, rerun.counts.removed, rerun.counts.newly_dead) == (0, 1, 0)

    [day] = [run for run in run_summaries(engine) if run.date == LATER]
    assert (day.tries, day.status, day.published) == (2, "published", True)
    # The day's totals are the sum of its attempts, not the last attempt's.
    assert (day.added, day.removed, day.newly_dead) == (9, 8, 3)
    first, second = day.history
    assert (first.attempt, first.status) == (1, "withheld")
    assert (first.added, first.removed, first.newly_dead) == (9, 7, 3)
    dead = {"registration-token-not-registered": 3}
    assert first.to_remove == 8 and first.failed == {"internal-error": 1, **dead}
    assert "unconfirmed" in first.why
    assert (second.attempt, second.status, second.added, second.removed) == (2, "published", 0, 1)
    assert second.newly_dead == 0 and second.failed == dead  # unresolved when it ended

    record = json.loads(render_runs([day], "json"))["runs"][0]
    assert (record["added"], record["removed"], record["newly_dead"], record["tries"]) == (
        9,
        8,
        3,
        2,
    )
    assert [
        (a["status"], a["added"], a["removed"], a["newly_dead"]) for a in record["history"]
    ] == [
        ("withheld", 9, 7, 3),
        ("published", 0, 1, 0),
    ]
    table = render_runs([day], "table")
    assert "totals of 2 attempts" in table
    assert re.search(r"#1 .*withheld\s+24\s+9\s+7", table)
    assert re.search(r"#2 .*published\s+24\s+0\s+1", table)
    [latest] = [c for c in overview(engine) if c.run.date == LATER]
    text_view = render_overview([latest], [day], "table")
    assert "added 9, removed 8, newly dead 3" in text_view
    assert "#1 withheld: audience 24, added 9, removed 7, newly dead 3" in text_view
    status_line = render_status(latest_runs(engine))
    assert "added 9 removed 8 newly dead 3" in status_line and "2 attempts" in status_line
