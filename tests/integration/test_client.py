"""The transports through the real firebase-admin SDK, against the local FCM emulator.

Every test here goes over real HTTP: a transport -> firebase-admin -> our redirecting adapter
-> the emulator (or, for the wire-format checks, a small recording server of our own).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import firebase_admin
import pytest
from firebase_admin import messaging

from topic_sync.emulator import REASON_WIRE, Canned, FcmEmulator
from topic_sync.emulator.shapes import FOR_BATCHES, FOR_EVERY_KIND
from topic_sync.errors import CredentialsError, ExitCode
from topic_sync.fcm.answers import REDIRECTED, UNEXPECTED_ANSWER, TokenAnswer
from topic_sync.fcm.client import (
    BatchResult,
    ListError,
    PublishError,
)
from topic_sync.fcm.error_table import all_reasons
from topic_sync.fcm.sdk_bridge import (
    TopicRequest,
    initialize_app,
    messaging_service,
    mounted_adapter,
    registration_segment,
)
from topic_sync.fcm.transports import SdkTransport, make_client
from topic_sync.fcm.wire import MAX_TOKENS_PER_CALL
from topic_sync.redact import shorten

PROJECT = "demo-test"  # the project id the fcm_app fixture uses
# What each transport sends and reads: every test here runs once per transport.
pytestmark = pytest.mark.every_transport
TOPIC = "jobreco-3"
TOKENS = ["tok-a", "tok-b", "tok-c"]

# Every raw reason of the per-token error table (product brief), plus one the table does not know:
# the client must pass raw reasons through untouched; the error table interprets them.
TABLE_REASONS = all_reasons()
REASONS = [*TABLE_REASONS, "SOMETHING_NEW"]


@pytest.fixture
def emulator(module_emulator: FcmEmulator) -> FcmEmulator:
    """One emulator for the module, reset before each test (instead of one per test: speed)."""
    module_emulator.reset()
    return module_emulator


@pytest.fixture
def fcm_app(module_app: firebase_admin.App, emulator: FcmEmulator) -> firebase_admin.App:
    return module_app


def _kind(client: SdkTransport, subscribe: bool) -> str:
    """The emulator's stats key for one subscribe/unsubscribe request on this transport."""
    if client.transport.startswith("v1"):
        return "subscribe" if subscribe else "unsubscribe"
    return "batchAdd" if subscribe else "batchRemove"


def _requests(emulator: FcmEmulator, kind: str) -> int:
    return sum(n for (k, _), n in emulator.stats.items() if k == kind)


def _message(topic: str = TOPIC) -> messaging.Message:
    return messaging.Message(
        topic=topic,
        notification=messaging.Notification(title="Jobs for today", body="Your picks"),
        data={"kind": "jobreco"},
    )


# ------------------------------------------------------------------ subscribe / unsubscribe


def test_subscribe_then_unsubscribe_changes_membership_exactly(client, emulator):
    emulator.subscribe_direct("bystander", TOPIC)
    emulator.subscribe_direct("tok-a", "other-topic")

    result = client.subscribe(TOKENS, TOPIC)

    assert result == BatchResult.per_token((None, None, None))
    assert emulator.members(TOPIC) == {"bystander", *TOKENS}
    assert emulator.topics_of("tok-a") == {TOPIC, "other-topic"}

    result = client.unsubscribe(["tok-a", "tok-c"], TOPIC)

    assert result == BatchResult.per_token((None, None))
    assert emulator.members(TOPIC) == {"bystander", "tok-b"}
    assert emulator.topics_of("tok-a") == {"other-topic"}  # other topics untouched


def test_resubscribing_a_member_succeeds(client, emulator):
    emulator.subscribe_direct("tok-b", TOPIC)

    result = client.subscribe(TOKENS, TOPIC)

    assert result.reasons == (None, None, None)
    assert not result.whole_request
    assert emulator.members(TOPIC) == set(TOKENS)
    if client.transport.startswith("v1"):
        # FCM answered 409 ALREADY_EXISTS for the member, and that counts as success.
        assert emulator.stats[("subscribe", 409)] == 1
        assert emulator.stats[("subscribe", 200)] == 2


def test_removing_a_non_member_succeeds(client, emulator):
    emulator.subscribe_direct("tok-a", TOPIC)

    result = client.unsubscribe(TOKENS, TOPIC)

    assert result.reasons == (None, None, None)
    assert emulator.members(TOPIC) == set()
    if client.transport.startswith("v1"):
        # Only allow_missing=true makes FCM answer 200 (not 404) for the two non-members.
        assert emulator.stats[("unsubscribe", 200)] == 3


@pytest.mark.parametrize("reason", REASONS)
def test_per_token_reason_on_subscribe(client, emulator, reason):
    emulator.inject_token_error("tok-b", reason, op="subscribe")

    result = client.subscribe(TOKENS, TOPIC)

    assert result.reasons == (None, reason, None)
    assert result.retry_after is None
    assert not result.whole_request
    assert emulator.members(TOPIC) == {"tok-a", "tok-c"}
    _assert_one_request_per_token(client, emulator, reason, subscribe=True)


@pytest.mark.parametrize("reason", REASONS)
def test_per_token_reason_on_unsubscribe(client, emulator, reason):
    for token in TOKENS:
        emulator.subscribe_direct(token, TOPIC)
    emulator.inject_token_error("tok-b", reason, op="unsubscribe")

    result = client.unsubscribe(TOKENS, TOPIC)

    assert result.reasons == (None, reason, None)
    assert result.retry_after is None
    assert not result.whole_request
    assert emulator.members(TOPIC) == {"tok-b"}
    _assert_one_request_per_token(client, emulator, reason, subscribe=False)


def _assert_one_request_per_token(
    client: SdkTransport, emulator: FcmEmulator, reason: str, *, subscribe: bool
) -> None:
    kind = _kind(client, subscribe)
    if not client.transport.startswith("v1"):
        assert emulator.stats == {(kind, 200): 1}  # one batch carries all three tokens
        return
    status = REASON_WIRE.get(reason, (400,))[0]
    assert emulator.stats[(kind, 200)] == 2
    failed = emulator.stats[(kind, status)]
    if status == 401:
        # google-auth's session (not the HTTP layer topic-sync configures) refreshes the
        # credential and tries again on a 401, a fixed number of times.
        session = messaging_service(client.app)._client.session
        refreshes = 1 if client.transport == "v1-direct" else session._max_refresh_attempts
        assert failed == 1 + refreshes
    else:
        # Exactly one request for the failing token: the SDK's HTTP layer did not retry
        # 500/503 behind topic-sync's back (its own default would have made 5 attempts).
        assert failed == 1
    assert _requests(emulator, kind) == 2 + failed


def test_injected_internal_error_is_seen_once_and_then_clears(fcm_app, emulator):
    client = make_client(fcm_app, "v1")
    emulator.inject_token_error("tok-b", "INTERNAL", times=1)

    assert client.subscribe(TOKENS, TOPIC).reasons == (None, "INTERNAL", None)
    assert emulator.stats[("subscribe", 500)] == 1
    assert emulator.members(TOPIC) == {"tok-a", "tok-c"}

    # Had the SDK retried the 500 itself, the fault would have been used up invisibly
    # and the first call would have succeeded; now the retry is topic-sync's to make.
    assert client.subscribe(["tok-b"], TOPIC).reasons == (None,)
    assert emulator.members(TOPIC) == set(TOKENS)


def test_unregistered_token_fails_subscribe_but_unsubscribe_reports_it(client, emulator):
    emulator.unregister("tok-c")
    # FCM's code on v1 (from its error details); the Instance ID API says NOT_FOUND.
    dead = "NOT_FOUND" if client.transport == "legacy-iid" else "UNREGISTERED"

    result = client.subscribe(TOKENS, TOPIC)
    assert result.reasons == (None, None, dead)
    assert result.proven == (True, True, True)  # an answer about that very token
    assert emulator.members(TOPIC) == {"tok-a", "tok-b"}
    # The error table turns this into success for unsubscribe; the client reports it raw.
    assert client.unsubscribe(TOKENS, TOPIC).reasons == (None, None, dead)
    assert emulator.members(TOPIC) == set()


# ------------------------------------------------------------------ whole-request failures


@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_legacy_whole_request_503_with_retry_after(fcm_app, emulator, subscribe):
    client = make_client(fcm_app, "legacy-iid")
    emulator.subscribe_direct("tok-a", TOPIC)
    emulator.inject_request_errors(503, retry_after=7)

    call = client.subscribe if subscribe else client.unsubscribe
    result = call(TOKENS, TOPIC)

    assert result == BatchResult.whole("UNAVAILABLE", 3, retry_after=7.0)
    assert result.proven == (False, False, False)
    assert emulator.members(TOPIC) == {"tok-a"}
    # One request: the SDK's HTTP layer did not retry the 503 (nor wait 7 s) by itself.
    assert emulator.stats == {(_kind(client, subscribe), 503): 1}


def test_legacy_whole_request_429(fcm_app, emulator):
    client = make_client(fcm_app, "legacy-iid")
    emulator.inject_request_errors(429, retry_after=3)

    result = client.subscribe(TOKENS, TOPIC)

    assert result == BatchResult.whole("RESOURCE_EXHAUSTED", 3, retry_after=3.0)
    assert emulator.members(TOPIC) == set()


def test_legacy_whole_request_without_retry_after(fcm_app, emulator):
    client = make_client(fcm_app, "legacy-iid")
    emulator.inject_request_errors(500)

    result = client.unsubscribe(TOKENS, TOPIC)

    assert result == BatchResult.whole("INTERNAL", 3)
    assert emulator.stats == {("batchRemove", 500): 1}


def test_legacy_quota_rejects_whole_batch(fcm_app, emulator):
    client = make_client(fcm_app, "legacy-iid")
    emulator.set_quota(1)  # a batch of 3 costs 3: the first passes, the next is refused

    assert client.subscribe(TOKENS, TOPIC).reasons == (None, None, None)
    result = client.subscribe(["tok-d", "tok-e"], TOPIC)

    assert result.reasons == ("RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED")
    assert result.whole_request
    assert emulator.members(TOPIC) == set(TOKENS)


def test_v1_request_failures_arrive_per_token(fcm_app, emulator):
    # On v1 every token is its own request, so there is no whole-request failure. The SDK
    # drops the response headers, so a Retry-After does not reach the BatchResult (only the
    # pacer at the HTTP layer sees it; see test_sdk_bridge).
    client = make_client(fcm_app, "v1")
    emulator.inject_request_errors(429, retry_after=5)

    result = client.subscribe(TOKENS, TOPIC)

    assert result == BatchResult.of_answers([TokenAnswer("RESOURCE_EXHAUSTED", False)] * 3)
    assert emulator.stats == {("subscribe", 429): 3}


# ------------------------------------------------------------------ batch size


@pytest.mark.parametrize("size", [0, MAX_TOKENS_PER_CALL + 1])
@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_batch_size_out_of_range_raises_before_any_request(client, emulator, size, subscribe):
    call = client.subscribe if subscribe else client.unsubscribe
    with pytest.raises(ValueError, match=f"1 to {MAX_TOKENS_PER_CALL} tokens, not {size}"):
        call([f"tok-{i}" for i in range(size)], TOPIC)
    assert emulator.stats == {}


def test_full_batch_of_max_tokens(client, emulator):
    assert MAX_TOKENS_PER_CALL == 1000
    tokens = [f"tok-{i:04d}" for i in range(MAX_TOKENS_PER_CALL)]
    emulator.inject_token_error("tok-0999", "UNREGISTERED", op="subscribe")

    result = client.subscribe(tokens, TOPIC)

    assert len(result.reasons) == MAX_TOKENS_PER_CALL
    assert result.reasons[-1] == "UNREGISTERED"  # results stay in the order given
    assert set(result.reasons[:-1]) == {None}
    assert emulator.members(TOPIC) == set(tokens[:-1])
    expected_requests = MAX_TOKENS_PER_CALL if client.transport.startswith("v1") else 1
    assert _requests(emulator, _kind(client, True)) == expected_requests


def test_single_token_and_any_sequence(client, emulator):
    assert client.subscribe(("tok-a",), TOPIC) == BatchResult.per_token((None,))
    assert emulator.members(TOPIC) == {"tok-a"}


def test_unknown_transport_is_refused(fcm_app):
    with pytest.raises(ValueError, match="unknown transport 'grpc'"):
        make_client(fcm_app, "grpc")


# ------------------------------------------------------------------ publish


def test_publish_returns_message_id_and_records_members_at_that_instant(client, emulator):
    client.subscribe(TOKENS, TOPIC)
    client.unsubscribe(["tok-b"], TOPIC)
    emulator.subscribe_direct("tok-x", "other-topic")

    name = client.publish(_message())

    [publish] = emulator.publishes
    assert name == f"projects/{PROJECT}/messages/{publish.message_id}"
    assert publish.topic == TOPIC
    assert publish.recipients == {"tok-a", "tok-c"}
    assert publish.message["notification"] == {"title": "Jobs for today", "body": "Your picks"}
    assert emulator.validations == []

    client.subscribe(["tok-b"], TOPIC)  # later changes do not rewrite history
    assert emulator.publishes[0].recipients == {"tok-a", "tok-c"}


def test_two_publishes_get_distinct_ids(client, emulator):
    first = client.publish(_message())
    second = client.publish(_message())
    assert first != second
    assert [p.message_id for p in emulator.publishes] == [
        first.rsplit("/", 1)[1],
        second.rsplit("/", 1)[1],
    ]


def test_validate_only_sends_nothing(client, emulator):
    client.subscribe(TOKENS, TOPIC)

    name = client.publish(_message(), validate_only=True)

    assert name.startswith(f"projects/{PROJECT}/messages/")
    assert emulator.publishes == []
    [validation] = emulator.validations
    assert validation.topic == TOPIC
    assert validation.recipients == set(TOKENS)


@pytest.mark.parametrize(("status", "code"), [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")])
def test_publish_with_rejected_credentials_raises_credentials_error(client, emulator, status, code):
    emulator.inject_request_errors(status)

    with pytest.raises(CredentialsError) as info:
        client.publish(_message())

    assert info.value.exit_code is ExitCode.CREDENTIALS
    assert code in info.value.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in info.value.message
    assert emulator.publishes == []


@pytest.mark.parametrize(("status", "code"), [(400, "INVALID_ARGUMENT"), (404, "NOT_FOUND")])
def test_publish_refused_with_4xx_is_not_sent_and_not_retryable(client, emulator, status, code):
    emulator.inject_request_errors(status)

    with pytest.raises(PublishError) as info:
        client.publish(_message())

    assert info.value.definitely_not_sent is True
    assert info.value.retryable is False
    assert code in info.value.message
    assert emulator.publishes == []


def test_publish_too_big_is_definitely_not_sent(client, emulator):
    message = messaging.Message(topic=TOPIC, data={"blob": "x" * 5000})

    with pytest.raises(PublishError) as info:
        client.publish(message)

    assert info.value.definitely_not_sent is True
    assert info.value.retryable is False
    assert emulator.stats == {("send", 400): 1}


@pytest.mark.parametrize(
    ("status", "code", "refused"),
    [
        # FCM refused the request before serving it, so it did not take the message.
        (429, "RESOURCE_EXHAUSTED", True),
        # A 5xx may come after FCM took the message (google.rpc.Code: retrying UNAVAILABLE
        # "is not always safe" for a non-idempotent call), and a proxy's 502 is not FCM's
        # word: nothing proves it did not go out, so it must neither be released nor resent.
        (500, "INTERNAL", False),
        (502, "Bad Gateway", False),
        (503, "UNAVAILABLE", False),
        (504, "DEADLINE_EXCEEDED", False),
    ],
)
def test_publish_error_is_a_refusal_only_with_proof(client, emulator, status, code, refused):
    emulator.inject_request_errors(status, retry_after=9)

    with pytest.raises(PublishError) as info:
        client.publish(_message())

    assert info.value.definitely_not_sent is refused
    assert info.value.retryable is refused
    assert info.value.retry_after == 9.0
    assert code in info.value.message
    # One attempt only: retrying is topic-sync's decision, not a hidden SDK loop.
    assert emulator.stats == {("send", status): 1}
    assert emulator.publishes == []


def test_publish_server_error_without_retry_after(client, emulator):
    emulator.inject_request_errors(503)

    with pytest.raises(PublishError) as info:
        client.publish(_message())

    assert info.value.retry_after is None


# ------------------------------------------------------------------ list topics (v1 list API)


def test_list_topics_returns_what_fcm_holds(client, emulator):
    client.subscribe(["tok-a"], TOPIC)
    emulator.subscribe_direct("tok-a", "other-topic")
    emulator.subscribe_direct("tok-b", "not-mine")

    assert client.list_topics("tok-a") == {TOPIC, "other-topic"}
    assert client.list_topics("tok-c") == set()


def test_list_topics_follows_every_page(client, emulator):
    topics = {f"t-{i:04d}" for i in range(2001)}  # one more than a page of 2000
    for topic in topics:
        emulator.subscribe_direct("tok-a", topic)

    assert client.list_topics("tok-a") == topics
    assert emulator.stats == {("list", 200): 2}


def test_list_topics_of_an_unknown_token_is_not_found(client, emulator):
    emulator.unregister("tok-a")

    with pytest.raises(ListError) as info:
        client.list_topics("tok-a")

    assert info.value.status == 404
    assert info.value.not_found is True
    assert info.value.retryable is False


@pytest.mark.parametrize("status", [429, 500, 503])
def test_list_topics_server_errors_are_retryable(client, emulator, status):
    emulator.inject_request_errors(status, retry_after=4)

    with pytest.raises(ListError) as info:
        client.list_topics("tok-a")

    assert info.value.status == status
    assert info.value.not_found is False
    assert info.value.retryable is True
    assert info.value.retry_after == 4.0
    assert emulator.stats == {("list", status): 1}


def test_a_list_error_never_shows_the_whole_token(client, emulator):
    # The HTTP library's message quotes the URL, which holds the token.
    token = "dGhpcyBpcyBub3QgYSByZWFs:APA91bH-k9_xTqz0aVb.example1"
    emulator.inject_request_errors(500)

    with pytest.raises(ListError) as info:
        client.list_topics(token)

    assert token not in info.value.message
    assert registration_segment(token) not in info.value.message  # as the URL has it
    assert shorten(token) in info.value.message


@pytest.mark.parametrize("status", [401, 403])
def test_list_topics_with_rejected_credentials_stops(client, emulator, status):
    emulator.inject_request_errors(status)

    with pytest.raises(CredentialsError, match=f"HTTP {status} listing subscriptions"):
        client.list_topics("tok-a")


# ------------------------------------------------------------------ wire format


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]
    head: bytes  # the request line and header block as received

    def segments(self) -> list[str]:
        return [urllib.parse.unquote(s) for s in self.path.split("/")]


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        self.server.recorded.append(
            Recorded(
                self.command,
                path,
                urllib.parse.parse_qs(query, keep_blank_values=True),
                body,
                {k.lower(): v for k, v in self.headers.items()},
                self.raw_requestline + self.headers.as_bytes(),
            )
        )
        if path.endswith("/messages:send") and self.server.drop_sends > 0:
            # FCM took the message, then the connection broke before the answer arrived.
            self.server.drop_sends -= 1
            self.close_connection = True
            return
        if path.startswith("/iid/"):
            count = len(json.loads(body)["registration_tokens"])
            reply = json.dumps({"results": [{}] * count}).encode()
        elif path.endswith("/messages:send"):
            reply = json.dumps({"name": f"projects/{PROJECT}/messages/m-1"}).encode()
        else:
            reply = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_DELETE = _serve


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.recorded: list[Recorded] = []
        self.drop_sends = 0


@pytest.fixture
def recording_server() -> Iterator[_RecordingServer]:
    server = _RecordingServer()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def recording(
    recording_server: _RecordingServer,
) -> Iterator[tuple[firebase_admin.App, list[Recorded]]]:
    """A firebase-admin app whose FCM traffic goes to a server that records every request."""
    app = initialize_app(
        name=f"test-{uuid.uuid4().hex}",
        project_id=PROJECT,
        emulator_host=f"127.0.0.1:{recording_server.server_address[1]}",
    )
    yield app, recording_server.recorded
    firebase_admin.delete_app(app)


FCM_TOKENS = ["fAbC:APA91b-x_y.z", "plain-token"]  # real FCM tokens contain ':'


def test_v1_subscribe_wire_format(recording):
    app, recorded = recording

    assert make_client(app, "v1").subscribe(FCM_TOKENS, TOPIC).reasons == (None, None)

    assert len(recorded) == 2
    for token, req in zip(FCM_TOKENS, sorted(recorded, key=lambda r: r.segments()[5]), strict=True):
        assert req.method == "POST"
        # /v1/projects/{p}/registrations/{token}/topicSubscriptions?topic_name={topic}
        assert req.path == (
            f"/v1/projects/{PROJECT}/registrations/"
            f"{urllib.parse.quote(token, safe='')}/topicSubscriptions"
        )
        assert req.segments()[5] == token
        assert req.query == {"topic_name": [TOPIC]}
        assert json.loads(req.body) == {}
        assert req.headers["authorization"] == "Bearer owner"


@pytest.mark.parametrize("subscribe", [True, False])
def test_the_direct_transport_sends_what_firebase_admin_sends_byte_for_byte(recording, subscribe):
    # v1-direct replaces firebase-admin's per-token requests on the hot path: FCM must not be
    # able to tell them apart. Same request line, same header names, values and order, same
    # body, token by token (tokens with characters that need encoding included).
    app, recorded = recording
    tokens = [*FCM_TOKENS, "a/b?c#d%e f", "é-ü"]
    sent: dict[str, dict[str, tuple[bytes, bytes]]] = {}
    for transport in ("v1", "v1-direct"):
        recorded.clear()
        client = make_client(app, transport)
        call = client.subscribe if subscribe else client.unsubscribe
        assert call(tokens, TOPIC).reasons == (None,) * len(tokens)
        sent[transport] = {r.segments()[5]: (r.head, r.body) for r in recorded}
        assert sorted(sent[transport]) == sorted(tokens)
    assert sent["v1-direct"] == sent["v1"]


def test_v1_unsubscribe_wire_format(recording):
    app, recorded = recording

    assert make_client(app, "v1").unsubscribe(FCM_TOKENS, TOPIC).reasons == (None, None)

    assert len(recorded) == 2
    for token, req in zip(FCM_TOKENS, sorted(recorded, key=lambda r: r.segments()[5]), strict=True):
        assert req.method == "DELETE"
        # /v1/projects/{p}/registrations/{token}/topicSubscriptions/{topic}?allow_missing=true
        assert req.path == (
            f"/v1/projects/{PROJECT}/registrations/"
            f"{urllib.parse.quote(token, safe='')}/topicSubscriptions/{TOPIC}"
        )
        assert req.segments()[5] == token
        assert req.query == {"allow_missing": ["true"]}
        assert req.body == b""


@pytest.mark.parametrize(
    ("subscribe", "path"), [(True, "/iid/v1:batchAdd"), (False, "/iid/v1:batchRemove")]
)
def test_legacy_wire_format(recording, subscribe, path):
    app, recorded = recording
    client = make_client(app, "legacy-iid")

    call = client.subscribe if subscribe else client.unsubscribe
    assert call(FCM_TOKENS, TOPIC).reasons == (None, None)

    [req] = recorded
    assert (req.method, req.path, req.query) == ("POST", path, {})
    assert json.loads(req.body) == {"to": f"/topics/{TOPIC}", "registration_tokens": FCM_TOKENS}
    assert req.headers["access_token_auth"] == "true"


@pytest.mark.parametrize("validate_only", [False, True])
def test_publish_wire_format(recording, validate_only):
    app, recorded = recording

    name = make_client(app, "v1").publish(_message(), validate_only=validate_only)

    assert name == f"projects/{PROJECT}/messages/m-1"
    [req] = recorded
    assert (req.method, req.path) == ("POST", f"/v1/projects/{PROJECT}/messages:send")
    body = json.loads(req.body)
    assert body["message"]["topic"] == TOPIC
    assert body.get("validate_only", False) is validate_only


def test_publish_is_not_resent_when_the_answer_is_lost(recording, recording_server):
    app, recorded = recording
    recording_server.drop_sends = 1

    # What topic-sync needs: the send is attempted once and reported as possibly sent, so
    # publish_once keeps its claim and the message goes out at most once.
    with pytest.raises(PublishError) as info:
        make_client(app, "v1").publish(_message())

    assert info.value.definitely_not_sent is False
    assert len(recorded) == 1


def test_v1_list_wire_format(recording):
    app, recorded = recording
    token = FCM_TOKENS[0]

    assert make_client(app, "v1").list_topics(token) == set()

    [req] = recorded
    assert req.method == "GET"
    # GET /v1/projects/{p}/registrations/{token}/topicSubscriptions?pageSize=2000
    assert req.path == (
        f"/v1/projects/{PROJECT}/registrations/"
        f"{urllib.parse.quote(token, safe='')}/topicSubscriptions"
    )
    assert req.query == {"pageSize": ["2000"]}
    assert req.headers["authorization"] == "Bearer owner"


@pytest.mark.parametrize("token", ["..a:b", "a.", "-_:.9", "x:APA91b-_."])
def test_token_reaches_fcm_whole_as_one_path_segment(client, emulator, token):
    # Dots and colons survive every transport's URL handling unchanged.
    assert client.subscribe([token], TOPIC).reasons == (None,)
    assert emulator.members(TOPIC) == {token}
    assert client.unsubscribe([token], TOPIC).reasons == (None,)
    assert emulator.members(TOPIC) == set()


def test_publish_with_nobody_answering_says_so_and_proves_it_was_not_sent():
    app = initialize_app(
        name=f"dead-{uuid.uuid4().hex}", project_id=PROJECT, emulator_host="127.0.0.1:1"
    )
    try:
        with pytest.raises(PublishError) as info:
            make_client(app, "v1").publish(_message())
    finally:
        firebase_admin.delete_app(app)
    assert "no answer from FCM" in info.value.message
    assert "Connection refused" in info.value.message
    assert "refused the message" not in info.value.message
    assert info.value.definitely_not_sent is True  # the connection was never made
    assert info.value.retryable is False


def test_a_stalled_answer_times_out_instead_of_holding_the_batch(fcm_app, emulator, monkeypatch):
    # A socket that never answers must not hold a batch (and its row locks) for ever.
    from topic_sync.fcm import v1_direct

    monkeypatch.setattr(v1_direct, "HTTP_TIMEOUT_SECONDS", 0.3)
    client = make_client(fcm_app, "v1-direct")
    emulator.set_latency(3.0)
    result = client.subscribe(["tok-slow"], TOPIC)
    assert result.reasons == ("UNKNOWN_ERROR",) and result.proven == (False,)


def test_a_batch_is_sent_by_a_few_senders_not_a_task_per_token(fcm_app, emulator):
    # A thousand tasks queued at once stand between the pacer's turns: the pace stalls. The
    # requests wait in a queue instead, sent by at most `connections` senders.
    import asyncio

    from topic_sync.fcm.v1_direct import V1DirectTopics

    topics = V1DirectTopics(fcm_app, connections=4)
    send = topics._send
    most = 0

    async def counted(*args, **kwargs):
        nonlocal most
        most = max(most, len(asyncio.all_tasks()))
        return await send(*args, **kwargs)

    topics._send = counted
    tokens = [f"tok-{i}" for i in range(200)]
    result = topics.manage(tokens, TOPIC, subscribe=True, give_up_at=None)
    assert result.reasons == (None,) * 200
    assert emulator.members(TOPIC) == set(tokens)
    assert 0 < most <= 4 + 1  # the senders, and the batch waiting for them


def test_v1_direct_opens_ahead_the_connections_its_first_requests_keep_busy(emulator):
    # While a day's plan is made, the connections its first requests need are opened: as
    # many as the pace keeps in flight in its first second, no more than the day's likely
    # requests.
    from topic_sync.fcm.pacer import Pacer, Quota
    from topic_sync.fcm.v1_direct import V1DirectTopics

    pacer = Pacer(1000.0, start=Quota(400.0, measured=True))  # 388/s, just under the quota
    app = initialize_app(
        name=f"test-{uuid.uuid4().hex}",
        project_id="demo-test",
        emulator_host=emulator.host_port,
        pacer=pacer,
    )
    try:
        topics = V1DirectTopics(app)
        topics.warm_up(None)
        assert topics.warming is not None
        assert topics.warming.result(10) == 39  # 388/s for a tenth of a second
        topics.warm_up(None)
        assert topics.warming.result(10) == 0  # they are idle still: none more

        pacer.start_from(None)  # nothing learned: slow start reaches 1000/s within a second
        starting = V1DirectTopics(app)
        starting.warm_up(None)
        assert starting.warming is not None and starting.warming.result(10) == 100

        few = V1DirectTopics(app)
        few.warm_up(5)  # a day of five requests needs five
        assert few.warming is not None and few.warming.result(10) == 5
        tokens = [f"tok-{i}" for i in range(5)]
        result = few.manage(tokens, TOPIC, subscribe=True, give_up_at=None)
        assert result.reasons == (None,) * 5 and emulator.members(TOPIC) == set(tokens)
        assert len(few._pool._idle) == 5  # the requests used those five, opened none
    finally:
        firebase_admin.delete_app(app)


def test_a_fault_in_one_request_ends_its_batch_and_the_next_batch_is_sent(fcm_app, emulator):
    from topic_sync.fcm.v1_direct import V1DirectTopics

    topics = V1DirectTopics(fcm_app, connections=4)
    send = topics._send

    async def faulty(request, *args, **kwargs):
        if b"tok-bad" in request:
            raise RuntimeError("a fault")
        return await send(request, *args, **kwargs)

    topics._send = faulty
    with pytest.raises(RuntimeError, match="a fault"):
        topics.manage(
            ["tok-1", "tok-bad", "tok-2", "tok-bad-too"], TOPIC, subscribe=True, give_up_at=None
        )
    result = topics.manage(["tok-3", "tok-4"], TOPIC, subscribe=True, give_up_at=None)
    assert result.reasons == (None, None)
    assert {"tok-3", "tok-4"} <= emulator.members(TOPIC)


# ------------------------------------------------------------------ successes need evidence

# The menu's shapes for any request, but for the redirect and the cut body (tests below).
STRANGE_2XX = [shape for shape in FOR_EVERY_KIND if shape not in ("redirect", "cut")]


@pytest.mark.parametrize("served", [False, True], ids=["not-served", "served"])
@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
@pytest.mark.parametrize("shape", STRANGE_2XX)
def test_a_2xx_of_no_documented_shape_is_no_verdict(client, emulator, shape, subscribe, served):
    # A proxy's page, an empty body, a JSON error on a 200...: whether or not FCM did the
    # work behind it, nothing proves it did. Never a success, on any transport.
    emulator.subscribe_direct("tok-a", TOPIC)
    emulator.inject_answer(shape, kinds=[_kind(client, subscribe)], served=served)

    call = client.subscribe if subscribe else client.unsubscribe
    result = call(TOKENS, TOPIC)

    assert result.reasons == (UNEXPECTED_ANSWER,) * 3
    assert result.proven == (False,) * 3
    assert result.whole_request is (client.transport == "legacy-iid")


@pytest.mark.parametrize("transport", ["v1", "v1-direct"])  # the legacy API names none
def test_a_subscription_named_for_another_topic_is_no_verdict(fcm_app, emulator, transport):
    client = make_client(fcm_app, transport)
    other = (
        b'{"name":"projects/demo-test/registrations/tok-a/topicSubscriptions/other",'
        b'"topicName":"other","createTime":"2026-11-22T06:00:00Z"}'
    )
    emulator.inject_answer(Canned(200, other), kinds=["subscribe"])
    result = client.subscribe(["tok-a"], TOPIC)
    assert result == BatchResult.of_answers([TokenAnswer(UNEXPECTED_ANSWER, False)])


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_a_redirect_is_never_followed(client, emulator, status, subscribe):
    # requests follows a 302 to another host and turns the POST into a GET: the 200 there
    # would read as a success. No transport follows one, to this host or another.
    with FcmEmulator() as elsewhere:
        location = f"{elsewhere.base_url}/landing"
        redirect = Canned(status, b"", "text/html", (("Location", location),))
        emulator.inject_answer(redirect, kinds=[_kind(client, subscribe)])

        call = client.subscribe if subscribe else client.unsubscribe
        result = call(TOKENS, TOPIC)

        assert result.reasons == (REDIRECTED,) * 3
        assert result.proven == (False,) * 3
        assert elsewhere.stats == {}  # nobody went there
    assert emulator.stats[("landing", 200)] == 0


@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_an_answer_cut_short_is_no_verdict(client, emulator, subscribe):
    emulator.inject_answer("cut", kinds=[_kind(client, subscribe)], served=True)

    call = client.subscribe if subscribe else client.unsubscribe
    result = call(TOKENS, TOPIC)

    assert not any(result.proven)
    assert None not in result.reasons


@pytest.mark.parametrize("shape", [*FOR_BATCHES, "string-error", "json-error"])
@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_a_legacy_answer_not_one_object_per_token_is_a_whole_request_no_verdict(
    fcm_app, emulator, shape, subscribe
):
    # A short list used to confirm the tokens it left out; a long one crashed the run
    # (IndexError), a 200 without `results` aborted it (ValueError). Now: retried like a 5xx.
    client = make_client(fcm_app, "legacy-iid")
    emulator.inject_answer(shape, kinds=[_kind(client, subscribe)], served=True)

    call = client.subscribe if subscribe else client.unsubscribe
    result = call(TOKENS, TOPIC)

    assert result == BatchResult.whole(UNEXPECTED_ANSWER, 3)


@pytest.mark.parametrize("transport", ["v1", "v1-direct"])  # legacy errors carry no details
@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribe", "unsubscribe"])
def test_a_5xx_is_no_verdict_whatever_details_it_carries(fcm_app, emulator, transport, subscribe):
    client = make_client(fcm_app, transport)
    body = (
        b'{"error":{"code":500,"message":"x","status":"INTERNAL","details":[{"@type":'
        b'"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}'
    )
    emulator.inject_answer(Canned(500, body), kinds=[_kind(client, subscribe)])

    call = client.subscribe if subscribe else client.unsubscribe
    result = call(["tok-a"], TOPIC)

    assert result == BatchResult.of_answers([TokenAnswer("UNREGISTERED", False)])


def test_a_bare_404_is_flagged_for_the_engine_on_v1(client, emulator):
    emulator.inject_token_error("tok-b", "NOT_FOUND", op="unsubscribe")

    result = client.unsubscribe(TOKENS, TOPIC)

    assert result.reasons == (None, "NOT_FOUND", None)
    if client.transport == "legacy-iid":  # a per-token result of a batch: evidence outright
        assert result.proven == (True, True, True) and result.bare_not_found == ()
    else:
        assert result.proven == (True, False, True)
        assert result.bare_not_found == (False, True, False)


@pytest.mark.parametrize("shape", ["html", "json-list", "json-error", "string-error", "empty"])
def test_a_topic_list_of_no_documented_shape_is_an_error_not_an_empty_list(client, emulator, shape):
    emulator.subscribe_direct("tok-a", TOPIC)
    emulator.inject_answer(shape, kinds=["list"])

    with pytest.raises(ListError) as info:
        client.list_topics("tok-a")

    assert info.value.retryable and not info.value.not_found


# ------------------------------------------------------------------ publish answers

ODD_SENDS = [
    ("no-name", None),  # {}
    ("json-list", None),  # []
    ("null-name", None),  # {"name": null}
    ("empty", None),
    ("html", None),
    ("text", None),
    ("json-error", None),  # a JSON error object on a 200
    ("string-error", 200),
    ("string-error", 400),  # firebase-admin 7.7 itself raises AttributeError on this one
    ("json-null", 500),  # {"error": null}-like: no Google error format on a 5xx
    ("redirect", None),
    ("cut", None),
]


@pytest.mark.parametrize(("shape", "status"), ODD_SENDS)
def test_an_odd_send_answer_is_an_unknown_outcome_not_a_traceback(client, emulator, shape, status):
    emulator.inject_answer(shape, status=status, kinds=["send"], served=True)

    with pytest.raises(PublishError) as info:
        client.publish(_message())

    assert info.value.definitely_not_sent is False  # the intent to publish stays
    assert info.value.retryable is False
    assert "FCM" in info.value.message
    assert emulator.stats[("landing", 200)] == 0
    assert len(emulator.publishes) == 1  # it did go out: resending would double it


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize(
    "fcm_code", ["THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR", "SENDER_ID_MISMATCH"]
)
def test_a_5xx_send_proves_nothing_whatever_its_details(client, emulator, status, fcm_code):
    # The status class decides before the error code: these used to read as "credentials"
    # (exit 6), which released the publish record, and the plain rerun sent a second time.
    body = (
        f'{{"error":{{"code":{status},"message":"m","status":"INTERNAL","details":[{{"@type":'
        f'"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{fcm_code}"}}]}}}}'
    ).encode()
    emulator.inject_answer(Canned(status, body), kinds=["send"], served=True)

    with pytest.raises(PublishError) as info:
        client.publish(_message())

    assert info.value.definitely_not_sent is False
    assert fcm_code in info.value.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in info.value.message


@pytest.mark.parametrize("fcm_code", ["THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"])
def test_a_third_party_auth_refusal_names_the_apns_or_web_push_credential(
    client, emulator, fcm_code
):
    body = (
        b'{"error":{"code":401,"message":"Auth error from APNS or Web Push Service",'
        b'"status":"UNAUTHENTICATED","details":[{"@type":'
        b'"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"'
        + fcm_code.encode()
        + b'"}]}}'
    )
    emulator.inject_answer(Canned(401, body), kinds=["send"])

    with pytest.raises(PublishError) as info:  # not CredentialsError: ours were accepted
        client.publish(_message())

    assert info.value.definitely_not_sent is True  # a 4xx in Google's format: refused
    assert "APNs certificate or web-push key" in info.value.message
    assert "not topic-sync's service account" in info.value.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in info.value.message
    assert emulator.publishes == []


@pytest.mark.parametrize("status", [500, 503, 504])
def test_a_validation_answered_with_a_5xx_may_be_asked_again(client, emulator, status):
    # validate_only delivers nothing: asking again cannot send the day twice.
    emulator.inject_request_errors(status, count=1, kinds=["send"])

    with pytest.raises(PublishError) as info:
        client.publish(_message(), validate_only=True)

    assert info.value.retryable is True and info.value.definitely_not_sent is False
    assert client.publish(_message(), validate_only=True)
    assert emulator.publishes == []


def test_an_earlier_attempts_answer_never_stands_for_a_request_that_got_none(fcm_app, emulator):
    # A batch's first attempt was answered (and noted beneath the SDK), then the process went
    # on without reading it; the next attempt gets no answer at all. It is no success.
    client = make_client(fcm_app, "v1")
    evidence = mounted_adapter(fcm_app).evidence
    evidence.note(TopicRequest(True, "tok-a", TOPIC), TokenAnswer(None, True))  # the earlier answer

    result = client.subscribe(["tok-a"], TOPIC, give_up_at=time.monotonic() - 1)  # never sent

    assert result.reasons != (None,) and result.proven == (False,)
    assert emulator.stats == {}
    assert evidence.take(TopicRequest(True, "tok-a", TOPIC)) is None
