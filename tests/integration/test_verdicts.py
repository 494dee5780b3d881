"""Every verdict needs evidence, successes and publishes included: whole runs against real
PostgreSQL and the emulator, through the real firebase-admin code path and every transport.

A removal or an addition answered with something that is not FCM's documented success (an
HTML page, an empty body, a JSON error on a 200, a redirect, a cut body, a legacy `results`
list that is not one object per token) is never recorded as done; a bare v1 404 is a verdict
only on an endpoint the run has proven; a publish answered oddly keeps its intent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import text

from tests.support import DAY, POOL, PREFIX, last_recipients, opts, subscriptions, toks
from topic_sync.emulator import Canned
from topic_sync.engine.run import run_day
from topic_sync.errors import CredentialsError, DeadTokenGuard, ExitCode, PublishWithheld
from topic_sync.fcm.client import PublishError
from topic_sync.pool import topic_for

# How each transport reads an answer of no documented shape: every test runs on each.
pytestmark = pytest.mark.every_transport

LATER = DAY + dt.timedelta(days=POOL)  # the same pool topic again
TOPIC = topic_for(PREFIX, POOL, DAY)
REMOVAL_KINDS = ("unsubscribe", "batchRemove")
ADDITION_KINDS = ("subscribe", "batchAdd")

# Shapes every transport can meet; the legacy API's own ones are below.
STRANGE = ["html", "empty", "text", "json-error", "json-list", "string-error", "redirect", "cut"]
LEGACY_STRANGE = ["short-results", "empty-results", "long-results", "no-results"]


def _codes(engine, topic: str, tokens: list[str]) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.token, s.status, s.last_code FROM subscriptions s "
                "JOIN tokens t ON t.id = s.token_id WHERE s.topic = :topic AND t.token = ANY(:t)"
            ),
            {"topic": topic, "t": tokens},
        ).all()
    return {token: (status, code) for token, status, code in rows}


def _dead(engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM tokens WHERE invalid_at IS NOT NULL")))


def _removals_answered(
    tmp_path, message_file, deps, emulator, shape, *, served, kinds=REMOVAL_KINDS
) -> None:
    """Day 1 subscribes 10 tokens; day 2 (same topic) drops 4, whose removals meet `shape`."""
    run_day(opts(tmp_path, message_file, toks(0, 10)), deps)
    emulator.inject_answer(shape, kinds=kinds, served=served)
    with pytest.raises(PublishWithheld, match="may still be subscribed") as withheld:
        run_day(opts(tmp_path, message_file, toks(0, 6), LATER), deps)
    assert withheld.value.exit_code is ExitCode.WITHHELD
    assert len(emulator.publishes) == 1  # day 1's only: nothing went to a topic holding them
    leaving = toks(6, 10)
    # A cut answer is no answer at all (as firebase-admin reads one): unknown-error, retried.
    code = "unknown-error" if shape == "cut" else "no-verdict"
    assert set(_codes(deps.engine, TOPIC, leaving).values()) == {("pending_unsubscribe", code)}
    assert _dead(deps.engine) == 0
    emulator.clear_faults()
    result = run_day(opts(tmp_path, message_file, toks(0, 6), LATER), deps)
    assert result.status == "published"
    assert last_recipients(emulator, TOPIC) == frozenset(toks(0, 6))
    assert emulator.stats[("landing", 200)] == 0  # no redirect was ever followed


@pytest.mark.parametrize("served", [False, True], ids=["not-served", "served"])
@pytest.mark.parametrize("shape", STRANGE)
def test_a_removal_answered_strangely_is_never_confirmed(
    tmp_path, message_file, deps, emulator, shape, served
) -> None:
    # Recorded `unsubscribed`, such a token stayed on the topic and got today's message and
    # every later one. Now it stays owed, and owed removals withhold the publish.
    _removals_answered(tmp_path, message_file, deps, emulator, shape, served=served)


@pytest.mark.parametrize("transport", ["legacy-iid"])
@pytest.mark.parametrize("shape", LEGACY_STRANGE)
def test_a_legacy_removal_answer_not_one_object_per_token_confirms_nobody(
    tmp_path, message_file, deps, emulator, shape
) -> None:
    _removals_answered(
        tmp_path, message_file, deps, emulator, shape, served=True, kinds=["batchRemove"]
    )


@pytest.mark.parametrize("shape", ["html", "json-error", "redirect", "cut"])
def test_an_addition_answered_strangely_is_owed_not_recorded(
    tmp_path, message_file, deps, emulator, shape
) -> None:
    # Recorded `subscribed`, a joiner was never sent to again. Now it stays owed (the run
    # says so) and the next run subscribes it.
    audience = toks(0, 5)
    emulator.inject_answer(shape, kinds=ADDITION_KINDS)
    result = run_day(opts(tmp_path, message_file, audience), deps)
    assert result.status == "published"
    assert result.owed_subscriptions == 5
    assert result.exit_code is ExitCode.INCOMPLETE  # they missed the message: never exit 0
    assert set(subscriptions(deps.engine, TOPIC).values()) == {"pending_subscribe"}
    assert result.failed == {("unknown-error" if shape == "cut" else "no-verdict"): 5}
    emulator.clear_faults()
    again = run_day(opts(tmp_path, message_file, audience, LATER), deps)
    assert again.status == "published"
    assert last_recipients(emulator, TOPIC) == frozenset(audience)


# ------------------------------------------------------------------ the bare 404


@pytest.mark.parametrize("transport", ["v1", "v1-direct"])
def test_a_bare_404_on_an_unproven_endpoint_settles_nothing(
    tmp_path, message_file, deps, emulator
) -> None:
    # Every removal answered 404 NOT_FOUND without FCM's details: an API not enabled, a
    # front end, or FCM on dead tokens, nobody can tell. The run has seen the DELETE
    # endpoint answer per token not once: no verdict, and nothing is published.
    run_day(opts(tmp_path, message_file, toks(0, 10)), deps)
    leaving = toks(6, 10)
    for token in leaving:
        emulator.inject_token_error(token, "NOT_FOUND", op="unsubscribe")
    with pytest.raises(PublishWithheld, match="may still be subscribed"):
        run_day(opts(tmp_path, message_file, toks(0, 6), LATER), deps)
    assert set(_codes(deps.engine, TOPIC, leaving).values()) == {
        ("pending_unsubscribe", "no-verdict")
    }
    assert _dead(deps.engine) == 0
    assert len(emulator.publishes) == 1


@pytest.mark.parametrize("transport", ["v1", "v1-direct"])
def test_a_bare_404_on_a_proven_endpoint_is_the_tokens_verdict(
    tmp_path, message_file, deps, emulator
) -> None:
    # The same answer for one token, while the run's other removals were answered with FCM's
    # documented success: the endpoint is FCM's topic API answering per token, and the 404 is
    # about that token (the Python SDK suite's per-token fixture). It counts from the next
    # batch or round on: here the token's second attempt.
    run_day(opts(tmp_path, message_file, toks(0, 10)), deps)
    gone = toks(0, 10)[9]
    emulator.unregister(gone)  # FCM forgot it: the topic no longer holds it
    emulator.inject_token_error(gone, "NOT_FOUND", op="unsubscribe")
    result = run_day(opts(tmp_path, message_file, toks(0, 6), LATER), deps)
    assert result.status == "published"
    assert last_recipients(emulator, TOPIC) == frozenset(toks(0, 6))
    with deps.engine.connect() as conn:
        status, code, attempts, invalid = conn.execute(
            text(
                "SELECT s.status, s.last_code, s.attempts, t.invalid_reason FROM subscriptions s "
                "JOIN tokens t ON t.id = s.token_id WHERE t.token = :t AND s.topic = :topic"
            ),
            {"t": gone, "topic": TOPIC},
        ).one()
    assert (status, code, attempts) == ("unsubscribed", "registration-token-not-registered", 2)
    assert invalid == "registration-token-not-registered"
    assert result.counts.newly_dead == 1


@pytest.mark.parametrize("transport", ["v1", "v1-direct"])
def test_bare_404s_count_against_the_dead_token_guard(
    tmp_path, message_file, deps, emulator
) -> None:
    # Proven endpoint or not, 250 "dead" answers out of 400 removals is likelier a fault
    # than uninstalls: the guard believes none past its limit, and nothing is published.
    run_day(opts(tmp_path, message_file, toks(0, 500), allow_large_churn=True), deps)
    for token in toks(250, 500):
        emulator.inject_token_error(token, "NOT_FOUND", op="unsubscribe")
    options = opts(tmp_path, message_file, toks(0, 100), LATER, allow_large_churn=True)
    with pytest.raises(DeadTokenGuard, match="dead-token guard"):
        run_day(options, deps)
    assert len(emulator.publishes) == 1
    assert _dead(deps.engine) == 0
    owed = _codes(deps.engine, TOPIC, toks(250, 500))
    assert {status for status, _ in owed.values()} == {"pending_unsubscribe"}


# ------------------------------------------------------------------ the publish


class PublishArmed:
    """The run's client, with a fault armed just before the real (not validate_only) send."""

    def __init__(self, inner, arm) -> None:
        self._inner, self._arm = inner, arm
        self.transport, self.target = inner.transport, inner.target

    def subscribe(self, *args, **kw):
        return self._inner.subscribe(*args, **kw)

    def unsubscribe(self, *args, **kw):
        return self._inner.unsubscribe(*args, **kw)

    def list_topics(self, token):
        return self._inner.list_topics(token)

    def publish(self, message, validate_only=False):
        if not validate_only:
            self._arm()
        return self._inner.publish(message, validate_only=validate_only)


ODD_SENDS = [
    ("no-name", None),
    ("null-name", None),
    ("json-list", None),
    ("empty", None),
    ("html", None),
    ("string-error", 400),
    ("redirect", None),
    ("cut", None),
]


@pytest.mark.parametrize(("shape", "status"), ODD_SENDS)
def test_an_odd_send_answer_keeps_the_intent_and_never_sends_twice(
    tmp_path, message_file, deps, emulator, shape, status
) -> None:
    # FCM took the message; the answer named none. Not a KeyError or AttributeError: an
    # unknown outcome, said plainly, and the plain rerun does not send a second time.
    def arm() -> None:
        emulator.inject_answer(shape, status=status, kinds=["send"], count=1, served=True)

    options = opts(tmp_path, message_file, toks(0, 5))
    armed = dataclasses.replace(deps, client=PublishArmed(deps.client, arm))
    with pytest.raises(PublishWithheld, match="--republish") as withheld:
        run_day(options, armed)
    assert "FCM's answer proves nothing about the message" in withheld.value.message
    assert len(emulator.publishes) == 1
    with pytest.raises(PublishWithheld, match="never confirmed"):
        run_day(options, deps)
    assert len(emulator.publishes) == 1
    result = run_day(dataclasses.replace(options, mark_published=True), deps)
    assert result.status == "already-published" and len(emulator.publishes) == 1


FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def _fcm_error(status: int, google: str, fcm: str) -> Canned:
    body = (
        f'{{"error":{{"code":{status},"message":"m","status":"{google}",'
        f'"details":[{{"@type":"{FCM_ERROR}","errorCode":"{fcm}"}}]}}}}'
    )
    return Canned(status, body.encode())


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("fcm", ["THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR", "SENDER_ID_MISMATCH"])
def test_a_5xx_publish_answer_keeps_the_intent_whatever_its_details(
    tmp_path, message_file, deps, emulator, status, fcm
) -> None:
    # Read as "credentials" (exit 6), this answer released the publish record and the plain
    # rerun sent the day a second time. A 5xx proves nothing: exit 4, the intent stays.
    def arm() -> None:
        emulator.inject_answer(_fcm_error(status, "INTERNAL", fcm), kinds=["send"], served=True)

    options = opts(tmp_path, message_file, toks(0, 5))
    armed = dataclasses.replace(deps, client=PublishArmed(deps.client, arm))
    with pytest.raises(PublishWithheld) as withheld:
        run_day(options, armed)
    assert fcm in withheld.value.message
    emulator.clear_faults()
    with pytest.raises(PublishWithheld, match="never confirmed"):
        run_day(options, deps)
    assert len(emulator.publishes) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_plain_5xx_publish_answer_keeps_the_intent(
    tmp_path, message_file, deps, emulator, status
) -> None:
    def arm() -> None:
        emulator.inject_request_errors(status, count=1, kinds=["send"], served=True)

    options = opts(tmp_path, message_file, toks(0, 5))
    armed = dataclasses.replace(deps, client=PublishArmed(deps.client, arm))
    with pytest.raises(PublishWithheld, match="--republish"):
        run_day(options, armed)
    with pytest.raises(PublishWithheld, match="never confirmed"):
        run_day(options, deps)
    assert len(emulator.publishes) == 1


def test_a_third_party_auth_refusal_is_not_topic_syncs_credentials(
    tmp_path, message_file, deps, emulator
) -> None:
    # A 401 with THIRD_PARTY_AUTH_ERROR: FCM refused the message (nothing went out) over the
    # APNs / web-push credential uploaded to Firebase. Not exit 6 with the service-account
    # fix: the message says which credential, and the record lets a rerun send once.
    def arm() -> None:  # every attempt: google-auth answers a 401 with a fresh token and a retry
        emulator.inject_answer(
            _fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), kinds=["send"]
        )

    options = opts(tmp_path, message_file, toks(0, 5))
    armed = dataclasses.replace(deps, client=PublishArmed(deps.client, arm))
    with pytest.raises(PublishError) as refused:
        run_day(options, armed)
    assert not isinstance(refused.value, CredentialsError)
    assert refused.value.exit_code is not ExitCode.CREDENTIALS
    assert "APNs certificate or web-push key uploaded to Firebase" in refused.value.message
    assert emulator.publishes == []
    emulator.clear_faults()  # the APNs key was fixed in the Firebase console
    result = run_day(options, deps)
    assert result.status == "published"
    assert len(emulator.publishes) == 1
