"""The retry policy: exponential backoff, its cap, Retry-After, jitter and its settings."""

from __future__ import annotations

import dataclasses
import math

import pytest

from topic_sync.app.commands import retry_policy
from topic_sync.config.table import DEFAULTS
from topic_sync.engine.retry import RetryPolicy

DEFAULT = retry_policy(DEFAULTS)  # the policy a command builds from the default settings


def policy_of(**changes: object) -> RetryPolicy:
    """The default policy with some fields changed (checked as any policy is)."""
    return dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]


def test_defaults_follow_fcm_guidance():
    policy = DEFAULT
    assert (policy.min_wait, policy.max_wait, policy.max_retries) == (60.0, 3600.0, 4)
    assert (DEFAULTS.retry_min_wait, DEFAULTS.retry_max_wait, DEFAULTS.max_retries) == (
        60.0,
        3600.0,
        4,
    )
    assert policy.jitter is True


def test_policy_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.min_wait = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------ exponential growth


def test_waits_double_from_min_to_max_then_stay_there():
    policy = policy_of(min_wait=60, max_wait=3600, jitter=False)
    waits = [policy.wait(n) for n in range(1, 10)]
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_small_settings_grow_the_same_way():
    policy = policy_of(min_wait=0.5, max_wait=3, jitter=False)
    assert [policy.wait(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_first_retry_waits_min_wait():
    assert policy_of(min_wait=7, max_wait=100, jitter=False).wait(1) == 7


@pytest.mark.parametrize("retry_number", [50, 1_000, 10**6])
def test_huge_retry_numbers_stay_capped(retry_number):
    policy = policy_of(min_wait=60, max_wait=3600, jitter=False)
    assert policy.wait(retry_number) == 3600


def test_equal_min_and_max_is_a_constant_wait():
    policy = policy_of(min_wait=30, max_wait=30, jitter=False)
    assert {policy.wait(n) for n in range(1, 8)} == {30}


@pytest.mark.parametrize("retry_number", [0, -1])
def test_no_wait_before_the_first_attempt(retry_number):
    assert policy_of().wait(retry_number) == 0.0


# ------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("retry_number", [1, 2, 5, 12])
@pytest.mark.parametrize("retry_after", [0.0, 1.0, 59.0, 61.0, 500.0, 3599.0, 3600.0, 7200.0])
def test_retry_after_is_never_cut_short(jitter, retry_number, retry_after):
    policy = policy_of(min_wait=60, max_wait=3600, jitter=jitter)
    wait = policy.wait(retry_number, retry_after)
    assert wait >= retry_after
    assert wait >= min(60 * 2 ** (retry_number - 1), 3600)  # and backoff is not cut either


def test_retry_after_beyond_max_wait_is_honoured_in_full():
    policy = policy_of(min_wait=1, max_wait=10, jitter=False)
    assert policy.wait(1, retry_after=7200.0) == 7200.0


def test_retry_after_shorter_than_backoff_does_not_shorten_it():
    policy = policy_of(min_wait=60, max_wait=3600, jitter=False)
    assert policy.wait(3, retry_after=5.0) == 240
    assert policy.wait(1, retry_after=None) == 60


def test_retry_after_applies_even_with_zero_waits():
    policy = policy_of(min_wait=0, max_wait=0)
    assert policy.wait(1, retry_after=7.0) == 7.0


# ------------------------------------------------------------------ zero waits (tests)


@pytest.mark.parametrize("jitter", [False, True])
def test_zero_waits_are_possible(jitter):
    policy = policy_of(min_wait=0, max_wait=0, max_retries=3, jitter=jitter)
    assert [policy.wait(n) for n in range(1, 20)] == [0.0] * 19


def test_zero_min_wait_means_zero_even_with_a_max():
    # multiplier 0: exponential growth of nothing is nothing
    assert [policy_of(min_wait=0, max_wait=60).wait(n) for n in range(1, 5)] == [0.0] * 4


def test_zero_retries_is_allowed():
    assert policy_of(max_retries=0).max_retries == 0


# ------------------------------------------------------------------ invalid settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_wait": -1}, "0 <= min-wait <= max-wait"),
        ({"min_wait": -0.001, "max_wait": 10}, "0 <= min-wait <= max-wait"),
        ({"min_wait": 60, "max_wait": 30}, "0 <= min-wait <= max-wait"),
        ({"max_wait": 59.9}, "0 <= min-wait <= max-wait"),
        ({"max_retries": -1}, "max retries must be 0 or more"),
    ],
)
def test_invalid_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        policy_of(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_wait": math.nan},
        {"max_wait": math.nan},
        {"min_wait": math.nan, "max_wait": math.nan},
        {"max_wait": math.inf},
        {"min_wait": math.inf, "max_wait": math.inf},
    ],
)
def test_non_finite_waits_raise(kwargs):
    # NaN slips through every comparison; time.sleep refuses both NaN and inf mid-run.
    with pytest.raises(ValueError, match="finite"):
        policy_of(**kwargs)


# ------------------------------------------------------------------ jitter


def _base(policy: RetryPolicy, retry_number: int) -> float:
    return min(policy.min_wait * 2 ** (retry_number - 1), policy.max_wait)


@pytest.mark.parametrize("retry_number", [1, 2, 3, 6, 7, 20])
def test_jitter_is_bounded_by_a_tenth_of_min_wait(retry_number):
    policy = policy_of(min_wait=60, max_wait=3600)
    base = _base(policy, retry_number)
    for _ in range(300):
        wait = policy.wait(retry_number)
        assert base <= wait <= base + 6.0
        assert wait <= 3600 + 6.0  # jitter rides on top of the cap


@pytest.mark.parametrize(("random_value", "extra"), [(0.0, 0.0), (0.5, 3.0), (0.999999, 6.0)])
def test_jitter_extremes(mocker, random_value, extra):
    mocker.patch("random.random", return_value=random_value)
    policy = policy_of(min_wait=60, max_wait=3600)
    assert policy.wait(1) == pytest.approx(60 + extra, abs=1e-4)
    assert policy.wait(3) == pytest.approx(240 + extra, abs=1e-4)
    # The exponential part is capped; the jitter stays, so workers at the cap spread out.
    assert policy.wait(7) == pytest.approx(3600 + extra, abs=1e-4)


def test_jitter_actually_varies():
    policy = policy_of(min_wait=60, max_wait=3600)
    assert len({policy.wait(2) for _ in range(50)}) > 1


def test_no_jitter_is_deterministic():
    policy = policy_of(min_wait=60, max_wait=3600, jitter=False)
    assert {policy.wait(2) for _ in range(50)} == {120}


# ------------------------------------------------------------------ retrying one request


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


def _run(policy: RetryPolicy, outcomes: list, sleeps: list[float]):
    """Run one call under policy.retrying; each attempt takes the next outcome."""
    calls = iter(outcomes)
    attempts = 0
    for attempt in policy.retrying(
        retryable=lambda e: isinstance(e, Flaky),
        sleep=sleeps.append,
        retry_after=lambda e: getattr(e, "retry_after", None),
    ):
        with attempt:
            attempts += 1
            outcome = next(calls)
            if isinstance(outcome, BaseException):
                raise outcome
            result = outcome
    return result, attempts


def test_retrying_waits_the_policy_between_attempts():
    policy = policy_of(min_wait=60, max_wait=3600, max_retries=4, jitter=False)
    sleeps: list[float] = []

    result, attempts = _run(policy, [Flaky(), Flaky(), Flaky(), "id-1"], sleeps)

    assert (result, attempts) == ("id-1", 4)
    assert sleeps == [policy.wait(1), policy.wait(2), policy.wait(3)] == [60, 120, 240]


def test_retrying_gives_up_after_max_retries_and_reraises():
    policy = policy_of(min_wait=1, max_wait=10, max_retries=2, jitter=False)
    sleeps: list[float] = []
    last = Flaky()

    with pytest.raises(Flaky) as info:
        _run(policy, [Flaky(), Flaky(), last, "never"], sleeps)

    assert info.value is last  # the real error, not tenacity's RetryError
    assert sleeps == [1, 2]  # max_retries=2: three attempts, two waits


def test_retrying_with_zero_retries_tries_once():
    sleeps: list[float] = []
    with pytest.raises(Flaky):
        _run(policy_of(max_retries=0), [Flaky(), "never"], sleeps)
    assert sleeps == []


def test_retrying_does_not_retry_other_errors():
    sleeps: list[float] = []
    with pytest.raises(KeyError):
        _run(policy_of(min_wait=0, max_wait=0), [KeyError("x"), "never"], sleeps)
    assert sleeps == []


def test_retrying_honours_retry_after_of_the_last_error():
    policy = policy_of(min_wait=60, max_wait=3600, jitter=False)
    sleeps: list[float] = []

    _run(policy, [Flaky(retry_after=300), Flaky(retry_after=5), Flaky(), "ok"], sleeps)

    assert sleeps == [300, 120, 240]


def test_retrying_with_zero_waits_sleeps_zero():
    sleeps: list[float] = []
    result, attempts = _run(policy_of(min_wait=0, max_wait=0), [Flaky(), "ok"], sleeps)
    assert (result, attempts, sleeps) == ("ok", 2, [0.0])
