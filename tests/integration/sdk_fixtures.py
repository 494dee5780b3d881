"""The conformance corpus: every answer shape the official Admin SDK suites replay for topic
management and send, each with the verdict topic-sync must reach.

The shapes are facts taken from the suites (status, body bytes as each suite serialises them,
Content-Type as it would travel); the corpus, its grouping and its verdicts are topic-sync's.
Sources, each cited per entry as `suite:test`:

* PY: firebase-admin-python 7.7.0, `tests/test_messaging.py` (MockAdapter: no Content-Type;
  bodies from `json.dumps`, so `", "` and `": "` separators);
* NODE: firebase-admin-node 14.3.0, `test/unit/messaging/messaging.spec.ts` (nock: objects as
  `JSON.stringify`, errors with the Content-Type the suite sets);
* GO: firebase-admin-go, `messaging/topic_mgt_test.go` (httptest; where the test sets the
  Content-Type after WriteHeader, the header is not sent and Go sniffs `text/plain`).

Verdicts, per token for topic management: `confirmed` (the operation is recorded done),
`dead` (FCM said the token is gone: recorded and marked), `refused:CODE` (a subscribe failed
for good, not dead), `retried:CODE` (owed and retried, with that error-table code), `stop`
(credentials: the run stops), `dead-once-proven` (a bare 404: no verdict on an unproven
endpoint, dead on a proven one). For send: `sent`, `refused`, `refused-retryable`,
`refused-third-party` (the APNs / web-push credential), `credentials`, `unknown` (the intent
to publish is kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PY = "firebase-admin-python 7.7.0 tests/test_messaging.py"
NODE = "firebase-admin-node 14.3.0 test/unit/messaging/messaging.spec.ts"
GO = "firebase-admin-go messaging/topic_mgt_test.go"

JSON_UTF8 = "application/json; charset=UTF-8"  # what the Node suite sets for JSON errors
HTML_UTF8 = "text/html; charset=UTF-8"  # what the Node suite sets for text errors
NOCK_JSON = "application/json"  # nock's own, for an object reply
GO_SNIFFED = "text/plain; charset=utf-8"  # Go's guess when the test's header comes too late

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


@dataclass(frozen=True)
class TopicShape:
    """An answer to a v1 topic request (`api="v1"`) or a legacy batch (`api="iid"`).

    `tokens` is how many tokens the source test's request carried; `verdicts` gives, per
    operation it applies to, the verdict for each of them.
    """

    source: str
    api: str
    status: int
    body: bytes
    content_type: str | None
    verdicts: dict[str, tuple[str, ...]]
    tokens: int = 1

    @property
    def id(self) -> str:
        return f"{self.source.split(' ', 1)[0]}:{self.source.rsplit('::', 1)[-1]}"


@dataclass(frozen=True)
class SendShape:
    """An answer to messages:send, with the outcome a publish must have."""

    source: str
    status: int
    body: bytes
    content_type: str | None
    verdict: str
    id_suffix: str = field(default="")

    @property
    def id(self) -> str:
        name = self.source.rsplit("::", 1)[-1]
        return f"{self.source.split(' ', 1)[0]}:{name}{self.id_suffix}"


def _both(*verdicts: str) -> dict[str, tuple[str, ...]]:
    return {"subscribe": verdicts, "unsubscribe": verdicts}


# ------------------------------------------------------------------ v1 topic subscriptions (PY)

_PY_V1 = f"{PY}::TestTopicManagement"
_SOME_MESSAGE = b'{"error": {"message": "Some message"}}'

V1_SHAPES: list[TopicShape] = [
    TopicShape(
        f"{_PY_V1}::test_subscribe_to_topic_single",
        "v1",
        200,
        b"{}",
        None,
        {"subscribe": ("confirmed",)},
    ),
    TopicShape(
        f"{_PY_V1}::test_unsubscribe_from_topic_single",
        "v1",
        200,
        b"{}",
        None,
        {"unsubscribe": ("confirmed",)},
    ),
    TopicShape(
        f"{_PY_V1}::test_subscribe_to_topic_already_exists_409",
        "v1",
        409,
        b'{"error": {"status": "ALREADY_EXISTS", "message": "Already exists"}}',
        None,
        {"subscribe": ("confirmed",)},
    ),
    # The bare per-token 404: Google's error without FCM's details.
    TopicShape(
        f"{_PY_V1}::test_unsubscribe_from_topic_not_found_404",
        "v1",
        404,
        b'{"error": {"status": "NOT_FOUND", "message": "Not found"}}',
        None,
        _both("dead-once-proven"),
    ),
    TopicShape(
        f"{_PY_V1}::test_topic_management_multiple_tokens",
        "v1",
        404,
        b'{"error": {"status": "NOT_FOUND"}}',
        None,
        _both("dead-once-proven"),
    ),
    TopicShape(
        f"{_PY_V1}::test_topic_management_fcm_error_details",
        "v1",
        404,
        b'{"error": {"status": "NOT_FOUND", "details": [{"@type": '
        b'"type.googleapis.com/google.firebase.fcm.v1.FcmError", '
        b'"errorCode": "UNREGISTERED"}]}}',
        None,
        _both("dead"),
    ),
    TopicShape(
        f"{_PY_V1}::test_topic_management_500_error",
        "v1",
        500,
        b'{"error": null}',
        None,
        _both("retried:internal-error"),
    ),
    # INVALID_ARGUMENT derived from the status alone: not FCM's word about the token.
    TopicShape(
        f"{_PY_V1}::test_topic_management_non_json_error",
        "v1",
        400,
        b"not json",
        None,
        _both("retried:no-verdict"),
    ),
    *(
        TopicShape(
            f"{_PY_V1}::test_topic_management_status_code_mapping",
            "v1",
            status,
            _SOME_MESSAGE,
            None,
            _both(verdict),
        )
        for status, verdict in (
            (401, "stop"),
            (403, "stop"),
            (408, "retried:internal-error"),
            (429, "retried:rate-limited"),
            (503, "retried:internal-error"),
            (504, "retried:internal-error"),
        )
    ),
    TopicShape(
        f"{PY}::TestTimeout::test_topic_management_custom_timeout",
        "v1",
        200,
        b"{}",
        None,
        {"subscribe": ("confirmed",)},
    ),
]


# ------------------------------------------------------------------ legacy batches (PY, NODE, GO)

_PY_IID = f"{PY}::TestTopicManagementLegacy"
_PY_RESULTS = b'{"results": [{}, {"error": "error_reason"}]}'
_PY_IID_ERROR = b'{"error": "error_reason"}'
# The suites' HTTP_ERROR_CODES (PY) and STATUS_CODE_TO_ERROR_MAP (NODE), for a whole batch:
# only the credential statuses stop; nothing else is about any token.
_WHOLE = {
    400: "retried:no-verdict",  # INVALID_ARGUMENT, unproven
    401: "stop",
    403: "stop",
    404: "retried:no-verdict",  # NOT_FOUND, unproven
    500: "retried:internal-error",
    503: "retried:internal-error",
}


def _results(count: int, *errors: str) -> bytes:
    """A Node-style (JSON.stringify) results body: `count` successes, then the errors."""
    items = ["{}"] * count + [f'{{"error":"{error}"}}' for error in errors]
    return ('{"results":[' + ",".join(items) + "]}").encode()


IID_SHAPES: list[TopicShape] = [
    TopicShape(
        f"{_PY_IID}::test_subscribe_to_topic_legacy",
        "iid",
        200,
        _PY_RESULTS,
        None,
        {"subscribe": ("confirmed", "retried:unknown-error")},
        tokens=2,
    ),
    TopicShape(
        f"{_PY_IID}::test_unsubscribe_from_topic_legacy",
        "iid",
        200,
        _PY_RESULTS,
        None,
        {"unsubscribe": ("confirmed", "retried:unknown-error")},
        tokens=2,
    ),
    # The same answer to the suite's one-token request: two results for one token.
    TopicShape(
        f"{_PY_IID}::test_subscribe_to_topic_legacy",
        "iid",
        200,
        _PY_RESULTS,
        None,
        _both("retried:no-verdict"),
        tokens=1,
    ),
    TopicShape(
        f"{PY}::TestTimeout::test_topic_management_legacy_custom_timeout",
        "iid",
        200,
        _PY_RESULTS,
        None,
        _both("retried:no-verdict"),
        tokens=1,
    ),
    *(
        TopicShape(f"{_PY_IID}::{test}", "iid", status, body, None, _both(verdict))
        for test, body in (
            ("test_subscribe_to_topic_legacy_error", _PY_IID_ERROR),
            ("test_subscribe_to_topic_legacy_non_json_error", b"not json"),
        )
        for status, verdict in _WHOLE.items()
        if status != 401  # not among the suite's HTTP_ERROR_CODES
    ),
    *(
        TopicShape(
            f"{NODE}::should be fulfilled given a valid {what}",
            "iid",
            200,
            _results(count),
            NOCK_JSON,
            _both(*("confirmed",) * count),
            tokens=count,
        )
        for what, count in (("registration token and topic", 1), ("array of tokens", 3))
    ),
    TopicShape(
        f"{NODE}::should be rejected given an array containing more than 1,000 registration tokens",
        "iid",
        200,
        _results(1000),
        NOCK_JSON,
        _both(*("confirmed",) * 1000),
        tokens=1000,
    ),
    TopicShape(
        f"{NODE}::should be fulfilled with the server response given an array of "
        "registration tokens",
        "iid",
        200,
        _results(1, "TOO_MANY_TOPICS", "TOO_MANY_TOPICS"),
        NOCK_JSON,
        {
            "subscribe": ("confirmed", "refused:too-many-topics", "refused:too-many-topics"),
            "unsubscribe": ("confirmed", "retried:too-many-topics", "retried:too-many-topics"),
        },
        tokens=3,
    ),
    # A 200 without `results`: the Node SDK rejects it; it is about no token.
    TopicShape(
        f"{NODE}::should be rejected given a 200 JSON server response with a known error",
        "iid",
        200,
        b'{"error":"NotRegistered"}',
        JSON_UTF8,
        _both("retried:no-verdict"),
    ),
    TopicShape(
        f"{NODE}::should be rejected given a 200 JSON server response with an unknown error",
        "iid",
        200,
        b'{"error":"Unknown"}',
        JSON_UTF8,
        _both("retried:no-verdict"),
    ),
    TopicShape(
        f"{NODE}::should be rejected given a non-2xx JSON server response",
        "iid",
        400,
        b'{"error":"NotRegistered"}',
        JSON_UTF8,
        _both("retried:no-verdict"),
    ),
    TopicShape(
        f"{NODE}::should be rejected given a non-2xx JSON server response with an unknown error",
        "iid",
        400,
        b'{"error":"Unknown"}',
        JSON_UTF8,
        _both("retried:no-verdict"),
    ),
    TopicShape(
        f"{NODE}::should be rejected given a non-2xx JSON server response without an error",
        "iid",
        400,
        b'{"foo":"bar"}',
        JSON_UTF8,
        _both("retried:no-verdict"),
    ),
    *(
        TopicShape(
            f"{NODE}::should be rejected given a {status} text server response",
            "iid",
            status,
            b"Some text error",
            HTML_UTF8,
            _both(verdict),
        )
        for status, verdict in {200: "retried:no-verdict", **_WHOLE}.items()
    ),
    TopicShape(
        f"{GO}::TestSubscribe",
        "iid",
        200,
        b'{"results": [{}, {"error": "error_reason"}]}',
        "application/json",
        {"subscribe": ("confirmed", "retried:unknown-error")},
        tokens=2,
    ),
    TopicShape(
        f"{GO}::TestUnsubscribe",
        "iid",
        200,
        b'{"results": [{}, {"error": "error_reason"}]}',
        "application/json",
        {"unsubscribe": ("confirmed", "retried:unknown-error")},
        tokens=2,
    ),
    TopicShape(
        f"{GO}::TestTopicManagementError/EmptyResponse",
        "iid",
        500,
        b"{}",
        GO_SNIFFED,
        _both("retried:internal-error"),
    ),
    TopicShape(
        f"{GO}::TestTopicManagementError/ErrorCode",
        "iid",
        400,
        b'{"error": "INVALID_ARGUMENT"}',
        GO_SNIFFED,
        _both("retried:no-verdict"),
    ),
    TopicShape(
        f"{GO}::TestTopicManagementError/NotJson",
        "iid",
        500,
        b"not json",
        GO_SNIFFED,
        _both("retried:internal-error"),
    ),
]


# ------------------------------------------------------------------ send (PY, NODE)

_PY_SEND = f"{PY}::TestSend"
_PY_STATUSES = (400, 403, 404, 500, 503)  # the suite's HTTP_ERROR_CODES


def _py_error(status: str, fcm: str | None = None) -> bytes:
    details = f', "details": [{{"@type": "{FCM_ERROR}", "errorCode": "{fcm}"}}]' if fcm else ""
    return f'{{"error": {{"status": "{status}", "message": "test error"{details}}}}}'.encode()


def _node_error(status: str, fcm: str | None = None) -> bytes:
    details = f',"details":[{{"@type":"{FCM_ERROR}","errorCode":"{fcm}"}}]' if fcm else ""
    return f'{{"error":{{"status":"{status}","message":"test error message"{details}}}}}'.encode()


def _refused_on_4xx(status: int, refusal: str) -> str:
    """The status class decides first: a 5xx proves nothing, whatever it says."""
    return refusal if status < 500 else "unknown"


_PY_FCM_CODES = {
    "APNS_AUTH_ERROR": "refused-third-party",
    "QUOTA_EXCEEDED": "refused",  # on 400/403/404: refused, but not the 429 that may retry
    "SENDER_ID_MISMATCH": "credentials",
    "THIRD_PARTY_AUTH_ERROR": "refused-third-party",
    "UNREGISTERED": "refused",
}

SEND_SHAPES: list[SendShape] = [
    SendShape(f"{_PY_SEND}::test_send", 200, b'{"name": "message-id"}', None, "sent"),
    SendShape(f"{PY}::TestTimeout::test_send", 200, b'{"name": "message-id"}', None, "sent"),
    # A body of `{}` is not Google's error format: nothing proves FCM refused it.
    *(
        SendShape(f"{_PY_SEND}::test_send_error", status, b"{}", None, "unknown", f"[{status}]")
        for status in _PY_STATUSES
    ),
    *(
        SendShape(
            f"{_PY_SEND}::test_send_detailed_error",
            status,
            _py_error("INVALID_ARGUMENT"),
            None,
            _refused_on_4xx(status, "refused"),
            f"[{status}]",
        )
        for status in _PY_STATUSES
    ),
    *(
        SendShape(
            f"{_PY_SEND}::test_send_canonical_error_code",
            status,
            _py_error("NOT_FOUND"),
            None,
            _refused_on_4xx(status, "refused"),
            f"[{status}]",
        )
        for status in _PY_STATUSES
    ),
    *(
        SendShape(
            f"{_PY_SEND}::test_send_fcm_error_code",
            status,
            _py_error("INVALID_ARGUMENT", code),
            None,
            _refused_on_4xx(status, verdict),
            f"[{status}-{code}]",
        )
        for status in _PY_STATUSES
        for code, verdict in _PY_FCM_CODES.items()
    ),
    *(
        SendShape(
            f"{_PY_SEND}::test_send_unknown_fcm_error_code",
            status,
            _py_error("INVALID_ARGUMENT", "SOME_UNKNOWN_CODE"),
            None,
            _refused_on_4xx(status, "refused"),
            f"[{status}]",
        )
        for status in _PY_STATUSES
    ),
    SendShape(
        f"{NODE}::should be fulfilled with a message ID given a valid message",
        200,
        b'{"name":"projects/projec_id/messages/message_id"}',
        NOCK_JSON,
        "sent",
    ),
    SendShape(
        f"{NODE}::should fail when the backend server returns a detailed error",
        400,
        _node_error("INVALID_ARGUMENT"),
        JSON_UTF8,
        "refused",
    ),
    SendShape(
        f"{NODE}::should fail when the backend server returns a detailed error with FCM error code",
        404,
        _node_error("INVALID_ARGUMENT", "UNREGISTERED"),
        JSON_UTF8,
        "refused",
    ),
    SendShape(
        f"{NODE}::should fail when the backend server returns a detailed error for a FID target",
        404,
        _node_error("NOT_FOUND", "UNREGISTERED"),
        JSON_UTF8,
        "refused",
    ),
    *(
        SendShape(
            f"{NODE}::should map {code} to third party auth error",
            404,
            _node_error("INVALID_ARGUMENT", code),
            JSON_UTF8,
            "refused-third-party",
        )
        for code in ("THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR")
    ),
    SendShape(
        f"{NODE}::should map server error code to client-side error",
        404,
        _node_error("NOT_FOUND"),
        JSON_UTF8,
        "refused",
    ),
    # An `error` that is a bare string: firebase-admin-python 7.7 raises AttributeError on it.
    SendShape(
        f"{NODE}::should fail when the backend server returns an unknown error",
        400,
        b'{"error":"test error message"}',
        JSON_UTF8,
        "unknown",
    ),
    SendShape(
        f"{NODE}::should fail when the backend server returns a non-json error",
        400,
        b"foo bar",
        HTML_UTF8,
        "unknown",
    ),
]
