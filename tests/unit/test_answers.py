"""The evidence rule for FCM's answers (fcm/answers.py): which shapes prove what.

Pure functions over raw answers; the transports that use them are tested over real HTTP in
tests/integration (test_client, test_conformance, test_evidence).
"""

from __future__ import annotations

import json

import pytest

from topic_sync.fcm.answers import (
    NO_ANSWER,
    REDIRECTED,
    UNEXPECTED_ANSWER,
    RawAnswer,
    TokenAnswer,
    message_name,
    read_batch_answer,
    read_topic_answer,
)
from topic_sync.fcm.sdk_bridge import topic_error_code
from topic_sync.fcm.wire import FCM_ERROR_TYPE

TOPIC = "jobreco-3"


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _error(code: int, status: str, fcm: str | None = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": "m", "status": status}
    if fcm:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm}]
    return _json({"error": error})


def read(status: int, body: bytes | None, *, subscribe: bool) -> TokenAnswer:
    return read_topic_answer(
        RawAnswer(status, body), subscribe=subscribe, topic=TOPIC, error_code=topic_error_code
    )


RESOURCE = {
    "name": f"projects/p/registrations/tok/topicSubscriptions/{TOPIC}",
    "topicName": TOPIC,
    "createTime": "2026-11-22T06:00:00.000000Z",
}


@pytest.mark.parametrize(
    "body",
    [
        b"{}",  # firebase-admin's own success fixture
        _json(RESOURCE),  # the discovery document's TopicSubscription
        _json({"topic_name": TOPIC, "create_time": "2026-11-22T06:00:00Z"}),
        _json({**RESOURCE, "extra": 1}),  # it names the subscription: more fields are fine
    ],
)
def test_subscribe_successes_of_the_documented_shape(body):
    assert read(200, body, subscribe=True) == TokenAnswer(None, True)


def test_already_subscribed_is_a_success_only_as_google_says_it():
    assert read(409, _error(409, "ALREADY_EXISTS"), subscribe=True) == TokenAnswer(None, True)
    # Any other 409 (the SDK counts every 409 as success) proves nothing.
    for body in (b"", b"<html>Conflict</html>", _error(409, "ABORTED")):
        answer = read(409, body, subscribe=True)
        assert answer.reason is not None and not answer.proven


def test_unsubscribe_success_is_exactly_the_empty_object():
    assert read(200, b"{}", subscribe=False) == TokenAnswer(None, True)
    assert read(200, b" { } ", subscribe=False) == TokenAnswer(None, True)
    assert read(200, _json(RESOURCE), subscribe=False) == TokenAnswer(UNEXPECTED_ANSWER, False)


STRANGE_2XX = [
    (200, b"<!DOCTYPE html><html><body>Service Unavailable</body></html>"),
    (200, b""),
    (200, b"OK"),
    (200, b"[]"),
    (200, b"null"),
    (200, b'"ok"'),
    (200, _error(404, "NOT_FOUND")),  # a JSON error object on a 2xx
    (200, _json({"error": "NotRegistered"})),
    (200, _json({"foo": "bar"})),  # names no subscription
    (200, _json({**RESOURCE, "topicName": "another-topic"})),
    (200, _json({"name": "projects/p/registrations/tok/topicSubscriptions/another"})),
    (200, _json({"name": 5})),
    (200, b"\xff\xfe"),
    (201, b"{}"),
    (202, b"{}"),
    (204, b""),
]


@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
@pytest.mark.parametrize(("status", "body"), STRANGE_2XX)
def test_a_2xx_of_no_documented_shape_is_no_verdict(status, body, subscribe):
    assert read(status, body, subscribe=subscribe) == TokenAnswer(UNEXPECTED_ANSWER, False)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_a_redirect_is_no_verdict(status, subscribe):
    assert read(status, b"{}", subscribe=subscribe) == TokenAnswer(REDIRECTED, False)


@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_a_body_cut_short_is_no_answer(subscribe):
    assert read(200, None, subscribe=subscribe) == TokenAnswer(NO_ANSWER, False)


def test_only_a_4xx_with_fcm_details_is_about_the_token():
    assert read(404, _error(404, "NOT_FOUND", "UNREGISTERED"), subscribe=True) == TokenAnswer(
        "UNREGISTERED", True
    )
    assert read(400, _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), subscribe=False).proven
    # The status class decides first: a 5xx (or a 3xx) proves nothing, whatever it carries.
    for status in (500, 502, 503, 504):
        answer = read(status, _error(status, "INTERNAL", "UNREGISTERED"), subscribe=False)
        assert answer == TokenAnswer("UNREGISTERED", False)
    # Details without an error code, or of another type, are no FCM details.
    bare = _json({"error": {"status": "INVALID_ARGUMENT", "details": [{"@type": "x"}]}})
    assert read(400, bare, subscribe=True) == TokenAnswer("INVALID_ARGUMENT", False)


@pytest.mark.parametrize(
    "body",
    [
        _error(404, "NOT_FOUND"),
        _json({"error": {"status": "NOT_FOUND", "message": "Not found"}}),  # the PY fixture
        _json({"error": {"status": "NOT_FOUND"}}),
    ],
)
def test_a_bare_404_is_flagged_for_the_engine(body):
    answer = read(404, body, subscribe=False)
    assert answer == TokenAnswer("NOT_FOUND", False, bare_not_found=True)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, b"<html>Not Found</html>"),  # not Google's error format
        (404, _json({"error": {"status": "NOT_FOUND", "code": 400}})),  # contradicts itself
        (404, _json({"error": "NOT_FOUND"})),
        (400, _error(400, "NOT_FOUND")),
        (404, _error(404, "NOT_FOUND", "UNREGISTERED")),  # proven outright instead
    ],
)
def test_other_not_founds_are_not_bare_404s(status, body):
    assert not read(status, body, subscribe=False).bare_not_found


# ------------------------------------------------------------------ legacy batches

TOKENS = ["a", "b", "c"]


def batch(status: int, body: bytes, tokens: list[str] = TOKENS) -> list[str | None] | None:
    return read_batch_answer(RawAnswer(status, body), tokens)


def test_one_result_object_per_token_is_per_token_evidence():
    body = _json({"results": [{}, {"error": "NOT_FOUND"}, {"error": "TOO_MANY_TOPICS"}]})
    assert batch(200, body) == [None, "NOT_FOUND", "TOO_MANY_TOPICS"]


@pytest.mark.parametrize(
    "body",
    [
        _json({"results": [{}, {}]}),  # short: would confirm the token it leaves out
        _json({"results": []}),
        _json({"results": [{}, {}, {}, {}]}),  # long
        b"{}",  # no results (the Node suite's 200 without them)
        _json({"error": "NotRegistered"}),
        _json({"results": [{}, {}, {}], "error": "x"}),
        _json({"results": {}}),
        _json({"results": "[]"}),
        _json({"results": ["", "", ""]}),
        _json({"results": [{}, None, {}]}),
        _json({"results": [{}, {"error": ""}, {}]}),
        _json({"results": [{}, {"error": None}, {}]}),
        _json({"results": [{}, {"error": {"code": 1}}, {}]}),
        b"[]",
        b"<html></html>",
        b"",
    ],
)
def test_anything_else_from_a_legacy_batch_is_no_evidence(body):
    assert batch(200, body) is None


@pytest.mark.parametrize("status", [201, 204, 302, 400, 404, 500, 503])
def test_a_legacy_batch_proves_only_on_a_200(status):
    assert batch(status, _json({"results": [{}, {}, {}]})) is None


# ------------------------------------------------------------------ send


def test_a_send_names_its_message_only_in_the_documented_shape():
    good = _json({"name": "projects/p/messages/0:123"})
    assert message_name(RawAnswer(200, good)) == "projects/p/messages/0:123"
    assert message_name(RawAnswer(200, _json({"name": "message-id"}))) == "message-id"
    for status, body in [
        (200, b"{}"),
        (200, b"[]"),
        (200, _json({"name": None})),
        (200, _json({"name": ""})),
        (200, _json({"name": "a b"})),
        (200, _json({"name": 7})),
        (200, b""),
        (200, b"<html></html>"),
        (200, _json({"name": "x", "error": {"status": "INTERNAL"}})),
        (201, good),
        (302, good),
        (500, good),
    ]:
        assert message_name(RawAnswer(status, body)) is None, (status, body)


def test_describe_says_what_came():
    assert RawAnswer(200, b"").describe() == "HTTP 200, empty body"
    assert RawAnswer(200, None).describe() == "HTTP 200, body cut short"
    assert RawAnswer(302, b"", "http://elsewhere/").describe() == (
        "HTTP 302 redirect to http://elsewhere/"
    )
    assert "<html>" in RawAnswer(200, b"<html>x</html>").describe()
