"""The application layer over real PostgreSQL and the emulator: what the CLI and the
scheduler call, with settings resolved from a configuration file."""

from __future__ import annotations

import datetime as dt
import json

import firebase_admin
import pytest
from click.testing import CliRunner

from tests.support import a_day_passes, write_audience
from topic_sync.cli import cli


def write(tmp_path, text: str):
    path = tmp_path / "topic-sync.toml"
    path.write_text(text)
    return path


def rehearsal(tmp_path, database_url, emulator, message_file, *, prefix: str, pool: int):
    """A configuration file for a live rehearsal: the test's database and emulator, one
    campaign whose audience is `{date}.csv` beside it, no waiting."""
    return write(
        tmp_path,
        f"""
database_url = "{database_url}"
emulator_host = "{emulator.host_port}"
mode = "live"
[defaults]
propagation_delay = 0
retry_min_wait = 0
retry_max_wait = 0
[campaigns.jobreco]
topic_prefix = "{prefix}"
pool_size = {pool}
message = "{message_file}"
audience = "{{date}}.csv"
""",
    )


def test_a_config_file_alone_drives_a_run(tmp_path, database_url, emulator, message_file) -> None:
    day = dt.date(2026, 11, 22)
    tokens = [f"cfg:{i}" for i in range(40)]
    write_audience(tmp_path / f"{day}.csv", ["token", *tokens])
    config = rehearsal(tmp_path, database_url, emulator, message_file, prefix="cfg", pool=3)
    result = CliRunner().invoke(
        cli,
        ["run", "--config", str(config), "--date", day.isoformat(), "--backfill", "--json"],
        env={},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "published" and summary["added"] == 40
    assert emulator.publishes[-1].recipients == frozenset(tokens)
    assert emulator.publishes[-1].topic == f"cfg-{day.toordinal() % 3}"
    # Every command takes --config and resolves the same way: the rehearsal's next steps go
    # to the rehearsal's database and emulator, not to whatever the environment points at.
    clean = {"DATABASE_URL": None, "FCM_EMULATOR_HOST": None, "GOOGLE_CLOUD_PROJECT": None}
    base = ["--config", str(config)]
    repaired = CliRunner().invoke(cli, ["reconcile", *base, "--live", "--json"], env=clean)
    assert repaired.exit_code == 0, repaired.output
    topics = {t["topic"] for t in json.loads(repaired.stdout)["topics"]}
    assert topics == {"cfg-0", "cfg-1", "cfg-2"}  # the campaign's pool
    assert f"FCM emulator at {emulator.host_port}" in repaired.stderr
    status = CliRunner().invoke(cli, ["status", *base, "--json"], env=clean)
    assert status.exit_code == 0, status.output
    assert [r["prefix"] for r in json.loads(status.stdout)["runs"]] == ["cfg"]
    listed = CliRunner().invoke(cli, ["report", *base, "--format", "json"], env=clean)
    assert json.loads(listed.stdout)["runs"][0]["published"] is True
    forgot = CliRunner().invoke(cli, ["forget", *base, tokens[0], "--json"], env=clean)
    assert forgot.exit_code == 0, forgot.output
    assert json.loads(forgot.stdout)["forgotten"] == 1


@pytest.mark.parametrize("retry_after", [None, 1.0], ids=["no-hint", "retry-after"])
def test_each_command_starts_from_the_quota_the_last_one_learned(
    tmp_path, database_url, emulator, message_file, engine, retry_after
) -> None:
    from sqlalchemy import text

    # Well under the configured 3000/s; its 429s say how long to wait, or not.
    emulator.set_quota(100, window="sliding", retry_after=retry_after)
    day = dt.date(2026, 11, 22)
    for offset, count in ((0, 300), (1, 350)):
        tokens = [f"q:{i}" for i in range(count)]
        write_audience(tmp_path / f"{day + dt.timedelta(days=offset)}.csv", ["token", *tokens])
    config = rehearsal(tmp_path, database_url, emulator, message_file, prefix="quota", pool=1)

    def run(when: dt.date, *extra: str):
        argv = ["run", "--config", str(config), "--date", when.isoformat(), "--backfill"]
        result = CliRunner().invoke(cli, [*argv, *extra], env={})
        assert result.exit_code == 0, result.output
        return result

    first = run(day)
    assert "FCM quota: starting from" not in first.stderr  # nothing learned yet: slow start
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT endpoint, api, rate, measured, waits FROM fcm_quota")
        ).all()
    assert [(r.endpoint, r.api, r.measured, r.waits) for r in rows] == [
        (f"emulator {emulator.host_port}", "v1", True, retry_after is not None)
    ]
    learned = rows[0].rate
    # FCM refused above it: measured, never above the quota. Not always near it: a first
    # command on a loaded machine can measure far under it (7.6/s and 29/s seen with six
    # copies of this test at once), and the next command probes up from there.
    assert 0 < learned <= 150
    a_day_passes(engine)  # the pool's one topic has rested
    second = run(day + dt.timedelta(days=1))
    assert f"FCM quota: starting from {learned:,.0f} requests/s (measured" in second.stderr
    assert ("its 429s say how long to wait" in second.stderr) is (retry_after is not None)
    # The Instance ID API counts a quota of its own: nothing learned for it yet.
    legacy = run(day + dt.timedelta(days=1), "--transport", "legacy-iid")
    assert "FCM quota: starting from" not in legacy.stderr


def test_a_quota_that_cannot_be_kept_costs_a_warning_not_the_command(
    database_url, emulator, monkeypatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from topic_sync import store
    from topic_sync.app.services import Io, services
    from topic_sync.config.table import DEFAULTS

    def gone(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store, "remember_quota", gone)
    lines: list[str] = []
    settings = DEFAULTS.replace(
        database_url=database_url, emulator_host=emulator.host_port, project="demo-test"
    )
    with services(settings, Io(log=lines.append, environ={})) as deps:
        result = deps.client.subscribe([f"w:{i}" for i in range(50)], "t")
    assert result.reasons == (None,) * 50
    assert any(line.startswith("WARNING: the FCM quota learned") for line in lines), lines


def test_a_command_s_transport_opens_connections_when_told_a_day_s_size(
    database_url, emulator
) -> None:
    from topic_sync.app.services import Io, services
    from topic_sync.config.table import DEFAULTS
    from topic_sync.fcm.v1_direct import V1DirectTopics

    settings = DEFAULTS.replace(
        database_url=database_url, emulator_host=emulator.host_port, project="demo-test"
    )
    with services(settings, Io(log=lambda _line: None, environ={})) as deps:
        deps.warm_up(7)  # what the engine does as a live run's plan begins
        topics = deps.client.topic_calls
        assert isinstance(topics, V1DirectTopics) and topics.warming is not None
        assert topics.warming.result(10) == 7


def test_a_command_s_work_is_spared_the_collector_s_walks_over_what_it_built(
    database_url, emulator
) -> None:
    # What a command built before its work (modules, engine, client) is frozen out of the
    # garbage collector while the work runs (each full collection walked it: a 35-45 ms
    # stall of every request), and handed back after, so a long-lived process (the
    # scheduler) still collects it once the command is done.
    import gc

    from topic_sync.app.services import Io, services
    from topic_sync.config.table import DEFAULTS

    settings = DEFAULTS.replace(
        database_url=database_url, emulator_host=emulator.host_port, project="demo-test"
    )
    gc.unfreeze()  # whatever this process froze before
    with services(settings, Io(log=lambda _line: None, environ={})) as deps:
        assert gc.get_freeze_count() > 10_000
        result = deps.client.subscribe([f"g:{i}" for i in range(5)], "t")
    assert result.reasons == (None,) * 5
    assert gc.get_freeze_count() == 0


def test_every_command_lets_go_of_the_firebase_app_it_made(
    tmp_path, database_url, emulator, message_file, mocker
) -> None:
    # The scheduler runs a command a day in one process: an app kept per command would pile
    # up there, each with its HTTP sessions.
    day = dt.date(2026, 11, 22)
    write_audience(tmp_path / f"{day}.csv", ["token", *(f"app:{i}" for i in range(10))])
    config = rehearsal(tmp_path, database_url, emulator, message_file, prefix="app", pool=2)
    base = ["--config", str(config)]
    made = mocker.spy(firebase_admin, "initialize_app")
    for args in (
        ["run", *base, "--date", day.isoformat(), "--backfill"],
        ["reconcile", *base, "--live"],
        ["doctor", *base, "--date", day.isoformat(), "--backfill"],
        ["target", "bind", *base, "--live"],
    ):
        before = len(made.spy_return_list)
        result = CliRunner().invoke(cli, args, env={})
        assert result.exit_code == 0, (args, result.output)
        [app] = made.spy_return_list[before:]
        with pytest.raises(ValueError, match="does not exist"):
            firebase_admin.get_app(app.name)
