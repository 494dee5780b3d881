"""The cost policy through the engine: real PostgreSQL, the emulator, the default transport
(a month of churn on every transport).

A date's topic is the resting pool topic whose members are closest to its audience (after
the never-used ones are filled), chosen once in the plan's transaction and recorded; a
rerun of the date lands on it whatever the costs say by then. The tests run a month of
dates in seconds, so each day's publishes are made a day older before the next day runs
(support.a_day_passes): the rest period is judged on the database's clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.support import (
    DAY,
    PREFIX,
    a_day_passes,
    execute,
    last_recipients,
    opts,
    record_planned_day,
    run_row,
    snapshot,
    toks,
)
from topic_sync import store
from topic_sync.app.commands import Scope, repair_topics
from topic_sync.app.services import Io
from topic_sync.config.resolve import Resolved, Source
from topic_sync.config.table import DEFAULTS
from topic_sync.engine.run import run_day
from topic_sync.errors import (
    AudienceNeverCame,
    BadInput,
    CredentialsError,
    ExitCode,
    PublishWithheld,
)
from topic_sync.pool import NoRestingTopic, PoolPolicy, Why, pool_topics, topic_for
from topic_sync.states import SubscriptionStatus

COST = PoolPolicy.COST


def cost_opts(tmp_path, message_file, tokens, day=DAY, **kw):
    """A live run under the cost policy (audiences here change wholesale: no churn guard)."""
    return opts(tmp_path, message_file, tokens, day, pool_policy=COST, allow_large_churn=True, **kw)


def walk(days: int, size: int, churn: float, seed: int = 5) -> list[list[str]]:
    """A drifting audience: each day `churn` of it is replaced from a pool five times its size."""
    rng = random.Random(seed)
    population = toks(0, 5 * size)
    today = set(rng.sample(population, size))
    out = []
    for _ in range(days):
        out.append(sorted(today))
        leaving = set(rng.sample(sorted(today), int(churn * size)))
        joining = set(rng.sample(sorted(set(population) - today), len(leaving)))
        today = (today - leaving) | joining
    return out


@pytest.mark.every_transport
def test_a_month_of_churn_reuses_the_cheapest_topic_and_reaches_exactly_each_audience(
    tmp_path, message_file, deps, emulator
) -> None:
    pool = 3
    audiences = walk(days=8, size=400, churn=0.2)
    ordinal_operations = cost_operations = 0
    members: dict[str, set[str]] = {}  # what the ordinal rule's topics would hold
    topics = []
    for n, audience in enumerate(audiences):
        day = DAY + dt.timedelta(days=n)
        result = run_day(cost_opts(tmp_path, message_file, audience, day, pool_size=pool), deps)
        topic = result.topic
        topics.append(topic)
        # Exactly the day's audience got the day's message; the topic holds exactly it.
        assert result.status == "published"
        assert last_recipients(emulator, topic) == frozenset(audience)
        assert emulator.members(topic) == set(audience)
        assert run_row(deps.engine, PREFIX, day)["topic"] == topic  # recorded
        # The cost the choice computed in SQL is what the diff then did.
        chosen = result.choice.chosen_cost()
        assert chosen.operations == result.plan.to_add + result.plan.to_remove
        assert (chosen.to_add, chosen.to_remove) == (result.plan.to_add, result.plan.to_remove)
        cost_operations += chosen.operations
        ordinal = topic_for(PREFIX, pool, day)
        ordinal_operations += len(set(audience) ^ members.get(ordinal, set()))
        members[ordinal] = set(audience)
        if n < pool:  # the pool's never-used topics first, in the ordinal rule's order
            assert (topic, result.choice.why) == (ordinal, Why.NEVER_USED)
        else:  # then yesterday's topic: a day's churn away, the closest
            assert (topic, result.choice.why) == (topics[n - 1], Why.CHEAPEST)
            assert chosen.operations == 2 * int(0.2 * 400)
        a_day_passes(deps.engine)
    assert len(emulator.publishes) == len(audiences)
    # The ordinal rule would have synced each date's topic from three days back.
    assert cost_operations < 0.7 * ordinal_operations


def test_a_topic_within_its_rest_period_is_never_changed(
    tmp_path, message_file, deps, emulator
) -> None:
    pool = 2
    first = run_day(cost_opts(tmp_path, message_file, toks(0, 30), pool_size=pool), deps)
    day2 = DAY + dt.timedelta(days=1)
    second = run_day(cost_opts(tmp_path, message_file, toks(30, 60), day2, pool_size=pool), deps)
    # Day 1's message went out a day ago; day 2's just now: FCM may be fanning it out.
    execute(
        deps.engine,
        "UPDATE runs SET published_at = published_at - interval '1 day' WHERE topic = :t",
        t=first.topic,
    )
    fanning_out = emulator.members(second.topic)
    # Day 3's audience is day 2's: its topic would cost nothing, and still is not touched.
    day3 = DAY + dt.timedelta(days=2)
    third = run_day(cost_opts(tmp_path, message_file, toks(30, 60), day3, pool_size=pool), deps)
    assert third.topic == first.topic != second.topic
    assert third.choice.why is Why.CHEAPEST
    resting = {t["topic"]: t["resting"] for t in third.choice.summary()["topics"]}
    assert resting == {first.topic: True, second.topic: False}
    assert emulator.members(second.topic) == fanning_out
    assert last_recipients(emulator, third.topic) == frozenset(toks(30, 60))
    # Day 4 at once: both topics had a message within the rest period. Refused, naming
    # when the first may change; nothing changed.
    before, members = (
        snapshot(deps.engine),
        {t: emulator.members(t) for t in pool_topics(PREFIX, 2)},
    )
    day4 = DAY + dt.timedelta(days=3)
    with pytest.raises(NoRestingTopic, match="rest period") as refused:
        run_day(cost_opts(tmp_path, message_file, toks(30, 60), day4, pool_size=pool), deps)
    assert refused.value.exit_code is ExitCode.BAD_INPUT
    assert snapshot(deps.engine) == before
    assert {t: emulator.members(t) for t in pool_topics(PREFIX, 2)} == members
    assert len(emulator.publishes) == 3


def test_never_used_topics_are_filled_first_the_ordinal_one_before_the_others(
    tmp_path, message_file, deps, emulator
) -> None:
    pool = 3
    audience = toks(0, 20)
    picked = []
    # The same audience every time: a used topic would cost nothing, an unused one 20.
    for offset in (0, 1, 3):  # the third date's ordinal topic is the first date's, used
        day = DAY + dt.timedelta(days=offset)
        result = run_day(cost_opts(tmp_path, message_file, audience, day, pool_size=pool), deps)
        assert result.choice.why is Why.NEVER_USED and result.plan.to_add == 20
        picked.append(result.topic)
        a_day_passes(deps.engine)
    first, second = (topic_for(PREFIX, pool, DAY + dt.timedelta(days=n)) for n in (0, 1))
    unused = next(t for t in pool_topics(PREFIX, pool) if t not in (first, second))
    assert picked == [first, second, unused]
    # Every topic used: the cheapest now, an unchanged audience costing nothing.
    day = DAY + dt.timedelta(days=4)
    result = run_day(cost_opts(tmp_path, message_file, audience, day, pool_size=pool), deps)
    assert result.choice.why is Why.CHEAPEST and result.plan.to_add + result.plan.to_remove == 0
    assert last_recipients(emulator, result.topic) == frozenset(audience)


def test_a_rerun_of_a_date_lands_on_its_recorded_topic_even_when_the_costs_changed(
    tmp_path, message_file, deps, emulator
) -> None:
    pool = 2
    day1, day2, day3 = (DAY + dt.timedelta(days=n) for n in range(3))
    one = run_day(cost_opts(tmp_path, message_file, toks(0, 40), day1, pool_size=pool), deps)
    a_day_passes(deps.engine)
    two = run_day(cost_opts(tmp_path, message_file, toks(100, 140), day2, pool_size=pool), deps)
    a_day_passes(deps.engine)
    # Day 3 is close to day 2: day 2's topic. A removal FCM keeps failing withholds it.
    leaving = toks(100, 140)[0]
    emulator.inject_token_error(leaving, "INTERNAL", op="unsubscribe")
    with pytest.raises(PublishWithheld):
        run_day(cost_opts(tmp_path, message_file, toks(101, 141), day3, pool_size=pool), deps)
    assert run_row(deps.engine, PREFIX, day3)["topic"] == two.topic
    emulator.clear_faults()
    # The rerun's audience is day 1's: day 1's topic would now cost nothing. The date was
    # planned on day 2's topic, and stays there; the dry run says so too.
    rerun = cost_opts(tmp_path, message_file, toks(0, 40), day3, pool_size=pool)
    looked = run_day(dataclasses.replace(rerun, live=False), deps)
    costs = {c.topic: c.operations for c in looked.choice.costs}
    assert costs[one.topic] == 0 < costs[two.topic]
    assert (looked.topic, looked.choice.why) == (two.topic, Why.RECORDED)
    done = run_day(rerun, deps)
    assert (done.topic, done.choice.why) == (two.topic, Why.RECORDED)
    assert last_recipients(emulator, two.topic) == frozenset(toks(0, 40))
    assert emulator.members(two.topic) == set(toks(0, 40))
    assert emulator.members(one.topic) == set(toks(0, 40))  # untouched, day 1's members
    assert [p.topic for p in emulator.publishes] == [one.topic, two.topic, two.topic]


def test_a_day_whose_audience_never_came_keeps_the_topic_it_had_planned_and_no_other(
    tmp_path, message_file, deps, emulator
) -> None:
    never = {"wait_for": tmp_path / "never" / "_SUCCESS", "wait_timeout": 0}
    with pytest.raises(AudienceNeverCame):
        run_day(cost_opts(tmp_path, message_file, toks(0, 10), pool_size=1, **never), deps)
    assert run_row(deps.engine, PREFIX, DAY)["topic"] == ""  # nothing chosen: report shows -
    first = run_day(cost_opts(tmp_path, message_file, toks(0, 10), pool_size=1), deps)
    assert (first.topic, first.choice.why) == (f"{PREFIX}-0", Why.NEVER_USED)
    a_day_passes(deps.engine)
    # The next date plans and fails (FCM refuses the credentials), then its rerun's audience
    # never comes: the row says no_audience and keeps the planned topic, the next rerun's.
    day2 = DAY + dt.timedelta(days=1)
    emulator.inject_token_error(toks(10, 11)[0], "UNAUTHENTICATED", op="subscribe")
    with pytest.raises(CredentialsError):
        run_day(cost_opts(tmp_path, message_file, toks(1, 11), day2, pool_size=1), deps)
    assert run_row(deps.engine, PREFIX, day2)["status"] == "failed"
    emulator.clear_faults()
    with pytest.raises(AudienceNeverCame):
        run_day(cost_opts(tmp_path, message_file, toks(1, 11), day2, pool_size=1, **never), deps)
    row = run_row(deps.engine, PREFIX, day2)
    assert (row["status"], row["topic"]) == ("no_audience", first.topic)
    done = run_day(cost_opts(tmp_path, message_file, toks(1, 11), day2, pool_size=1), deps)
    assert (done.topic, done.choice.why, done.status) == (first.topic, Why.RECORDED, "published")
    assert last_recipients(emulator, first.topic) == frozenset(toks(1, 11))


def test_a_dry_run_shows_its_choice_and_records_nothing(
    tmp_path, message_file, deps, emulator
) -> None:
    pool = 2
    run_day(cost_opts(tmp_path, message_file, toks(0, 30), pool_size=pool), deps)
    a_day_passes(deps.engine)
    before, calls = snapshot(deps.engine), dict(emulator.stats)
    day2 = DAY + dt.timedelta(days=1)
    dry = cost_opts(tmp_path, message_file, toks(10, 40), day2, pool_size=pool, live=False)
    result = run_day(dry, deps)
    assert result.status == "dry-run"
    choice = result.summary()["choice"]
    assert choice["policy"] == "cost" and choice["why"] == "never used"
    assert choice["topic"] == topic_for(PREFIX, pool, day2)
    shown = {
        t["topic"]: (t["to_add"], t["to_remove"], t["used"], t["resting"]) for t in choice["topics"]
    }
    assert shown == {
        topic_for(PREFIX, pool, DAY): (10, 10, True, True),
        topic_for(PREFIX, pool, day2): (30, 0, False, True),
    }
    assert "never used yet (30 operations)" in choice["reason"]
    assert snapshot(deps.engine) == before  # no run row, no token, no subscription
    assert {k: v for k, v in emulator.stats.items() if k[0] != "send"} == {
        k: v for k, v in calls.items() if k[0] != "send"
    }
    assert len(emulator.publishes) == 1


def test_reconcile_of_a_date_covers_the_topic_its_run_recorded(
    tmp_path, message_file, deps
) -> None:
    day2 = DAY + dt.timedelta(days=1)
    chosen = f"{PREFIX}-2"
    assert chosen != topic_for(PREFIX, 3, DAY)
    record_planned_day(deps.engine, PREFIX, 3, DAY, chosen)

    def resolved(day):
        settings_ = DEFAULTS.replace(topic_prefix=PREFIX)
        return Resolved(settings_, {"topic_prefix": Source.FLAG}, day=day)

    io = Io(log=lambda _line: None, environ={})
    assert repair_topics(deps.engine, resolved(DAY), Scope(), io) == (chosen,)
    with pytest.raises(BadInput, match="no run of that date that chose a topic"):
        repair_topics(deps.engine, resolved(day2), Scope(), io)


# --- the cost query is the diff ------------------------------------------------------------------

STATUSES = [None, *SubscriptionStatus]  # None: no row
TOPICS = [f"{PREFIX}-{slot}" for slot in range(3)]


def test_each_topics_cost_is_what_its_diff_then_queues(engine) -> None:
    """Whatever the rows say (members, owed work, confirmed removals) and whatever the audience
    holds (dead and forgotten tokens too), pool_costs counts what plan_topic then queues."""
    tokens = [f"tok:{i:03d}" for i in range(12)]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        rows=st.lists(
            st.lists(st.sampled_from(STATUSES), min_size=3, max_size=3), min_size=12, max_size=12
        ),
        audience=st.lists(st.sampled_from(tokens), max_size=12),
        dead=st.sets(st.sampled_from(tokens), max_size=3),
        forgotten=st.sets(st.sampled_from(tokens), max_size=3),
    )
    def check(rows, audience, dead, forgotten) -> None:
        with engine.connect() as conn:
            try:
                for token, statuses in zip(tokens, rows, strict=True):
                    token_id = conn.scalar(
                        text(
                            "INSERT INTO tokens (token, invalid_at, forgotten_at) "
                            "VALUES (:t, CASE WHEN :d THEN now() END, CASE WHEN :f THEN now() END) "
                            "RETURNING id"
                        ),
                        {"t": token, "d": token in dead, "f": token in forgotten},
                    )
                    for topic, status in zip(TOPICS, statuses, strict=True):
                        if status is not None:
                            conn.execute(
                                text(
                                    "INSERT INTO subscriptions (topic, token_id, status) "
                                    "VALUES (:topic, :id, :status)"
                                ),
                                {"topic": topic, "id": token_id, "status": status},
                            )
                lines = store.load_audience(conn, iter(audience))
                staged = store.stage_audience(conn, lines)
                costs = store.pool_costs(conn, TOPICS)
                assert [c.topic for c in costs] == TOPICS
                for cost in costs:
                    with conn.begin_nested() as planning:
                        plan = store.plan_topic(conn, cost.topic, None, lines, staged=staged)
                        planning.rollback()
                    assert (cost.to_add, cost.to_remove) == (plan.to_add, plan.to_remove)
            finally:
                conn.rollback()

    check()
