"""What a run needs, checked once: the required settings, the date, the audience's source."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from topic_sync.app.commands import run_options
from topic_sync.cli import cli
from topic_sync.config.file import load_config
from topic_sync.config.needs import AudienceKind, audience_source, run_needs, run_problems
from topic_sync.config.resolve import Resolved, Source, resolve
from topic_sync.config.table import DATE_WINDOW_DAYS, DEFAULTS, SPECS, required
from topic_sync.engine.run import RunOptions
from topic_sync.errors import BadInput, InputFileError

NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
CAMPAIGN = """
[campaigns.jobreco]
topic_prefix = "jobreco"
message = "m.json"
audience = "/data/{date}.csv"
"""


def resolved(
    given: dict[str, Any],
    *,
    source: Source = Source.FLAG,
    config: Path | None = None,
    day: str | None = "2026-11-22",
) -> Resolved:
    sources = {name: source for name in given}
    return resolve(given, sources, config_path=config, day=day, environ={}, now=NOW)


def test_every_missing_need_is_named_in_the_order_run_checks_them() -> None:
    problems = run_problems(resolved({}, day=None))
    assert list(problems) == ["audience", "topic_prefix", "message", "date"]
    assert (
        problems["topic_prefix"]
        == "--topic-prefix is required (or a --config campaign that sets it)"
    )
    assert problems["date"] == "--date is required"
    with pytest.raises(BadInput, match=r"^--audience \(or --audience-query\) is required"):
        run_needs(resolved({}))


def test_what_a_run_needs_comes_back_typed_when_everything_is_there() -> None:
    given = {"topic_prefix": "jobreco", "message": Path("m.json"), "audience": Path("a.csv")}
    needs = run_needs(resolved(given))
    assert (needs.topic_prefix, needs.message, needs.day) == (
        "jobreco",
        Path("m.json"),
        dt.date(2026, 11, 22),
    )
    assert needs.audience.kind is AudienceKind.FILE and needs.audience.path == Path("a.csv")


@pytest.mark.parametrize("source", [Source.FLAG, Source.ENV])
def test_a_query_given_outranks_the_campaigns_audience(tmp_path: Path, source: Source) -> None:
    config = tmp_path / "topic-sync.toml"
    config.write_text(CAMPAIGN)
    settings = resolved({"audience_query": "SELECT token FROM reco"}, source=source, config=config)
    assert settings.settings.audience is not None  # the campaign's file, for the day
    assert run_problems(settings) == {}
    assert audience_source(settings).kind is AudienceKind.QUERY


def test_an_audience_and_a_query_both_given_exclude_each_other() -> None:
    given = {"audience": Path("a.csv"), "audience_query": "SELECT 1 AS token"}
    assert run_problems(resolved(given))["audience"] == (
        "--audience and --audience-query exclude each other: give one of them"
    )


def test_a_files_campaign_must_give_every_setting_the_table_says_a_run_needs(
    tmp_path: Path,
) -> None:
    assert set(required()) == {"topic_prefix", "message", "audience"}
    for name in required():
        text = "\n".join(line for line in CAMPAIGN.splitlines() if not line.startswith(name))
        path = tmp_path / f"without-{name}.toml"
        path.write_text(text)
        with pytest.raises(InputFileError, match=rf"campaigns\.jobreco\.{name}: required"):
            load_config(path)


def test_config_show_notes_what_run_would_refuse(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "show", "--topic-prefix", "p"], env={})
    assert result.exit_code == 0, result.output
    assert "run would refuse this: --message is required" in result.stderr
    assert "run would refuse this: --audience (or --audience-query) is required" in result.stderr
    assert "--topic-prefix" not in result.stderr
    config = tmp_path / "topic-sync.toml"
    config.write_text(CAMPAIGN)
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(config)], env={})
    assert result.exit_code == 0 and "would refuse" not in result.stderr


def test_the_date_window_is_one_number_for_the_check_and_the_help() -> None:
    today = NOW.date()
    edge = resolved({}, day=str(today + dt.timedelta(days=DATE_WINDOW_DAYS)))
    edge.check_date_window(backfill=False)
    beyond = resolved({}, day=str(today - dt.timedelta(days=DATE_WINDOW_DAYS + 1)))
    with pytest.raises(BadInput, match=rf"\+/- {DATE_WINDOW_DAYS} days"):
        beyond.check_date_window(backfill=False)
    beyond.check_date_window(backfill=True)
    help_text = CliRunner().invoke(cli, ["run", "--help"], env={}).output
    assert f"--date more than {DATE_WINDOW_DAYS} days from today" in " ".join(help_text.split())


@pytest.mark.parametrize(("mode", "live"), [("live", True), ("dry-run", False)])
def test_the_files_mode_is_read_once_into_live(tmp_path: Path, mode: str, live: bool) -> None:
    config = tmp_path / "topic-sync.toml"
    config.write_text(f'mode = "{mode}"\n{CAMPAIGN}')
    settings = resolved({}, config=config)
    assert settings.settings.live is live and settings.sources["live"] is Source.FILE
    assert not hasattr(load_config(config), "mode")
    config.write_text(f"mode = true\n{CAMPAIGN}")
    with pytest.raises(InputFileError, match="mode: must be one of dry-run, live"):
        load_config(config)


def test_every_setting_named_as_a_run_option_reaches_the_engine_as_given() -> None:
    # A setting reaches the engine by a field of its own name: none is dropped on the way.
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    passed = sorted(fields & set(SPECS) - {"timezone", "audience_query", "audience_database_url"})
    assert {"max_churn", "concurrency", "deadline", "rest_period", "wait_timeout"} <= set(passed)
    changed = {
        "max_churn": 0.11,
        "max_size_change": 0.22,
        "max_operations": 333,
        "allow_large_churn": True,
        "propagation_delay": 4.5,
        "concurrency": 6,
        "deadline": 600.0,
        "max_dead": 0.07,
        "rest_period": 7200.0,
        "token_column": "tok",
        "wait_for": Path("_SUCCESS"),
        "wait_timeout": 60.0,
        "pool_size": 9,
        "live": True,
        "pool_policy": "ordinal",
        "rate_limit": 123.0,
        "publish_at": "08:00",
        "publish_by": "09:30",
    }
    assert set(passed) <= set(changed), "give every passed setting a value here"
    settings = DEFAULTS.replace(**changed, retry_min_wait=1.0, retry_max_wait=2.0, max_retries=1)
    options = run_options(
        settings, day=NOW.date(), prefix="p", audience_path=Path("a"), message_path=Path("m")
    )
    typed = {"publish_at": dt.time(8, 0), "publish_by": dt.time(9, 30)}  # read as times
    for name in passed:
        assert getattr(options, name) == typed.get(name, changed[name]), name
    assert (options.retry.min_wait, options.retry.max_wait, options.retry.max_retries) == (
        1.0,
        2.0,
        1,
    )
