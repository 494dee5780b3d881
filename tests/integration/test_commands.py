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
