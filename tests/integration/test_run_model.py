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
transports use (v1: fcm.answers.read_topic_answer; legacy: fcm.client.legacy_result).
It runs under both pool policies: under the cost policy a crashed day's rerun must land on
the topic it recorded, whatever the costs say by then.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from tests.support import a_day_passes, run_options, write_audience
from topic_sync.emulator.replies import Reply, error_reply, reason_reply
from topic_sync.emulator.shapes import FOR_BATCHES, FOR_EVERY_KIND, Request, build
from topic_sync.engine.drain import Deps
from topic_sync.engine.retry import RetryPolicy
from topic_sync.engine.run import run_day
from topic_sync.errors import PublishWithheld
from topic_sync.fcm.answers import RawAnswer, read_topic_answer
from topic_sync.fcm.client import BatchResult, legacy_result
from topic_sync.fcm.error_table import Outcome, all_reasons, classify
from topic_sync.fcm.sdk_bridge import topic_error_code
from topic_sync.fcm.target import FcmTarget
from topic_sync.pool import PoolPolicy, topic_for
from topic_sync.store import db

TOKENS = [f"m:{i:02d}" for i in range(12)]
PREFIX = "model"
POOL = 2
DAY0 = dt.date(2026, 11, 1)
STOP = {r for r in all_reasons() if classify(r).subscribe is Outcome.STOP}
REASONS = sorted(set(all_reasons()) - STOP) + ["SOMETHING_NEW"]
DEAD_REASONS = {r for r in REASONS if classify(r).marks_invalid}
WHOLE_REASONS = ["NOT_FOUND", "INVALID_ARGUMENT", "INTERNAL", "UNAVAILABLE", "RESOURCE_EXHAUSTED"]
# Strange answers: per request on v1, per batch on the legacy API (see emulator/shapes.py).
ODD_V1 = list(FOR_EVERY_KIND)
ODD_LEGACY = [*FOR_EVERY_KIND, *FOR_BATCHES]
ODD = "odd:"  # a fault whose "reason" is ODD + shape answers with that strange shape


class Crash(BaseException):
    """The process died: nothing after this point of the run happens."""


@dataclass
class TokenFault:
    op: str
    reason: str  # a raw reason, or ODD + a shape
    times: int
    applied: bool  # FCM did the work but answered the error (a retryable answer only)


def _raw(reply: Reply) -> RawAnswer:
    """An answer as a client reads it: a cut one has no body."""
    location = dict(reply.headers).get("Location")
    return RawAnswer(reply.status, reply.body if reply.cut is None else None, location)


def _odd(shape: str, kind: str, tokens: int) -> RawAnswer:
    return _raw(build(shape, Request(kind, tokens)))


@dataclass
class ModelFcm:
    """FCM as topic-sync must assume it behaves: idempotent calls, dead tokens stay dead."""

    transport: str = "v1"  # "v1" (one answer per token) or "legacy-iid" (one per batch)
    target: FcmTarget = FcmTarget("model-project", "emulator model")
    members: dict[str, set[str]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    publishes: list[tuple[str, frozenset[str], str]] = field(default_factory=list)
    token_faults: dict[str, list[TokenFault]] = field(default_factory=dict)
    batch_faults: list[tuple[str, bool]] = field(default_factory=list)
    crash_at: tuple[int, bool] | None = None  # (call number, after FCM served it)
    calls: int = 0
    refused_today: set[str] = field(default_factory=set)  # last subscribe: TOO_MANY_TOPICS

    def _crash(self, after: bool) -> None:
        if self.crash_at is not None and self.crash_at == (self.calls, after):
            self.crash_at = None
            raise Crash(f"killed {'after' if after else 'before'} call {self.calls}")

    def subscribe(self, tokens: Sequence[str], topic: str, **_kw: object) -> BatchResult:
        return self._manage(tokens, topic, "subscribe")

    def unsubscribe(self, tokens: Sequence[str], topic: str, **_kw: object) -> BatchResult:
        return self._manage(tokens, topic, "unsubscribe")

    def _apply(self, token: str, topic: str, op: str) -> str | None:
        if token in self.dead:
            return "UNREGISTERED"
        if op == "subscribe":
            self.members.setdefault(topic, set()).add(token)
            self.refused_today.discard(token)
        else:
            self.members.get(topic, set()).discard(token)
        return None

    def _one(self, token: str, topic: str, op: str) -> str | None:
        """The raw reason (or ODD + shape) FCM answers for one token, doing its work."""
        faults = self.token_faults.get(token, [])
        fault = next((f for f in faults if f.op == op), None)
        member = token in self.members.get(topic, set())
        if fault is None or (fault.reason == "TOO_MANY_TOPICS" and op == "subscribe" and member):
            # The topic limit only refuses a new subscription; a member is simply confirmed.
            return self._apply(token, topic, op)
        fault.times -= 1
        if fault.times == 0:
            faults.remove(fault)
        if fault.reason in DEAD_REASONS:
            self.dead.add(token)  # FCM forgets a dead token's subscriptions
            for held in self.members.values():
                held.discard(token)
        elif fault.reason == "TOO_MANY_TOPICS" and op == "subscribe":
            self.refused_today.add(token)
        elif fault.applied:
            self._apply(token, topic, op)
        return fault.reason

    def _wire(self, token: str, topic: str, op: str, was_member: bool) -> RawAnswer:
        """FCM's v1 answer for one token, as the emulator gives it."""
        reason = self._one(token, topic, op)
        if reason is not None and reason.startswith(ODD):
            return _odd(reason[len(ODD) :], op, 1)
        if reason is not None:
            return _raw(reason_reply(reason))
        if op == "unsubscribe":
            return RawAnswer(200, b"{}")
        if was_member:
            return _raw(error_reply(409, "ALREADY_EXISTS"))
        name = f"projects/model-project/registrations/{token}/topicSubscriptions/{topic}"
        body = {"name": name, "topicName": topic, "createTime": "2026-11-01T06:00:00.000000Z"}
        return RawAnswer(200, json.dumps(body).encode())

    def _manage(self, tokens: Sequence[str], topic: str, op: str) -> BatchResult:
        self.calls += 1
        self._crash(after=False)
        kind = (
            op if self.transport == "v1" else ("batchAdd" if op == "subscribe" else "batchRemove")
        )
        if self.batch_faults:
            reason, applied = self.batch_faults.pop(0)
            if applied:
                for token in tokens:
                    self._apply(token, topic, op)
            self._crash(after=True)
            if not reason.startswith(ODD):
                return BatchResult.whole(reason, len(tokens))
            answer = _odd(reason[len(ODD) :], kind, len(tokens))
            if self.transport != "v1":
                return legacy_result(answer, tokens)
            return BatchResult.of_answers([self._read(answer, op, topic) for _ in tokens])
        if self.transport == "v1":
            held = self.members.get(topic, set())
            wire = [self._wire(token, topic, op, token in held) for token in tokens]
            self._crash(after=True)
            return BatchResult.of_answers([self._read(answer, op, topic) for answer in wire])
        results = []
        for token in tokens:
            reason = self._one(token, topic, op)
            results.append({} if reason is None else {"error": reason})
        self._crash(after=True)
        return legacy_result(RawAnswer(200, json.dumps({"results": results}).encode()), tokens)

    @staticmethod
    def _read(answer: RawAnswer, op: str, topic: str):
        return read_topic_answer(
            answer, subscribe=op == "subscribe", topic=topic, error_code=topic_error_code
        )

    def publish(self, message, *, validate_only: bool = False) -> str:
        if validate_only:
            return "validated"
        self.calls += 1
        self._crash(after=False)
        title = message.notification.title
        self.publishes.append(
            (message.topic, frozenset(self.members.get(message.topic, ())), title)
        )
        self._crash(after=True)
        return f"projects/model/messages/{len(self.publishes)}"

    def list_topics(self, token: str) -> set[str]:
        return {t for t, held in self.members.items() if token in held}


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
    fresh_databases, message_file: Path, tmp_path: Path, policy: PoolPolicy
):
    class Days(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.engine = db.make_engine(fresh_databases())
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
