"""The sync engine against a model of FCM, driven by hypothesis.

Random audiences over several days, random per-token answers from the error table, random
whole-request failures (some of them after FCM did the work), strange answers (a proxy's HTML,
an empty body, a JSON error on a 200, a redirect, a cut body, a legacy `results` list one short
or one long...; some of them after FCM did the work), and crashes before or after FCM served a
call, the publish included. After each finished day the model's membership of the day's topic
is exactly the day's valid audience, the day was published once to exactly those tokens, and
the database agrees with the model. PostgreSQL is real; FCM is the model below, which answers
as FCM does (a dead token is dead for every topic and every call) and on the wire: each answer
is an HTTP status and body, in the shapes the emulator uses, read by the same functions the
transports use (v1: fcm.answers.read_topic_answer; legacy: fcm.legacy_iid.legacy_result).
It runs under both pool policies: under the cost policy a crashed day's rerun must land on
the topic it recorded, whatever the costs say by then.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from tests.fakes import ODD, Crash, ModelFcm, TokenFault
from tests.support import DatabasePool, a_day_passes, run_options, write_audience
from topic_sync.emulator.shapes import FOR_BATCHES, FOR_EVERY_KIND
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.run import run_day
from topic_sync.engine.types import Deps
from topic_sync.errors import PublishWithheld
from topic_sync.fcm.error_table import Outcome, all_reasons, classify
from topic_sync.pool import PoolPolicy, topic_for
from topic_sync.store import db

TOKENS = [f"m:{i:02d}" for i in range(12)]
PREFIX = "model"
POOL = 2
DAY0 = dt.date(2026, 11, 1)
STOP = {r for r in all_reasons() if classify(r).subscribe is Outcome.STOP}
REASONS = sorted(set(all_reasons()) - STOP) + ["SOMETHING_NEW"]
WHOLE_REASONS = ["NOT_FOUND", "INVALID_ARGUMENT", "INTERNAL", "UNAVAILABLE", "RESOURCE_EXHAUSTED"]
# Strange answers: per request on v1, per batch on the legacy API (see emulator/shapes.py).
ODD_V1 = list(FOR_EVERY_KIND)
ODD_LEGACY = [*FOR_EVERY_KIND, *FOR_BATCHES]


# At most one fault per token and operation, each failing at most twice: with two whole-
# request failures (or strange batch answers) that is at most four failed attempts, within
# max_retries. On v1 a token's fault may be a strange answer to its own request.
def token_faults(transport: str) -> st.SearchStrategy[dict[tuple[str, str], tuple]]:
    odd = [ODD + shape for shape in ODD_V1] if transport == "v1" else []
    return st.dictionaries(
        st.tuples(st.sampled_from(TOKENS), st.sampled_from(["subscribe", "unsubscribe"])),
        st.tuples(st.sampled_from(REASONS + odd), st.integers(1, 2), st.booleans()),
        max_size=4,
    )


def batch_faults(transport: str) -> st.SearchStrategy[list[tuple[str, bool]]]:
    odd = [ODD + shape for shape in (ODD_V1 if transport == "v1" else ODD_LEGACY)]
    return st.lists(st.tuples(st.sampled_from(WHOLE_REASONS + odd), st.booleans()), max_size=2)


crashes = st.none() | st.tuples(st.integers(1, 10), st.booleans())


@pytest.mark.parametrize("policy", list(PoolPolicy))
def test_engine_against_a_model_of_fcm(
    database_pool: DatabasePool, message_file: Path, tmp_path: Path, policy: PoolPolicy
):
    class Days(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.database, url = database_pool.take()  # a fresh one per example
            self.engine = db.make_engine(url)
            self.fcm = ModelFcm()
            self.deps = Deps(
                engine=self.engine,
                client=self.fcm,
                sleep=lambda _s: None,
                now=lambda: dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC),
            )
            self.day = DAY0

        def teardown(self) -> None:
            self.engine.dispose()
            database_pool.give_back(self.database)

        @rule(
            audience=st.sets(st.sampled_from(TOKENS), min_size=1),
            transport=st.sampled_from(["v1", "legacy-iid"]),
            crash=crashes,
            data=st.data(),
        )
        def a_day(self, audience, transport, crash, data) -> None:
            faults = data.draw(token_faults(transport), label="token faults")
            whole = data.draw(batch_faults(transport), label="batch faults")
            fcm = self.fcm
            fcm.transport = transport
            fcm.token_faults = {}
            for (token, op), (reason, times, applied) in faults.items():
                fcm.token_faults.setdefault(token, []).append(
                    TokenFault(op, reason, times, applied)
                )
            fcm.batch_faults = list(whole)
            fcm.calls, fcm.refused_today = 0, set()
            fcm.crash_at = crash
            self.day += dt.timedelta(days=1)
            a_day_passes(self.engine)  # yesterday's topic has rested
            path = write_audience(tmp_path / f"{self.day}-{uuid.uuid4().hex[:6]}.txt", audience)
            options = run_options(
                day=self.day,
                prefix=PREFIX,
                pool_size=POOL,
                audience_path=path,
                message_path=message_file,
                live=True,
                allow_large_churn=True,
                propagation_delay=0,
                retry=RetryPolicy(min_wait=0, max_wait=0, max_retries=4),
                batch_size=3,
                concurrency=1,
                pool_policy=policy,
            )
            before = len(fcm.publishes)
            for _attempt in range(6):
                try:
                    result = run_day(options, self.deps)
                except Crash:
                    continue  # the process died: the operator (or cron) runs the day again
                except PublishWithheld as withheld:
                    if "--mark-published" in withheld.message:
                        went_out = len(fcm.publishes) > before
                        flag = "mark_published" if went_out else "republish"
                        options = dataclasses.replace(options, **{flag: True})
                    else:  # removals unconfirmed: FCM recovers, the day is run again
                        fcm.token_faults, fcm.batch_faults = {}, []
                    continue
                assert result.status in ("published", "already-published")
                break
            else:
                raise AssertionError(f"{self.day} did not finish")
            topic = result.topic
            if policy is PoolPolicy.ORDINAL:
                assert topic == topic_for(PREFIX, POOL, self.day)

            expected = set(audience) - fcm.dead - fcm.refused_today
            assert fcm.members.get(topic, set()) == expected
            sent = [p for p in fcm.publishes[before:] if p[0] == topic]
            assert len(sent) == 1, f"{len(sent)} publishes for {self.day}"
            assert sent[0][1] == expected
            assert self.day.isoformat() in sent[0][2]

        @invariant()
        def the_database_agrees_with_the_model(self) -> None:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT s.topic, t.token, s.status, t.invalid_at IS NOT NULL "
                        "FROM subscriptions s JOIN tokens t ON t.id = s.token_id"
                    )
                ).all()
            subscribed: dict[str, set[str]] = {}
            for topic, token, status, invalid in rows:
                assert not status.startswith("pending"), (topic, token, status)
                if status == "subscribed":
                    subscribed.setdefault(topic, set()).add(token)
                if invalid:
                    assert token in self.fcm.dead  # marked dead only on FCM's word
            for topic in {*subscribed, *self.fcm.members}:
                held = self.fcm.members.get(topic, set())
                known = subscribed.get(topic, set())
                # Every member FCM holds is in the table (the only record of a topic's
                # members): otherwise it could never be removed.
                assert held <= known, (topic, held - known)
                # What the table holds beyond FCM is only what FCM dropped on its own.
                assert known - held <= self.fcm.dead, (topic, known - held)

    run_state_machine_as_test(
        Days,
        settings=settings(
            max_examples=25,
            stateful_step_count=5,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
