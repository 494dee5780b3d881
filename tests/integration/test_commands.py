"""The application layer over real PostgreSQL and the emulator: what the CLI and the
scheduler call, with settings resolved from a configuration file."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner

from tests.support import write_audience
from topic_sync.cli import cli


def write(tmp_path, text: str):
    path = tmp_path / "topic-sync.toml"
    path.write_text(text)
    return path


def test_a_config_file_alone_drives_a_run(tmp_path, database_url, emulator, message_file) -> None:
    day = dt.date(2026, 11, 22)
    tokens = [f"cfg:{i}" for i in range(40)]
    write_audience(tmp_path / f"{day}.csv", ["token", *tokens])
    config = write(
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
topic_prefix = "cfg"
pool_size = 3
message = "{message_file}"
audience = "{{date}}.csv"
""",
    )
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
