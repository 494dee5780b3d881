"""How the emulator's answers travel: HTTP statuses, Google error bodies, FCM error details.

Why it exists: a client tells an answer about one token from a front end's bare error only by
the answer's shape on the wire (status, Google ``error.status``, FCM's error details), and the
real firebase-admin SDK derives its per-token reason from exactly that shape. The shapes are
defined once, here, and every handler answers through them.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from topic_sync.fcm.wire import ERROR_INFO_TYPE, FCM_ERROR_TYPE

JSON = "application/json; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"

# How a per-token reason R travels on the v1 API, chosen so that firebase-admin's
# ``_MessagingService._get_topic_error_code(body, status)`` gives back exactly R:
# R -> (HTTP status, Google ``error.status``, FcmError ``errorCode``).
# An answer about a token carries FCM's error details (the FcmError ``errorCode``), as FCM
# does: that is what lets a client tell it from a front end's bare 404 or 400. Quota and
# server errors may come without details; they are retried either way.
# A ``None`` Google status means a non-JSON body, from which the SDK derives UNKNOWN_ERROR.
REASON_WIRE: dict[str, tuple[int, str | None, str | None]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    "NOT_FOUND": (404, "NOT_FOUND", "NOT_FOUND"),
    "UNREGISTERED": (404, "NOT_FOUND", "UNREGISTERED"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    "INTERNAL": (500, "INTERNAL", None),
    "UNAVAILABLE": (503, "UNAVAILABLE", None),
    "DEADLINE_EXCEEDED": (504, "DEADLINE_EXCEEDED", None),
    "TOO_MANY_TOPICS": (400, "FAILED_PRECONDITION", "TOO_MANY_TOPICS"),
    "RESOURCE_EXHAUSTED": (429, "RESOURCE_EXHAUSTED", None),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
    "UNAUTHENTICATED": (401, "UNAUTHENTICATED", None),
    "PERMISSION_DENIED": (403, "PERMISSION_DENIED", None),
    "UNKNOWN_ERROR": (502, None, None),
}
# Any other reason is carried as an FcmError detail on a 400: a 4xx keeps the SDK's own
# transport retries (500/503 only) from silently swallowing an injected fault.
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
    """One HTTP answer, complete: the HTTP handler only writes it out."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


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
