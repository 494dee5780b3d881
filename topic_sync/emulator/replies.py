"""How the emulator's answers travel: HTTP statuses, Google error bodies, FCM error details.

Why it exists: a client tells an answer about one token from a front end's bare error only by
the answer's shape on the wire (status, Google ``error.status``, FCM's error details), and the
real firebase-admin SDK derives its per-token reason from exactly that shape. The shapes are
defined once, here, and every handler answers through them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from topic_sync.emulator.limits import ERROR_INFO_TYPE, FCM_ERROR_TYPE

JSON = "application/json; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"

# How a per-token reason R travels on the v1 API, chosen so that firebase-admin's
# ``_MessagingService._get_topic_error_code(body, status)`` gives back exactly R:
# R -> (HTTP status, Google ``error.status``, FcmError ``errorCode``), in the shapes FCM
# documents and the official SDK suites replay. FcmError codes are only those FCM has
# (UNSPECIFIED_ERROR, INVALID_ARGUMENT, UNREGISTERED, SENDER_ID_MISMATCH, QUOTA_EXCEEDED,
# UNAVAILABLE, INTERNAL, THIRD_PARTY_AUTH_ERROR), each on the HTTP status FCM's ErrorCode
# reference gives it. NOT_FOUND is the Python suite's bare per-token 404 (Google's error,
# no FcmError detail); RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and the credential codes are
# Google's canonical errors without details.
# A ``None`` Google status means a non-JSON body, from which the SDK derives UNKNOWN_ERROR.
REASON_WIRE: dict[str, tuple[int, str | None, str | None]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    "NOT_FOUND": (404, "NOT_FOUND", None),
    "UNREGISTERED": (404, "NOT_FOUND", "UNREGISTERED"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    "INTERNAL": (500, "INTERNAL", "INTERNAL"),
    "UNAVAILABLE": (503, "UNAVAILABLE", "UNAVAILABLE"),
    "DEADLINE_EXCEEDED": (504, "DEADLINE_EXCEEDED", None),
    "RESOURCE_EXHAUSTED": (429, "RESOURCE_EXHAUSTED", None),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
    "UNAUTHENTICATED": (401, "UNAUTHENTICATED", None),
    "PERMISSION_DENIED": (403, "PERMISSION_DENIED", None),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
    "UNSPECIFIED_ERROR": (500, "UNKNOWN", "UNSPECIFIED_ERROR"),
    "UNKNOWN_ERROR": (502, None, None),
}
# Any other reason R (TOO_MANY_TOPICS, a code FCM may add) is carried as an FcmError detail
# with errorCode R on a 400, the shape of the Python suite's own unknown-code fixture
# (SOME_UNKNOWN_CODE). FCM documents no v1 answer for the 2000-topic limit; this is the
# emulator's stand-in for it. A 4xx keeps the SDK's own transport retries (500/503 only)
# from silently swallowing an injected fault.
_OTHER_REASON_WIRE = (400, "FAILED_PRECONDITION")

# Whole-request failures that can be injected: HTTP status -> Google status (None: a non-JSON
# body, as a proxy in front of FCM would send).
REQUEST_ERROR_STATUS: dict[int, str | None] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: None,
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_MESSAGES = {
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "NOT_FOUND": "Requested entity was not found.",
    "ALREADY_EXISTS": "Topic subscription already exists.",
    "PERMISSION_DENIED": "The caller does not have permission.",
    "UNAUTHENTICATED": "Request had invalid authentication credentials.",
    "RESOURCE_EXHAUSTED": "Quota exceeded for topic management requests.",
    "INTERNAL": "Internal error encountered.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "DEADLINE_EXCEEDED": "The request deadline was exceeded.",
    "FAILED_PRECONDITION": "The request cannot be served in the current state.",
}


class Reply(NamedTuple):
    """One HTTP answer, complete: the HTTP handler only writes it out.

    ``content_type=None`` sends no Content-Type (as the SDK suites' mock adapters answer);
    ``cut=N`` declares the whole body's length, sends its first N bytes and closes the
    connection: an answer cut short.
    """

    status: int
    body: bytes
    content_type: str | None = JSON
    headers: tuple[tuple[str, str], ...] = ()
    cut: int | None = None


@dataclass(frozen=True)
class Later:
    """An answer not ready yet: after ``after`` seconds, ``then`` gives the reply (or another
    Later). ``blocking``: ``then`` may block (a trap's action), so the server runs it in a
    thread of its own instead of on its event loop."""

    then: Callable[[], Reply | Later]
    after: float = 0.0
    blocking: bool = False


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as Google's front ends send it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def google_error(
    code: int, status: str, message: str | None = None, fcm_code: str | None = None
) -> bytes:
    """A Google API error body; with ``fcm_code``, FCM's own error details as well."""
    err: dict[str, Any] = {
        "code": code,
        "message": message or _MESSAGES.get(status, status),
        "status": status,
    }
    if fcm_code:
        err["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return dumps({"error": err})


SERVICE = "fcm.googleapis.com"


def service_disabled_reply(project: str) -> Reply:
    """Google's answer when the Firebase Cloud Messaging API is not enabled for the project:
    a 403 PERMISSION_DENIED whose ErrorInfo says SERVICE_DISABLED (no FCM details)."""
    console = f"https://console.developers.google.com/apis/api/{SERVICE}/overview?project={project}"
    err = {
        "code": 403,
        "message": (
            f"Firebase Cloud Messaging API has not been used in project {project} before or it "
            f"is disabled. Enable it by visiting {console} then retry. If you enabled this API "
            "recently, wait a few minutes for the action to propagate to our systems and retry."
        ),
        "status": "PERMISSION_DENIED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {"description": "Google developers console API activation", "url": console}
                ],
            },
            {
                "@type": ERROR_INFO_TYPE,
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "consumer": f"projects/{project}"},
            },
        ],
    }
    return Reply(403, dumps({"error": err}))


def error_reply(code: int, status: str, message: str | None = None) -> Reply:
    """A Google error without FCM's details: it says nothing about any one token."""
    return Reply(code, google_error(code, status, message))


def legacy_error_reply(code: int, status: str) -> Reply:
    """An Instance ID API error: the status as a bare string, which is how the SDK reads it."""
    return Reply(code, dumps({"error": status}))


def reason_reply(reason: str) -> Reply:
    """The v1 answer for a per-token failure with raw reason ``reason`` (see REASON_WIRE)."""
    wire = REASON_WIRE.get(reason)
    if wire is None:
        code, status = _OTHER_REASON_WIRE
        return Reply(code, google_error(code, status, f"Injected error: {reason}", reason))
    code, google_status, fcm_code = wire
    if google_status is None:
        return Reply(code, b"Bad Gateway", TEXT)
    return Reply(code, google_error(code, google_status, None, fcm_code))


def request_error_reply(status: int, retry_after: int | None, *, legacy: bool) -> Reply:
    """An injected whole-request failure with HTTP ``status`` (a key of REQUEST_ERROR_STATUS)."""
    headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
    google_status = REQUEST_ERROR_STATUS[status]
    if google_status is None:
        return Reply(status, b"Bad Gateway", TEXT, headers)
    if legacy:
        return Reply(status, dumps({"error": google_status}), JSON, headers)
    return Reply(status, google_error(status, google_status), JSON, headers)
