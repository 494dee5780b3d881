"""Answers of no documented shape, end to end through the real CLI: an exit code that says
what happened and a message, never a traceback (these used to exit 1 with IndexError,
ValueError, KeyError or AttributeError, or exit 0 having recorded a success nobody proved)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support import (
    DAY1,
    describe,
    latest_publish,
    make_tokens,
    publishes_to,
    run_args,
    run_cli,
    subscriptions,
    summary,
    topic,
    write_lines,
)

PREFIX = "evireco"
TOPIC = topic(PREFIX, 1, DAY1)
DAY2 = DAY1 + dt.timedelta(days=1)
AUDIENCE = make_tokens("e", range(30))


def _run(env, tmp_path, message_file, transport, day, audience):
    path = write_lines(tmp_path / f"audience-{day}.txt", audience)
    args = run_args(day, path, message_file, prefix=PREFIX, pool_size=1, transport=transport)
    return run_cli(*args, env=env)


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, describe(proc)
    for name in ("IndexError", "ValueError", "KeyError", "AttributeError"):
        assert name not in proc.stderr, describe(proc)


@pytest.mark.parametrize("transport", ["legacy-iid"])
@pytest.mark.parametrize("shape", ["long-results", "short-results", "no-results"])
def test_a_legacy_removal_answer_not_one_per_token_withholds_instead_of_crashing(
    env, emulator, tmp_path, message_file, transport, shape
):
    day1 = _run(env, tmp_path, message_file, transport, DAY1, AUDIENCE)
    assert day1.returncode == 0, describe(day1)
    emulator.inject_answer(shape, kinds=["batchRemove"])

    day2 = _run(env, tmp_path, message_file, transport, DAY2, AUDIENCE[:20])

    assert day2.returncode == 4, describe(day2)  # withheld: 10 removals unconfirmed
    _no_traceback(day2)
    assert "may still be subscribed" in day2.stderr
    assert len(publishes_to(emulator, TOPIC)) == 1
    emulator.clear_faults()
    again = _run(env, tmp_path, message_file, transport, DAY2, AUDIENCE[:20])
    assert again.returncode == 0, describe(again)
    assert latest_publish(emulator, TOPIC).recipients == set(AUDIENCE[:20])


@pytest.mark.parametrize("transport", ["legacy-iid"])
def test_a_legacy_200_without_results_leaves_the_additions_owed(
    env, emulator, engine, tmp_path, message_file, transport
):
    emulator.inject_answer("no-results", kinds=["batchAdd"])

    day1 = _run(env, tmp_path, message_file, transport, DAY1, AUDIENCE)

    _no_traceback(day1)
    assert day1.returncode == 12, describe(day1)  # published; the additions owed: exit 12
    result = summary(day1)
    assert result["owed_subscriptions"] == 30 and result["added"] == 0
    assert result["failed"] == {"no-verdict": 30}
    assert set(subscriptions(engine, TOPIC).values()) == {"pending_subscribe"}


@pytest.mark.parametrize("shape", ["no-name", "null-name", "json-list", "html", "redirect"])
def test_an_odd_publish_answer_exits_4_and_says_what_came(
    env, emulator, tmp_path, message_file, transport, shape
):
    # The day's first send is the validation (validate_only); the trap arms the odd answer
    # for the real one, which FCM takes.
    def arm() -> None:
        emulator.inject_answer(shape, kinds=["send"], count=1, served=True)

    emulator.add_trap("send", 1, arm, after=True)

    day1 = _run(env, tmp_path, message_file, transport, DAY1, AUDIENCE)

    assert day1.returncode == 4, describe(day1)
    _no_traceback(day1)
    assert "FCM's answer proves nothing about the message" in day1.stderr
    assert "--republish" in day1.stderr
    again = _run(env, tmp_path, message_file, transport, DAY1, AUDIENCE)
    assert again.returncode == 4, describe(again)  # the rerun does not guess
    assert len(publishes_to(emulator, TOPIC)) == 1
