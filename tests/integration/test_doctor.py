"""`topic-sync doctor`'s checks over real PostgreSQL and the emulator: each passes when all is
well and fails, with a fix, on the fault it is for; and nothing changes either way."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import firebase_admin
import pytest
from sqlalchemy import Engine, make_url, text

from tests.support import (
    Recorder,
    admin_engine,
    drop_database,
    execute,
    record_planned_day,
    subscription_calls,
    with_database,
    write_audience,
    write_service_account_key,
)
from topic_sync.app.doctor import NAMES, Check, CheckStatus, check_credentials, doctor
from topic_sync.app.services import Io
from topic_sync.config.resolve import Resolved, Source, resolve
from topic_sync.emulator import FcmEmulator
from topic_sync.errors import BadInput, ExitCode
from topic_sync.fcm.sdk_bridge import initialize_app
from topic_sync.fcm.target import FcmTarget
from topic_sync.pool import topic_for
from topic_sync.store import db

DAY = dt.date(2026, 11, 22)
NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
PROJECT = "demo-doctor"
PREFIX = "doc"


def tokens(n: int) -> list[str]:
    return [f"doc:{i:05d}" for i in range(n)]


@pytest.fixture
def audience(tmp_path: Path) -> Path:
    return write_audience(tmp_path / "audience.txt", tokens(30))


def given(database_url: str, emulator: FcmEmulator, message: Path, audience: Path, **over: Any):
    values: dict[str, Any] = {
        "database_url": database_url,
        "emulator_host": emulator.host_port,
        "project": PROJECT,
        "topic_prefix": PREFIX,
        "pool_size": 3,
        "message": message,
        "audience": audience,
    }
    values.update(over)
    return values


def resolver(values: dict[str, Any], *, config: Path | None = None, day: str = DAY.isoformat()):
    def run() -> Resolved:
        sources = {name: Source.FLAG for name in values}
        return resolve(values, sources, config_path=config, day=day, environ={}, now=NOW)

    return run


def check_up(values: dict[str, Any], **kw: Any):
    recorder = Recorder()
    io = Io(log=recorder.log, environ={}, now=lambda: NOW)
    return doctor(resolver(values, **kw), io, backfill=True)


def by_name(result) -> dict[str, Check]:
    checks = {c.name: c for c in result.checks}
    assert list(checks) == list(NAMES), "every check, once, in order"
    return checks


def statuses(result) -> dict[str, str]:
    return {c.name: str(c.status) for c in result.checks}


ALL_TABLES = (
    "tokens",
    "subscriptions",
    "runs",
    "token_failures",
    "topic_fences",
    "fcm_target",
    "audiences",
    "alembic_version",
)


def everything(engine: Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            table: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {table}"))), key=repr)
            for table in ALL_TABLES
        }


def fcm_facts(emulator: FcmEmulator) -> dict[str, Any]:
    """What FCM holds: members, publishes and dead tokens (not the request statistics)."""
    state = emulator.state()
    return {key: state[key] for key in ("topics", "publishes", "unregistered")}


# --- all well ----------------------------------------------------------------------------------


def test_all_checks_pass_and_nothing_changes(
    database_url, engine, emulator, message_file, audience
) -> None:
    emulator.subscribe_direct("doc:00001", f"{PREFIX}-0")
    db_before, fcm_before = everything(engine), fcm_facts(emulator)

    result = check_up(given(database_url, emulator, message_file, audience))

    checks = by_name(result)
    assert statuses(result) == dict.fromkeys(NAMES, "ok"), [c.to_json() for c in result.checks]
    assert result.ready and result.exit_code is ExitCode.OK
    assert "skipped" in checks["credentials"].detail and "emulator" in checks["credentials"].detail
    assert "not bound yet" in checks["target"].detail
    assert "30 tokens" in checks["audience"].detail
    # The cost policy chooses the date's topic once its audience is loaded: the message is
    # validated for a topic of the pool, the ordinal one, and said to be no more than that.
    the_topic = topic_for(PREFIX, 3, DAY)
    assert f"for {the_topic} (a topic of the pool" in checks["message"].detail
    assert "pool policy cost" in checks["pool"].detail and "6h" in checks["pool"].detail
    assert [v.topic for v in emulator.validations] == [the_topic]  # the validate_only send
    # Nothing changed: no migration, run row or binding; no subscription, no publish.
    assert everything(engine) == db_before
    assert fcm_facts(emulator) == fcm_before
    assert subscription_calls(emulator) == 0
    assert emulator.stats[("list", 200)] == 1  # the probe: a read


def test_a_date_already_planned_shows_its_recorded_topic_and_validates_for_it(
    database_url, engine, emulator, message_file, audience
) -> None:
    chosen = f"{PREFIX}-2"  # not the date's ordinal topic: the cost policy chose it
    assert chosen != topic_for(PREFIX, 3, DAY)
    record_planned_day(engine, PREFIX, 3, DAY, chosen)
    checks = by_name(check_up(given(database_url, emulator, message_file, audience)))
    assert f"{DAY} was planned on {chosen}" in checks["campaign"].detail
    assert f"FCM accepted it for {chosen} (validate_only" in checks["message"].detail
    assert [v.topic for v in emulator.validations] == [chosen]


def test_a_pool_with_no_rested_topic_fails_naming_when_one_will_be(
    database_url, engine, emulator, message_file, audience
) -> None:
    for slot in range(3):  # every topic published an hour ago (and a date planned, another)
        day = DAY - dt.timedelta(days=slot + 1)
        record_planned_day(engine, PREFIX, 3, day, f"{PREFIX}-{slot}", status="published")
    execute(
        engine,
        "UPDATE runs SET publish_state = 'sent', published_at = now() - interval '1 hour'",
    )
    checks = by_name(check_up(given(database_url, emulator, message_file, audience)))
    assert checks["campaign"].status is CheckStatus.FAIL
    assert "every topic of the pool had a message within the rest period (6h)" in (
        checks["campaign"].detail
    )
    assert "--pool-size N" in checks["campaign"].fix
    # The ordinal rule does not wait for a rest: fine.
    values = given(database_url, emulator, message_file, audience, pool_policy="ordinal")
    assert by_name(check_up(values))["campaign"].status is CheckStatus.OK
    # Five hours later the oldest has rested.
    execute(engine, "UPDATE runs SET published_at = published_at - interval '5 hours'")
    assert (
        by_name(check_up(given(database_url, emulator, message_file, audience)))["campaign"].status
        is CheckStatus.OK
    )


def test_the_ordinal_policy_names_the_dates_topic(
    database_url, emulator, message_file, audience
) -> None:
    values = given(database_url, emulator, message_file, audience, pool_policy="ordinal")
    checks = by_name(check_up(values))
    the_topic = topic_for(PREFIX, 3, DAY)
    assert f"{DAY} uses {the_topic} (pool policy ordinal)" in checks["pool"].detail
    assert f"FCM accepted it for {the_topic} (validate_only" in checks["message"].detail


def test_an_audience_larger_than_the_sample_is_sampled(
    database_url, emulator, message_file, tmp_path
) -> None:
    path = write_audience(tmp_path / "big.txt", [*tokens(1500), "bad token"])
    checks = by_name(check_up(given(database_url, emulator, message_file, path)))
    assert checks["audience"].status is CheckStatus.OK
    assert "the first 1000 tokens" in checks["audience"].detail


def test_a_bound_target_that_matches_passes(
    database_url, engine, emulator, message_file, audience
) -> None:
    target = FcmTarget.of(PROJECT, emulator.host_port)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO fcm_target (id, project_id, endpoint) VALUES (1, :p, :e)"),
            {"p": target.project_id, "e": target.endpoint},
        )
    checks = by_name(check_up(given(database_url, emulator, message_file, audience)))
    assert checks["target"].status is CheckStatus.OK
    assert "bound to" in checks["target"].detail


# --- the settings --------------------------------------------------------------------------------


def test_a_bad_configuration_file_fails_naming_file_and_key(
    database_url, emulator, message_file, audience, tmp_path
) -> None:
    config = tmp_path / "topic-sync.toml"
    config.write_text('[campaigns.x]\ntopic_prefix = "doc"\npool_sise = 3\n')
    result = check_up({}, config=config)
    checks = by_name(result)
    assert checks["config"].status is CheckStatus.FAIL
    assert str(config) in checks["config"].detail and "pool_sise" in checks["config"].detail
    assert checks["config"].fix
    assert all(checks[n].status is CheckStatus.SKIP for n in NAMES[1:])
    assert result.exit_code is ExitCode.NOT_READY


def test_a_config_file_campaign_supplies_the_day_audience(
    database_url, emulator, message_file, tmp_path
) -> None:
    write_audience(tmp_path / f"{DAY}.txt", tokens(5))
    config = tmp_path / "topic-sync.toml"
    config.write_text(
        f'database_url = "{database_url}"\nemulator_host = "{emulator.host_port}"\n'
        f'[campaigns.jobreco]\ntopic_prefix = "doc"\npool_size = 2\nmessage = "{message_file}"\n'
        'audience = "{date}.txt"\ntimezone = "Asia/Tokyo"\n'
    )
    result = check_up({}, config=config)
    checks = by_name(result)
    assert result.ready, [c.to_json() for c in result.checks]
    assert "campaign 'jobreco'" in checks["config"].detail
    assert f"{DAY}.txt: 5 tokens" in checks["audience"].detail


def test_a_bad_pool_and_rate_over_the_quota(database_url, emulator, message_file, audience) -> None:
    bad = by_name(
        check_up(given(database_url, emulator, message_file, audience, topic_prefix="a b"))
    )
    assert bad["pool"].status is CheckStatus.FAIL and "topic-name rule" in bad["pool"].detail
    assert bad["message"].status is CheckStatus.SKIP  # no topic to validate the message for
    fast = by_name(check_up(given(database_url, emulator, message_file, audience, rate_limit=9000)))
    assert fast["pool"].status is CheckStatus.WARN and "3000" in fast["pool"].detail


# --- the database ------------------------------------------------------------------------------


@pytest.fixture
def empty_database(pg_server_url: str) -> Iterator[str]:
    name = f"doc_{uuid.uuid4().hex[:12]}"
    admin = admin_engine(pg_server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield with_database(pg_server_url, name)
    drop_database(pg_server_url, name)


def test_an_unmigrated_database_fails_and_stays_unmigrated(
    empty_database, emulator, message_file, audience
) -> None:
    result = check_up(given(empty_database, emulator, message_file, audience))
    checks = by_name(result)
    assert checks["database"].status is CheckStatus.OK
    assert checks["schema"].status is CheckStatus.FAIL
    assert "not migrated" in checks["schema"].detail
    assert "topic-sync db upgrade" in (checks["schema"].fix or "")
    assert checks["grants"].status is CheckStatus.SKIP
    assert checks["target"].status is CheckStatus.SKIP
    assert result.exit_code is ExitCode.NOT_READY
    engine = db.make_engine(empty_database)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT to_regclass('alembic_version')")) is None
    engine.dispose()


def test_a_database_behind_head_fails(empty_database, emulator, message_file, audience) -> None:
    db.upgrade(empty_database, "0005")
    checks = by_name(check_up(given(empty_database, emulator, message_file, audience)))
    assert checks["schema"].status is CheckStatus.FAIL
    assert f"at 0005, behind this release's head {db.head_revision()}" in checks["schema"].detail


def test_an_unreachable_database_fails_with_a_masked_url(emulator, message_file, audience) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    result = check_up(given(url, emulator, message_file, audience))
    checks = by_name(result)
    assert checks["database"].status is CheckStatus.FAIL
    assert "s3cret" not in json.dumps(result.summary())
    assert "cannot reach" in checks["database"].detail
    assert {checks[n].status for n in ("schema", "grants", "target")} == {CheckStatus.SKIP}
    assert checks["fcm-api"].status is CheckStatus.OK  # the rest is still checked


@pytest.fixture
def limited_role(database_url: str, engine: Engine) -> Iterator[str]:
    """The URL of this database as a role that may only read `tokens` and `runs`."""
    role = f"doc_role_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN'))
        conn.execute(
            text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        )
        conn.execute(text(f'REVOKE INSERT, DELETE ON subscriptions FROM "{role}"'))
    url = make_url(db.sqlalchemy_url(database_url))
    url = url.update_query_dict({"options": f"-c role={role}"})
    yield url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(text(f'DROP OWNED BY "{role}"'))
        conn.execute(text(f'DROP ROLE "{role}"'))


def test_missing_grants_fail_naming_table_privilege_and_the_grant(
    limited_role, emulator, message_file, audience
) -> None:
    checks = by_name(check_up(given(limited_role, emulator, message_file, audience)))
    grants = checks["grants"]
    assert grants.status is CheckStatus.FAIL
    assert "subscriptions: INSERT, DELETE" in grants.detail
    assert "GRANT INSERT, DELETE ON subscriptions TO doc_role_" in (grants.fix or "")
    assert checks["schema"].status is CheckStatus.OK


def test_a_database_bound_to_another_target_fails(
    database_url, engine, emulator, message_file, audience
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO fcm_target (id, project_id, endpoint) VALUES (1, 'prod', :e)"),
            {"e": "fcm.googleapis.com"},
        )
    result = check_up(given(database_url, emulator, message_file, audience))
    target = by_name(result)["target"]
    assert target.status is CheckStatus.FAIL
    assert "project 'prod' at production FCM" in target.detail
    assert f"emulator {emulator.host_port}" in target.detail
    assert "target bind" in (target.fix or "") and "target reset" in (target.fix or "")
    assert result.exit_code is ExitCode.NOT_READY


# --- FCM ---------------------------------------------------------------------------------------


def test_the_api_not_enabled_is_named_quoting_google(
    database_url, emulator, message_file, audience
) -> None:
    emulator.set_api_disabled()
    result = check_up(given(database_url, emulator, message_file, audience))
    api = by_name(result)["fcm-api"]
    assert api.status is CheckStatus.FAIL
    assert "Firebase Cloud Messaging API is not enabled" in api.detail
    assert (
        "HTTP 403 PERMISSION_DENIED" in api.detail and "has not been used in project" in api.detail
    )
    assert "enable" in (api.fix or "").lower()
    message = by_name(result)["message"]
    assert message.status is CheckStatus.SKIP and "valid" in message.detail  # checked locally
    assert emulator.validations == []
    assert result.exit_code is ExitCode.NOT_READY


def test_a_permission_denied_names_the_role(database_url, emulator, message_file, audience) -> None:
    emulator.inject_request_errors(403, kinds=["list"])
    api = by_name(check_up(given(database_url, emulator, message_file, audience)))["fcm-api"]
    assert api.status is CheckStatus.FAIL
    assert "refused the credentials" in api.detail and "does not have permission" in api.detail
    assert "Firebase Cloud Messaging Admin" in (api.fix or "")


def test_a_send_refused_for_permission_fails_the_message_check(
    database_url, emulator, message_file, audience
) -> None:
    emulator.inject_request_errors(403, kinds=["send"])
    checks = by_name(check_up(given(database_url, emulator, message_file, audience)))
    assert checks["fcm-api"].status is CheckStatus.OK
    assert checks["message"].status is CheckStatus.FAIL
    assert "refused the credentials" in checks["message"].detail
    assert "credentials" in (checks["message"].fix or "")


def test_a_404_without_fcm_details_is_not_fcm(
    database_url, emulator, message_file, audience
) -> None:
    emulator.inject_request_errors(404, kinds=["list"])
    api = by_name(check_up(given(database_url, emulator, message_file, audience)))["fcm-api"]
    assert api.status is CheckStatus.FAIL and "without FCM's error details" in api.detail


def test_an_unknown_token_answer_with_fcm_details_means_the_api_works(
    database_url, emulator, message_file, audience
) -> None:
    from topic_sync.fcm.sdk_messaging import DOCTOR_TOKEN

    emulator.unregister(DOCTOR_TOKEN)  # the list answers 404 with FCM's UNREGISTERED
    api = by_name(check_up(given(database_url, emulator, message_file, audience)))["fcm-api"]
    assert api.status is CheckStatus.OK and "UNREGISTERED" in api.detail


def test_quota_errors_are_a_warning(database_url, emulator, message_file, audience) -> None:
    emulator.inject_request_errors(429, kinds=["list"])
    result = check_up(given(database_url, emulator, message_file, audience))
    assert by_name(result)["fcm-api"].status is CheckStatus.WARN
    assert result.ready


def test_an_emulator_that_is_down_fails_with_how_to_start_it(
    database_url, message_file, audience
) -> None:
    with FcmEmulator() as gone:
        host = gone.host_port
    stopped = given(database_url, gone, message_file, audience, emulator_host=host)
    checks = by_name(check_up(stopped))
    assert checks["fcm-api"].status is CheckStatus.FAIL
    assert "no answer" in checks["fcm-api"].detail
    assert "topic-sync emulator" in (checks["fcm-api"].fix or "")


def test_a_bad_message_fails_naming_the_file(database_url, emulator, audience, tmp_path) -> None:
    message = tmp_path / "message.json"
    message.write_text('{"notification": {"title": "x"},\n "nope": 1}')
    checks = by_name(check_up(given(database_url, emulator, message, audience)))
    assert checks["message"].status is CheckStatus.FAIL
    assert str(message) in checks["message"].detail and "nope" in checks["message"].detail
    assert emulator.validations == []


# --- the audience ------------------------------------------------------------------------------


def test_a_missing_audience_fails(database_url, emulator, message_file, tmp_path) -> None:
    missing = tmp_path / "2026-11-22.csv"
    result = check_up(given(database_url, emulator, message_file, missing))
    check = by_name(result)["audience"]
    assert check.status is CheckStatus.FAIL
    assert check.detail == f"{missing}: no such file" and check.fix
    assert result.exit_code is ExitCode.NOT_READY


def test_a_bad_audience_line_fails_naming_file_and_line(
    database_url, emulator, message_file, tmp_path
) -> None:
    path = write_audience(tmp_path / "audience.txt", [*tokens(3), "has space", *tokens(2)])
    check = by_name(check_up(given(database_url, emulator, message_file, path)))["audience"]
    assert check.status is CheckStatus.FAIL
    assert check.detail == f"{path}:4: whitespace inside token"


def test_standard_input_is_left_for_the_run(database_url, emulator, message_file) -> None:
    # Doctor runs before the run with the same arguments (the cron wrapper's preflight):
    # it must neither fail for stdin nor read it.
    result = check_up(given(database_url, emulator, message_file, Path("-")))
    check = by_name(result)["audience"]
    assert check.status is CheckStatus.OK
    assert "read and checked by the run itself" in check.detail
    assert result.exit_code is ExitCode.OK


def test_an_audience_query_is_described_not_run(
    database_url, engine, emulator, message_file
) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE reco (token text, n int)"))
        conn.execute(text("CREATE SEQUENCE counter"))
    query = "SELECT token, nextval('counter') AS n FROM reco"
    values = given(database_url, emulator, message_file, None, audience_query=query)
    before = everything(engine)
    result = check_up(values)
    check = by_name(result)["audience"]
    assert check.status is CheckStatus.OK, check
    assert "one statement, tokens in its column 'token'" in check.detail
    assert result.exit_code is ExitCode.OK
    assert everything(engine) == before
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT NOT is_called FROM counter"))  # never run

    values["audience_query"] = "SELECT token FROM reco) AS a; DELETE FROM runs; --"
    check = by_name(check_up(values))["audience"]
    assert check.status is CheckStatus.FAIL
    assert "more than one statement" in check.detail and check.fix
    values["audience_query"] = "SELECT n, n + 1 AS m FROM reco"
    check = by_name(check_up(values))["audience"]
    assert check.status is CheckStatus.FAIL
    assert "none named 'token'" in check.detail


def test_an_audience_not_there_yet_is_what_the_run_waits_for(
    database_url, emulator, message_file, tmp_path
) -> None:
    missing = tmp_path / "2026-11-22.csv"
    marker = tmp_path / "_SUCCESS"
    values = given(database_url, emulator, message_file, missing, wait_for=marker)
    check = by_name(check_up(values))["audience"]
    assert check.status is CheckStatus.OK
    assert f"the run waits for {marker} first" in check.detail


def test_an_audience_cut_mid_line_fails(database_url, emulator, message_file, tmp_path) -> None:
    path = tmp_path / "audience.csv"
    path.write_text("".join(f"{t}\n" for t in tokens(5)) + "doc:000")
    check = by_name(check_up(given(database_url, emulator, message_file, path)))["audience"]
    assert check.status is CheckStatus.FAIL
    assert "the last line does not end with a newline" in check.detail
    # Named *.csv without a header: read as one token per line, as the run reads it.
    path.write_text("".join(f"{t}\n" for t in tokens(5)))
    check = by_name(check_up(given(database_url, emulator, message_file, path)))["audience"]
    assert check.status is CheckStatus.OK
    assert "5 tokens (lines" in check.detail


def test_a_manifest_for_another_day_fails(database_url, emulator, message_file, tmp_path) -> None:
    path = write_audience(tmp_path / "audience.txt", tokens(5))
    marker = tmp_path / "_SUCCESS"
    marker.write_text("lines=5\ndate=2026-11-21\n")
    values = given(database_url, emulator, message_file, path, wait_for=marker)
    check = by_name(check_up(values))["audience"]
    assert check.status is CheckStatus.FAIL
    assert "is for 2026-11-21, but this run is for 2026-11-22" in check.detail
    marker.write_text("lines=5\ndate=2026-11-22\n")
    check = by_name(check_up(values))["audience"]
    assert check.status is CheckStatus.OK
    assert f"manifest {marker} (lines 5, date 2026-11-22) is checked by the run" in check.detail


# --- credentials against a token endpoint ----------------------------------------------------


@pytest.mark.parametrize("minted", [True, False])
def test_credentials_mint_a_token_and_name_the_account(
    tmp_path, token_endpoint, minted: bool
) -> None:
    uri, handler = token_endpoint
    if minted:
        handler.answer = (
            200,
            {"access_token": "ya29.x", "expires_in": 3600, "token_type": "Bearer"},
        )
    else:
        handler.answer = (400, {"error": "invalid_grant", "error_description": "Invalid JWT"})
    key = write_service_account_key(tmp_path / "key.json", "doc-prod", uri)
    app = initialize_app(
        name=f"doc-{uuid.uuid4().hex}",
        project_id=None,
        emulator_host=None,
        credentials_file=str(key),
    )
    try:
        check = check_credentials(app, FcmTarget.of(str(app.project_id), None))
    finally:
        firebase_admin.delete_app(app)
    if minted:
        assert check.status is CheckStatus.OK
        assert "sync@doc-prod.iam.gserviceaccount.com" in check.detail
        assert "'doc-prod'" in check.detail
    else:
        assert check.status is CheckStatus.FAIL
        assert "invalid_grant" in check.detail and check.fix


def test_the_campaign_check_refuses_what_run_would_refuse(engine) -> None:
    from tests.support import ensure_campaign
    from topic_sync.app.doctor import check_campaign
    from topic_sync.config.resolve import Resolved, Source
    from topic_sync.config.table import DEFAULTS

    def resolved(prefix: str, pool_size: int) -> Resolved:
        settings = DEFAULTS.replace(topic_prefix=prefix, pool_size=pool_size)
        return Resolved(settings, {"topic_prefix": Source.FLAG, "pool_size": Source.FLAG})

    assert check_campaign(engine, resolved("fresh", 7))[0].status is CheckStatus.OK
    with engine.begin() as conn:
        ensure_campaign(conn, "kept", 7)
    assert check_campaign(engine, resolved("kept", 7))[0].status is CheckStatus.OK
    wrong, _ = check_campaign(engine, resolved("kept", 5))
    assert wrong.status is CheckStatus.FAIL and "pool of 7 topics" in wrong.detail
    assert "topic-sync campaign update kept --pool-size 5 --live" in wrong.detail


@pytest.mark.parametrize("allowed", [False, True])
def test_live_against_production_on_the_embedded_database_fails_unless_allowed(
    engine, database_url, allowed: bool
) -> None:
    """What run would refuse, doctor fails, with the fix; allowed, it stays a warning."""
    from topic_sync.app.doctor import check_database
    from topic_sync.config.table import DEFAULTS

    settings = DEFAULTS.replace(live=True, allow_embedded_database=allowed)
    check = check_database(engine, database_url, settings)
    if allowed:
        assert check.status is CheckStatus.WARN
    else:
        assert check.status is CheckStatus.FAIL
        assert "run would refuse (exit 5)" in check.detail
        assert check.fix and "--allow-embedded-database" in check.fix


def test_doctor_fails_what_run_would_refuse_in_runs_own_words(
    database_url, emulator, tmp_path
) -> None:
    # One check of what a run needs: doctor reports each problem under the check it concerns,
    # in the words run refuses with.
    from topic_sync.config.needs import run_needs, run_problems

    values = given(database_url, emulator, None, None, topic_prefix=None)
    problems = run_problems(resolver(values)())
    assert set(problems) == {"topic_prefix", "message", "audience"}
    checks = by_name(check_up(values))
    for check, setting in (
        ("pool", "topic_prefix"),
        ("message", "message"),
        ("audience", "audience"),
    ):
        assert checks[check].status is CheckStatus.FAIL, check
        assert checks[check].detail == problems[setting]
    with pytest.raises(BadInput) as refused:
        run_needs(resolver(values)())
    assert refused.value.message == problems["audience"]


def test_a_query_on_the_command_line_outranks_the_campaigns_audience_for_doctor_too(
    database_url, engine, emulator, message_file, tmp_path
) -> None:
    # The campaign's audience file does not exist: doctor must check the query instead,
    # as run reads it, not the file.
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE reco_cfg (token text)"))
    config = tmp_path / "topic-sync.toml"
    config.write_text(
        f'[campaigns.jobreco]\ntopic_prefix = "{PREFIX}"\npool_size = 3\n'
        f'message = "{message_file}"\naudience = "{tmp_path}/never/{{date}}.csv"\n'
    )
    values = {
        "database_url": database_url,
        "emulator_host": emulator.host_port,
        "project": PROJECT,
        "audience_query": "SELECT token FROM reco_cfg",
    }
    check = by_name(check_up(values, config=config))["audience"]
    assert check.status is CheckStatus.OK, check
    assert check.detail.startswith("query on the job's database")
