"""The audience guard against real PostgreSQL and the emulator: a day's audience is compared
with the campaign's previous audience, not with a pool topic last synced days ago.

The recommended configuration (the operator guide's example file, read from the guide
itself) runs 30 days of an audience picked anew each morning (20% daily churn) without a
refusal, and still refuses an empty, truncated or wrong-day audience."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support import (
    DAY,
    PREFIX,
    Recorder,
    a_day_passes,
    execute,
    last_recipients,
    opts,
    snapshot,
    subscription_calls,
    toks,
)
from topic_sync.app import commands
from topic_sync.app.services import Io
from topic_sync.config.resolve import Source, resolve
from topic_sync.emulator import FcmEmulator
from topic_sync.engine.run import RunResult, run_day
from topic_sync.errors import InputFileError, Refused, TopicSyncError


@pytest.fixture
def transport() -> str:
    """The guard does not depend on the transport: the default one is enough here."""
    return "v1-direct"


GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md").read_text()


def recommended_config() -> str:
    """The example configuration file of the operator guide, as the guide shows it."""
    section = GUIDE.split("## Running every day: the configuration file", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found, "the operator guide has no example configuration"
    return found.group(1)


def rotating_audiences(days: int, size: int, churn: float, seed: int = 7) -> list[list[str]]:
    """An audience picked anew each morning: each day `churn` of it is replaced."""
    rng = random.Random(seed)
    current = list(range(size))
    following = size
    series = []
    for _ in range(days):
        series.append([f"reco:{n:06d}:APA91b" for n in current])
        leaving = set(rng.sample(current, round(size * churn)))
        current = [n for n in current if n not in leaving]
        current += range(following, following + len(leaving))
        following += len(leaving)
    return series


@dataclasses.dataclass
class Campaign:
    """The guide's configuration, pointed at this test's database, emulator and files."""

    config: Path
    audiences: Path  # the folder of {date}.csv
    database_url: str
    emulator: FcmEmulator

    def run(self, day: dt.date) -> RunResult:
        recorder = Recorder()
        now = dt.datetime.combine(day, dt.time(6, 30), dt.UTC)
        resolved = resolve(
            {"emulator_host": self.emulator.host_port},
            {"emulator_host": Source.ENV},
            config_path=self.config,
            day=day.isoformat(),
            environ={"DATABASE_URL": self.database_url},
            now=now,
        )
        io = Io(log=recorder.log, environ={}, sleep=recorder.sleep, now=lambda: now)
        return commands.run_day(resolved, io)

    def write(self, day: dt.date, tokens: list[str]) -> Path:
        path = self.audiences / f"{day}.csv"
        path.write_text("".join(f"{t}\n" for t in tokens))
        return path


@pytest.fixture
def campaign(tmp_path, database_url, emulator) -> Campaign:
    audiences = tmp_path / "reco"
    audiences.mkdir()
    config = recommended_config()
    assert "max_churn" in config and 'audience = "/data/reco/{date}.csv"' in config
    path = tmp_path / "topic-sync.toml"
    path.write_text(config.replace("/data/reco/", f"{audiences}/"))
    (tmp_path / "jobreco-message.json").write_text(
        '{"notification": {"title": "Jobs for {date}", "body": "Your picks are ready"},'
        ' "data": {"type": "jobreco", "version": "1"}}'
    )
    return Campaign(path, audiences, database_url, emulator)


def test_the_recommended_configuration_runs_30_days_of_20_percent_churn(
    campaign: Campaign, engine
) -> None:
    start = dt.date(2026, 11, 1)
    series = rotating_audiences(33, 100, 0.2)
    for offset, audience in enumerate(series[:30]):
        day = start + dt.timedelta(days=offset)
        campaign.write(day, audience)
        result = campaign.run(day)
        assert result.status == "published", (day, result.note)
        assert last_recipients(campaign.emulator, result.topic) == frozenset(audience)
        a_day_passes(engine)  # the next date comes a day later, as in production
        if offset:
            change = result.audience_change
            assert change is not None and change.previous_day == day - dt.timedelta(days=1)
            assert (change.left, change.new) == (20, 20)
    assert len(campaign.emulator.publishes) == 30

    # Day 31 goes wrong four ways; each is refused and changes nothing.
    day = start + dt.timedelta(days=30)
    today = series[30]
    broken: dict[str, tuple[Callable[[Path], None], type[TopicSyncError], str]] = {
        "empty": (lambda p: p.write_text(""), InputFileError, "no tokens"),
        "truncated at a line": (
            lambda p: p.write_text("".join(f"{t}\n" for t in today[:45])),
            Refused,
            "are gone",
        ),
        "truncated mid-line": (
            lambda p: p.write_text("".join(f"{t}\n" for t in today[:80]) + today[80][:9]),
            InputFileError,
            "does not end with a newline",
        ),
        "the wrong day's file": (
            lambda p: p.write_text("".join(f"{t}\n" for t in series[20])),
            Refused,
            "are gone",
        ),
    }
    before, calls = snapshot(engine), subscription_calls(campaign.emulator)
    for case, (write, error, reason) in broken.items():
        write(campaign.audiences / f"{day}.csv")
        with pytest.raises(error) as info:
            campaign.run(day)
        assert reason in info.value.message, (case, info.value.message)
        assert snapshot(engine) == before, case
        assert subscription_calls(campaign.emulator) == calls, case

    # The refusals did not become the baseline: the real day 31 and 32 run.
    for offset in (30, 31):
        day = start + dt.timedelta(days=offset)
        campaign.write(day, series[offset])
        assert campaign.run(day).status == "published"
        a_day_passes(engine)


# --- the guard, day by day ------------------------------------------------------------------


def kept_dates(engine) -> list[dt.date]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT run_date FROM audiences a JOIN campaigns c ON c.id = a.campaign_id "
                    "WHERE c.prefix = :c ORDER BY 1"
                ),
                {"c": PREFIX},
            )
        )


def later(days: int) -> dt.date:
    return DAY + dt.timedelta(days=days)


def test_the_first_day_has_nothing_to_compare_with(tmp_path, message_file, deps, recorder):
    result = run_day(opts(tmp_path, message_file, toks(0, 100)), deps)
    assert result.status == "published" and result.audience_change is None
    assert any("no earlier audience of campaign 'jobreco'" in line for line in recorder.lines)
    assert result.summary()["audience_change"] is None
    assert kept_dates(deps.engine) == [DAY]


def test_the_guard_compares_with_the_previous_audience_not_the_topic(
    tmp_path, message_file, deps, emulator
) -> None:
    # Pool of 2: day 3 reuses day 1's topic. Day by day 20% of the audience changes; against
    # the topic (two days old) 36% would; the guard at 30% judges the audience.
    audiences = [toks(0, 100), toks(20, 120), toks(40, 140)]
    for offset, audience in enumerate(audiences):
        result = run_day(opts(tmp_path, message_file, audience, later(offset), max_churn=0.3), deps)
        assert result.status == "published"
    assert result.plan.newly_removed == 40  # the topic lost 40 of its 100 members
    assert result.audience_change.summary() == {
        "previous_date": later(1).isoformat(),
        "previous": 100,
        "size": 100,
        "kept": 80,
        "left": 20,
        "new": 20,
        "left_share": 0.2,
        "new_share": 0.2,
        "size_change": 0.0,
    }
    assert kept_dates(deps.engine) == [later(1), later(2)]  # the two latest dates only


@pytest.mark.parametrize(
    ("name", "audience", "reason"),
    [
        ("shrunk", toks(0, 40), "60 of the previous audience's 100 tokens are gone"),
        ("a join gone wrong", toks(0, 300), "200 of its 300 tokens are new"),
        ("another day's", toks(500, 600), "100 of the previous audience's 100 tokens are gone"),
    ],
)
def test_a_broken_audience_is_refused_until_allowed(
    tmp_path, message_file, deps, emulator, name, audience, reason
) -> None:
    run_day(opts(tmp_path, message_file, toks(0, 100)), deps)
    before, calls = snapshot(deps.engine), subscription_calls(emulator)
    with pytest.raises(Refused) as info:
        run_day(opts(tmp_path, message_file, audience, later(1)), deps)
    assert reason in info.value.message
    assert f"compared with the audience of {DAY}" in info.value.message
    assert "--allow-large-churn" in info.value.message
    assert snapshot(deps.engine) == before
    assert subscription_calls(emulator) == calls
    # A dry run says the same and keeps nothing.
    with pytest.raises(Refused):
        run_day(opts(tmp_path, message_file, audience, later(1), live=False), deps)
    result = run_day(opts(tmp_path, message_file, audience, later(1), allow_large_churn=True), deps)
    assert last_recipients(emulator, result.topic) == frozenset(audience)
    assert kept_dates(deps.engine) == [DAY, later(1)]  # now the baseline


def test_a_rerun_compares_with_the_day_before_not_with_itself(
    tmp_path, message_file, deps, emulator
) -> None:
    run_day(opts(tmp_path, message_file, toks(0, 100)), deps)
    # Day 2 first planned with the wrong file, allowed by mistake, then stopped by its
    # deadline; its rerun with the right file is compared with day 1, not with the mistake.
    with pytest.raises(TopicSyncError):
        run_day(
            opts(
                tmp_path, message_file, toks(500, 600), later(1), allow_large_churn=True, deadline=0
            ),
            deps,
        )
    result = run_day(opts(tmp_path, message_file, toks(10, 110), later(1)), deps)
    assert result.status == "published"
    assert result.audience_change.previous_day == DAY
    assert (result.audience_change.left, result.audience_change.new) == (10, 10)


def test_limits_stretch_over_days_without_a_run(tmp_path, message_file, deps) -> None:
    run_day(opts(tmp_path, message_file, toks(0, 1000), max_churn=0.3), deps)
    # Four days later, 1 - 0.8^4 = 59% of a 20%-a-day audience changed: within 30% a day.
    result = run_day(opts(tmp_path, message_file, toks(590, 1590), later(4), max_churn=0.3), deps)
    assert result.status == "published"
    with pytest.raises(Refused, match="30% a day over 4 days"):
        run_day(opts(tmp_path, message_file, toks(5000, 6000), later(8), max_churn=0.3), deps)


def test_an_identical_audience_is_a_warning(tmp_path, message_file, deps, recorder) -> None:
    run_day(opts(tmp_path, message_file, toks(0, 50)), deps)
    result = run_day(opts(tmp_path, message_file, toks(0, 50), later(1)), deps)
    assert result.status == "published" and result.exit_code == 0
    [warning] = [w for w in result.warnings if "exactly the audience of" in w]
    assert f"exactly the audience of {DAY} (50 tokens)" in warning
    assert "wrong day's file" in warning


def test_max_operations_bounds_a_day(tmp_path, message_file, deps, emulator) -> None:
    with pytest.raises(Refused, match="needs 100 operations .* over --max-operations 99"):
        run_day(opts(tmp_path, message_file, toks(0, 100), max_operations=99), deps)
    assert subscription_calls(emulator) == 0
    assert run_day(opts(tmp_path, message_file, toks(0, 100), max_operations=100), deps).status == (
        "published"
    )


def test_the_upgrade_seeds_each_campaign_from_its_latest_topic(database_url, engine) -> None:
    from alembic import command

    from topic_sync.store import db

    cfg = db.alembic_config(database_url)
    command.downgrade(cfg, "0008")
    execute(engine, "INSERT INTO tokens (token) SELECT 't' || n FROM generate_series(1, 5) n")
    execute(
        engine,
        "INSERT INTO runs (id, prefix, run_date, topic, transport, status, audience_size) VALUES "
        "(1, 'a', '2026-11-20', 'a-0', 'v1', 'published', 3), "
        "(2, 'a', '2026-11-21', 'a-1', 'v1', 'published', 4), "
        "(3, 'a', '2026-11-22', 'a-0', 'v1', 'no_audience', 0)",
    )
    execute(
        engine,
        "INSERT INTO subscriptions (topic, token_id, status) SELECT 'a-1', id, CASE WHEN id = 5 "
        "THEN 'unsubscribed' WHEN id = 4 THEN 'pending_subscribe' ELSE 'subscribed' END "
        "FROM tokens",
    )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.name, a.run_date, a.run_id, a.size, a.token_ids FROM audiences a "
                "JOIN campaigns c ON c.id = a.campaign_id"
            )
        ).all()
        ids = sorted(conn.scalars(text("SELECT id FROM tokens WHERE token <> 't5'")))
    assert [tuple(r) for r in rows] == [("a", dt.date(2026, 11, 21), 2, 4, ids)]
