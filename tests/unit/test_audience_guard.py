"""The audience guard's arithmetic: a day's audience against the campaign's previous one.
Limits are per day and compound over the days between the two audiences."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.support import run_options
from topic_sync.engine.run import RunOptions, audience_problems
from topic_sync.store import AudienceChange

DAY = dt.date(2026, 11, 22)


def options(**kw: object) -> RunOptions:
    base: dict[str, object] = {
        "day": DAY,
        "prefix": "jobreco",
        "pool_size": 7,
        "audience_path": Path("a.txt"),
        "message_path": Path("m.json"),
        "max_churn": 0.3,
        "max_size_change": 0.5,
    }
    base.update(kw)
    return run_options(**base)


def change(previous: int, size: int, kept: int, days: int = 1) -> AudienceChange:
    return AudienceChange(DAY - dt.timedelta(days=days), previous, size, kept)


def test_the_measures() -> None:
    c = change(previous=4000, size=1000, kept=856)
    assert (c.left, c.new) == (3144, 144)
    assert (c.left_share, c.new_share, c.size_change) == (0.786, 0.144, -0.75)


def test_a_healthy_day_passes() -> None:
    # 20% of 1000 left, 200 new: the daily rotation of a recommender.
    assert audience_problems(options(), change(1000, 1000, 800)) == []


@pytest.mark.parametrize(
    ("case", "c", "expected"),
    [
        ("cut to 40%", change(1000, 400, 400), ["600 of the previous", "60% smaller"]),
        ("another day's file", change(1000, 1000, 100), ["900 of the previous", "900 of its"]),
        ("a join that tripled it", change(1000, 3000, 1000), ["2000 of its", "200% larger"]),
        ("nearly empty", change(1000, 3, 3), ["997 of the previous", "100% smaller"]),
    ],
)
def test_a_broken_audience_is_named(case: str, c: AudienceChange, expected: list[str]) -> None:
    problems = audience_problems(options(), c)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_limits_compound_over_the_days_between() -> None:
    # Three days of 20% churn: 1 - 0.8^3 = 49% left, which 30% a day allows over three
    # days (1 - 0.7^3 = 66%) but not over one.
    c = change(1000, 1000, 512, days=3)
    assert audience_problems(options(), c) == []
    problems = audience_problems(options(), change(1000, 1000, 512))
    assert "--max-churn 30%)" in problems[0]
    # Another day's file is still refused across a gap: 90% left > 66%.
    problems = audience_problems(options(), change(1000, 1000, 100, days=3))
    assert "--max-churn 30% a day over 3 days" in problems[0]


def test_size_limits_grow_and_shrink_per_day() -> None:
    assert audience_problems(options(), change(1000, 1500, 1000)) != []  # 33% new > 30%
    assert audience_problems(options(max_churn=1.0), change(1000, 1500, 1000)) == []
    assert audience_problems(options(max_churn=1.0), change(1000, 1600, 1000)) != []
    assert audience_problems(options(max_churn=1.0), change(1000, 2200, 1000, days=2)) == []
    assert audience_problems(options(max_churn=1.0), change(1000, 260, 0, days=2)) == []
    assert audience_problems(options(max_churn=1.0), change(1000, 240, 0, days=2)) != []
