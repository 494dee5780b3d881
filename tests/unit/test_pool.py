"""The rotating topic pool: which topic a day uses, and which prefixes and sizes are refused."""

from __future__ import annotations

import datetime as dt

import pytest

from bench.pool_series import SERIES, compare, missed_targets
from topic_sync.config.table import DEFAULTS, POOL_POLICIES
from topic_sync.dates import format_duration, parse_duration
from topic_sync.errors import BadInput, ExitCode
from topic_sync.pool import (
    MAX_TOPICS_PER_TOKEN,
    Candidate,
    NoRestingTopic,
    PoolPolicy,
    Why,
    choose_topic,
    decide_topic,
    is_resting,
    pool_topics,
    slot_for,
    topic_for,
    validate_pool,
)

DAY = dt.date(2026, 11, 22)


# ------------------------------------------------------------------ which topic a day uses


@pytest.mark.parametrize("pool_size", [1, 2, 7, 30, MAX_TOPICS_PER_TOKEN])
@pytest.mark.parametrize(
    "day",
    [dt.date(1, 1, 1), dt.date(2024, 2, 29), DAY, dt.date(2027, 9, 29), dt.date(9999, 12, 31)],
)
def test_slot_is_ordinal_modulo_pool_size(day, pool_size):
    assert slot_for(day, pool_size) == day.toordinal() % pool_size
    assert topic_for("jobreco", pool_size, day) == f"jobreco-{day.toordinal() % pool_size}"


def test_known_days_land_on_known_topics():
    # 2026-11-22 is ordinal 739_942, a multiple of 7 (and 739_942 % 30 == 22).
    assert DAY.toordinal() == 739_942
    assert topic_for("jobreco", 7, DAY) == "jobreco-0"
    assert topic_for("jobreco", 7, DAY + dt.timedelta(days=1)) == "jobreco-1"
    assert topic_for("jobreco", 7, DAY + dt.timedelta(days=6)) == "jobreco-6"
    assert topic_for("jobreco", 7, DAY + dt.timedelta(days=7)) == "jobreco-0"
    assert topic_for("jobreco", 7, DAY - dt.timedelta(days=1)) == "jobreco-6"
    assert topic_for("jobreco", 30, DAY) == "jobreco-22"


def test_same_date_always_same_topic():
    first = topic_for("jobreco", 7, DAY)
    assert all(topic_for("jobreco", 7, dt.date(2026, 11, 22)) == first for _ in range(5))
    # Only the date counts: a datetime's time of day cannot move a rerun to another topic.
    late = dt.datetime(2026, 11, 22, 23, 59, 59)
    assert topic_for("jobreco", 7, late.date()) == first


@pytest.mark.parametrize("pool_size", [2, 7, 31])
def test_consecutive_days_rotate_through_the_whole_pool(pool_size):
    days = [DAY + dt.timedelta(days=i) for i in range(pool_size)]
    topics = [topic_for("jobreco", pool_size, day) for day in days]

    assert sorted(topics) == sorted(pool_topics("jobreco", pool_size))  # each exactly once
    for a, b in zip(topics, topics[1:], strict=False):  # consecutive days differ
        assert a != b
    # After a full cycle the pool starts over.
    assert topic_for("jobreco", pool_size, days[0] + dt.timedelta(days=pool_size)) == topics[0]


def test_rotation_is_continuous_across_year_end_and_leap_day():
    days = [dt.date(2027, 12, 26) + dt.timedelta(days=i) for i in range(14)]
    slots = [slot_for(day, 7) for day in days]
    assert all((b - a) % 7 == 1 for a, b in zip(slots, slots[1:], strict=False))
    leap = [dt.date(2028, 2, 28), dt.date(2028, 2, 29), dt.date(2028, 3, 1)]
    assert [(slot_for(d, 7) - slot_for(leap[0], 7)) % 7 for d in leap] == [0, 1, 2]


def test_pool_of_one_always_uses_the_same_topic():
    assert {topic_for("daily", 1, DAY + dt.timedelta(days=i)) for i in range(10)} == {"daily-0"}


def test_pool_topics_lists_every_slot_in_order():
    assert pool_topics("jobreco", 7) == [f"jobreco-{i}" for i in range(7)]
    assert len(pool_topics("p", MAX_TOPICS_PER_TOKEN)) == MAX_TOPICS_PER_TOKEN


def test_prefix_may_use_every_character_fcm_allows():
    prefix = "Job_reco.v2~%41-x"
    validate_pool(prefix, 7)
    assert topic_for(prefix, 7, DAY) == f"{prefix}-0"


# ------------------------------------------------------------------ refused prefixes


def test_empty_prefix_is_refused():
    with pytest.raises(BadInput, match="topic prefix must not be empty") as info:
        topic_for("", 7, DAY)
    assert info.value.exit_code is ExitCode.BAD_INPUT


@pytest.mark.parametrize("prefix", ["/topics/jobreco", "/topics/"])
def test_topics_path_prefix_is_refused(prefix):
    with pytest.raises(BadInput, match="give the bare name, without '/topics/'"):
        validate_pool(prefix, 7)


@pytest.mark.parametrize(
    "prefix", ["job reco", "job/reco", "jöb", "job:reco", "job\nreco", "job@reco", "job#1", "'job'"]
)
def test_prefix_with_characters_fcm_rejects_is_refused(prefix):
    with pytest.raises(BadInput, match=r"breaks FCM's topic-name rule \(1 to 900 characters") as e:
        validate_pool(prefix, 7)
    assert repr(prefix) in e.value.message  # the offending prefix is shown
    with pytest.raises(BadInput):
        pool_topics(prefix, 7)


@pytest.mark.parametrize(
    ("pool_size", "suffix"), [(7, "-6"), (10, "-9"), (11, "-10"), (2000, "-1999")]
)
def test_prefix_is_refused_when_the_longest_topic_passes_900_chars(pool_size, suffix):
    fits = "p" * (900 - len(suffix))
    validate_pool(fits, pool_size)  # the longest name, prefix + suffix, is exactly 900
    assert len(pool_topics(fits, pool_size)[-1]) == 900

    too_long = fits + "p"
    with pytest.raises(BadInput, match="1 to 900 characters"):
        validate_pool(too_long, pool_size)
    with pytest.raises(BadInput):
        topic_for(too_long, pool_size, DAY)  # even on a day whose own slot name would fit


# ------------------------------------------------------------------ refused pool sizes


@pytest.mark.parametrize("pool_size", [0, -1])
def test_pool_size_below_one_is_refused(pool_size):
    with pytest.raises(BadInput, match=f"at least 1, not {pool_size}"):
        topic_for("jobreco", pool_size, DAY)


def test_pool_size_over_fcm_topic_limit_is_refused():
    with pytest.raises(BadInput, match="pool size 2001 is over FCM's limit of 2000 topics"):
        topic_for("jobreco", MAX_TOPICS_PER_TOKEN + 1, DAY)
    with pytest.raises(BadInput):
        pool_topics("jobreco", MAX_TOPICS_PER_TOKEN + 1)


@pytest.mark.parametrize("pool_size", ["7", 7.0, None])
def test_pool_size_must_be_a_whole_number(pool_size):
    with pytest.raises(BadInput, match="must be a whole number"):
        validate_pool("jobreco", pool_size)


def test_pool_size_is_checked_before_the_prefix():
    # Both wrong: the message is about the pool size, which makes the prefix check possible.
    with pytest.raises(BadInput, match="pool size"):
        validate_pool("", 0)


# ------------------------------------------------------------------ the cost policy

NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.UTC)
REST = dt.timedelta(hours=6)
YESTERDAY = NOW - dt.timedelta(days=1)


def _choose(*candidates: Candidate, ordinal: str = "p-0") -> str:
    return choose_topic(candidates, ordinal_topic=ordinal, now=NOW, rest=REST).topic


def test_the_cheapest_resting_topic_wins_once_every_topic_was_used():
    assert (
        _choose(
            Candidate("p-0", 900, True, YESTERDAY),
            Candidate("p-1", 200, True, YESTERDAY),
            Candidate("p-2", 500, True, None),
        )
        == "p-1"
    )


def test_a_topic_published_within_the_rest_period_is_never_changed():
    fanning_out = NOW - REST + dt.timedelta(seconds=1)
    assert (
        _choose(
            Candidate("p-0", 900, True, YESTERDAY),
            Candidate("p-1", 0, True, fanning_out),
        )
        == "p-0"
    )
    rested = NOW - REST
    assert _choose(Candidate("p-0", 900, True, YESTERDAY), Candidate("p-1", 0, True, rested)) == (
        "p-1"
    )


def test_no_resting_topic_is_refused_naming_when_one_will_be():
    early = NOW - dt.timedelta(hours=2)
    with pytest.raises(NoRestingTopic, match=r"2026-11-22T10:00:00\+00:00") as caught:
        _choose(
            Candidate("p-0", 1, True, early),
            Candidate("p-1", 1, True, NOW - dt.timedelta(hours=1)),
        )
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_never_used_topics_are_filled_first_the_ordinal_one_before_others():
    used = Candidate("p-0", 10, True, YESTERDAY)
    assert _choose(used, Candidate("p-1", 1000, False, None), ordinal="p-0") == "p-1"
    assert (
        _choose(
            used,
            Candidate("p-1", 1000, False, None),
            Candidate("p-2", 1000, False, None),
            ordinal="p-2",
        )
        == "p-2"
    )


def test_a_near_tie_goes_to_the_ordinal_topic_and_a_clear_saving_does_not():
    assert _choose(Candidate("p-0", 1020, True, None), Candidate("p-1", 1000, True, None)) == "p-0"
    assert _choose(Candidate("p-0", 1021, True, None), Candidate("p-1", 1000, True, None)) == "p-1"


def test_the_cost_policy_meets_its_targets_on_every_series():
    """At most half the ordinal rule's operations on a 20% walk, never over 1.02x of them."""
    ratios = compare(size=1000, days=30, pool=7, seeds=[1])
    assert set(ratios) == set(SERIES)
    assert missed_targets(ratios) == []
    assert max(ratios["walk 20%"]) < 0.5
    assert min(ratios["weekly 5%"]) >= 0.99  # a weekly rhythm keeps the ordinal alignment


def test_the_settings_offer_exactly_the_pool_policies():
    assert tuple(PoolPolicy) == POOL_POLICIES
    assert PoolPolicy(DEFAULTS.pool_policy) is PoolPolicy.COST


def test_the_default_rest_lets_a_daily_run_reuse_yesterdays_topic():
    """Six hours: far longer than FCM fans out a large audience (10 million tokens at about
    10,000/s is 17 minutes), far shorter than the time between two daily runs."""
    assert DEFAULTS.rest_period == 6 * 3600
    a_day_later = Candidate("p-0", 0, True, NOW - dt.timedelta(hours=19))  # late publish
    assert is_resting(a_day_later, NOW, dt.timedelta(seconds=DEFAULTS.rest_period))


@pytest.mark.parametrize("seconds", [0, 45, 90 * 60, 6 * 3600, 86400 + 3600 + 60 + 1])
def test_durations_print_as_they_are_written(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(6 * 3600) == "6h" and format_duration(5400) == "1h30m"


def test_decide_topic_says_why():
    def why(*candidates: Candidate, ordinal: str = "p-0") -> tuple[str, Why]:
        chosen, reason = decide_topic(candidates, ordinal_topic=ordinal, now=NOW, rest=REST)
        return chosen.topic, reason

    assert why(Candidate("p-0", 5, True, None), Candidate("p-1", 5, False, None)) == (
        "p-1",
        Why.NEVER_USED,
    )
    assert why(Candidate("p-0", 5, True, None), Candidate("p-1", 9, True, None)) == (
        "p-0",
        Why.CHEAPEST,
    )
    assert why(Candidate("p-0", 1010, True, None), Candidate("p-1", 1000, True, None)) == (
        "p-0",
        Why.NEAR_TIE,
    )
    assert why(Candidate("p-0", 1000, True, None), Candidate("p-1", 1000, True, None)) == (
        "p-0",
        Why.CHEAPEST,
    )
