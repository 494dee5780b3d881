"""The configuration file: validation that names keys, precedence, a config-driven run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from topic_sync.cli import cli
from topic_sync.config.file import load_config
from topic_sync.dates import parse_duration
from topic_sync.errors import BadInput, InputFileError

BASE = """
database_url = "postgresql://u:secret@db/x"
mode = "dry-run"
[campaigns.jobreco]
topic_prefix = "jobreco"
pool_size = 7
message = "m.json"
audience = "/data/{date}.csv"
run_at = "06:30"
timezone = "Asia/Tokyo"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topic-sync.toml"
    path.write_text(text)
    return path


def test_loads_campaign_with_paths_relative_to_the_file(tmp_path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    c = cfg.campaign(None)
    assert c.message == tmp_path / "m.json"
    assert c.audience_for(dt.date(2026, 11, 22)) == Path("/data/2026-11-22.csv")
    assert c.run_at == dt.time(6, 30) and c.timezone == "Asia/Tokyo"
    # 23:30 UTC is already the next day in Tokyo.
    assert c.today(dt.datetime(2026, 11, 22, 23, 30, tzinfo=dt.UTC)) == dt.date(2026, 11, 23)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("pool_size = 7", "pool_sise = 7"), "campaigns.jobreco.pool_sise: unknown key"),
        (("pool_size = 7", "pool_size = 0"), "campaigns.jobreco.pool_size: must be between 1"),
        (("pool_size = 7", "pool_size = 2001"), "campaigns.jobreco.pool_size"),
        (("pool_size = 7", 'pool_size = "7"'), "campaigns.jobreco.pool_size: must be a whole"),
        (
            ('topic_prefix = "jobreco"', 'topic_prefix = "job/reco"'),
            "campaigns.jobreco.topic_prefix: topic prefix",
        ),
        (('topic_prefix = "jobreco"', ""), "campaigns.jobreco.topic_prefix: required"),
        (
            ('audience = "/data/{date}.csv"', 'audience = "/data/today.csv"'),
            "campaigns.jobreco.audience: must contain {date}",
        ),
        (('run_at = "06:30"', 'run_at = "6.30am"'), "campaigns.jobreco.run_at"),
        (('timezone = "Asia/Tokyo"', 'timezone = "Mars/Olympus"'), "campaigns.jobreco.timezone"),
        (('mode = "dry-run"', 'mode = "yolo"'), "mode: must be one of"),
        (('mode = "dry-run"', 'colour = "red"'), "colour: unknown key"),
        (
            ('run_at = "06:30"', 'run_at = "06:30"\nmax_churn = 2'),
            "campaigns.jobreco.max_churn: must be between",
        ),
        (
            ('run_at = "06:30"', 'run_at = "06:30"\ndeadline = "soon"'),
            "campaigns.jobreco.deadline: must be a duration",
        ),
        (
            ('run_at = "06:30"', 'run_at = "06:30"\npool_policy = "cheapest"'),
            "campaigns.jobreco.pool_policy: must be one of cost, ordinal",
        ),
        (
            ('run_at = "06:30"', 'run_at = "06:30"\nrest_period = "a while"'),
            "campaigns.jobreco.rest_period: must be a duration",
        ),
        (('mode = "dry-run"', 'mode = "dry-run"\nretention = "1h"'), "retention: must be at"),
        (('mode = "dry-run"', 'mode = "dry-run"\nretention = "ever"'), "retention: must be a"),
        (
            ('run_at = "06:30"', 'run_at = "06:30"\nretention = "90d"'),
            "campaigns.jobreco.retention: unknown key",
        ),
    ],
)
def test_every_validation_error_names_its_key(tmp_path, change, key) -> None:
    with pytest.raises(InputFileError) as error:
        load_config(write(tmp_path, BASE.replace(*change)))
    assert str(tmp_path / "topic-sync.toml") in error.value.message
    assert key in error.value.message


def test_overlapping_pools_and_topic_budget(tmp_path) -> None:
    overlap = BASE + BASE.split("\n", 3)[3].replace("[campaigns.jobreco]", "[campaigns.other]")
    with pytest.raises(InputFileError, match=r"campaigns.other.topic_prefix: pool overlaps"):
        load_config(write(tmp_path, overlap))
    big = BASE.replace("pool_size = 7", "pool_size = 1500") + (
        '[campaigns.b]\ntopic_prefix = "b"\npool_size = 600\nmessage = "m"\naudience = "{date}"\n'
    )
    with pytest.raises(InputFileError, match="2100 topics; a token can be in at most 2000"):
        load_config(write(tmp_path, big))


def test_toml_syntax_error_has_a_line(tmp_path) -> None:
    with pytest.raises(InputFileError) as error:
        load_config(write(tmp_path, BASE + "\nbroken = = 1\n"))
    assert error.value.line == 12


def test_campaign_choice(tmp_path) -> None:
    two = BASE + '[campaigns.b]\ntopic_prefix = "b"\nmessage = "m"\naudience = "{date}"\n'
    cfg = load_config(write(tmp_path, two))
    with pytest.raises(BadInput, match="choose one with --campaign"):
        cfg.campaign(None)
    with pytest.raises(BadInput, match="no campaign 'c'"):
        cfg.campaign("c")
    assert cfg.campaign("b").pool_size == 7


def test_env_reference_and_masking(tmp_path) -> None:
    cfg = load_config(write(tmp_path, BASE.replace('"postgresql://u:secret@db/x"', '"env:MY_DB"')))
    assert cfg.resolve_database_url({"MY_DB": "postgresql://a@b/c"}) == "postgresql://a@b/c"
    with pytest.raises(InputFileError, match=r"database_url: refers to \$MY_DB"):
        cfg.resolve_database_url({})
    assert parse_duration("1h30m") == 5400


def show(tmp_path, *args, env=None) -> dict:
    config = write(tmp_path, BASE + "max_churn = 0.3\nconcurrency = 6\nrate_limit = 100\n")
    result = CliRunner().invoke(
        cli, ["config", "show", "--json", "--config", str(config), *args], env=env or {}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_pool_policy_and_rest_period_come_from_a_campaign_or_the_command_line(
    tmp_path,
) -> None:
    assert show(tmp_path)["pool_policy"] == {"value": "cost", "source": "default"}
    assert show(tmp_path)["rest_period"] == {"value": 6 * 3600.0, "source": "default"}
    config = write(tmp_path, BASE + 'pool_policy = "ordinal"\nrest_period = "4h"\n')
    args = ["config", "show", "--json", "--config", str(config), "--rest-period", "90m"]
    shown = json.loads(CliRunner().invoke(cli, args, env={}).stdout)
    assert shown["pool_policy"] == {"value": "ordinal", "source": "file"}
    assert shown["rest_period"] == {"value": 5400.0, "source": "flag"}


def test_precedence_flag_over_env_over_file_over_default(tmp_path) -> None:
    shown = show(
        tmp_path,
        "--rate-limit",
        "50",
        env={"TOPIC_SYNC_RATE_LIMIT": "70", "TOPIC_SYNC_CONCURRENCY": "9"},
    )
    assert shown["rate_limit"] == {"value": 50.0, "source": "flag"}  # flag beats env and file
    assert shown["concurrency"] == {"value": 9, "source": "env"}  # env beats file
    assert shown["max_churn"] == {"value": 0.3, "source": "file"}  # file beats default
    assert shown["propagation_delay"] == {"value": 5.0, "source": "default"}
    assert shown["database_url"]["value"] == "postgresql://u:***@db/x"
    assert "secret" not in json.dumps(shown)


@pytest.mark.parametrize("as_json", [True, False])
def test_config_show_never_prints_a_password_from_the_query_string(tmp_path, as_json) -> None:
    url = "postgresql://alice@h/db?password=S3cret&sslpassword=Other"
    args = ["config", "show", "--config", str(write(tmp_path, BASE)), "--database-url", url]
    result = CliRunner().invoke(cli, [*args, *(["--json"] if as_json else [])], env={})
    assert result.exit_code == 0, result.output
    assert "S3cret" not in result.output and "Other" not in result.output
    assert "password=***" in result.output


def test_a_campaign_keeps_its_name_whatever_sync_settings_it_holds(tmp_path) -> None:
    """The campaign's name is its table's name, not the last sync key read (max_churn)."""
    text = BASE.replace('timezone = "Asia/Tokyo"', 'timezone = "Asia/Tokyo"\nmax_churn = 0.3')
    cfg = load_config(
        write(
            tmp_path,
            text + '[campaigns.other]\ntopic_prefix = "other"\n'
            'message = "m.json"\naudience = "/d/{date}"\nwait_timeout = "1h"\n',
        )
    )
    assert sorted((c.name, name) for name, c in cfg.campaigns.items()) == [
        ("jobreco", "jobreco"),
        ("other", "other"),
    ]
    assert cfg.campaign("jobreco").sync["max_churn"] == 0.3


def test_top_level_settings_reach_the_commands(tmp_path) -> None:
    """retention, embedded_dir and allow_embedded_database at the top level are used, not
    only checked; a relative folder is relative to the file."""
    from topic_sync.config.resolve import resolve

    text = BASE.replace(
        'mode = "dry-run"',
        'mode = "dry-run"\nretention = "30d"\nembedded_dir = "pg"\nallow_embedded_database = true',
    )
    path = write(tmp_path, text)
    resolved = resolve({}, {}, config_path=path, environ={}, now=dt.datetime.now(dt.UTC))
    s = resolved.settings
    assert (s.retention, s.embedded_dir, s.allow_embedded_database) == (
        30 * 86400.0,
        tmp_path / "pg",
        True,
    )
    assert resolved.sources["retention"] == "file"
