"""What an FCM answer proves: the documented success shapes, and which errors are about a token.

A success is a claim like an error, so it needs the same evidence. Every transport reads its
raw answers here (the SDK path through the adapter beneath firebase-admin, the direct path from
its own connection), so the rule is one rule. What counts:

* v1 subscribe (POST): HTTP 200 with a JSON object that is either empty (firebase-admin's own
  success fixture) or names this very subscription (the TopicSubscription resource of the
  discovery document: `topicName` / `topic_name` equal to the topic, or a `name` ending in
  `/topicSubscriptions/{topic}`), and carries no `error`; or HTTP 409 with a Google error whose
  status is ALREADY_EXISTS (already subscribed).
* v1 unsubscribe (DELETE): HTTP 200 with exactly the empty JSON object (`Empty`).
* v1 errors: only a 4xx carrying FCM's error details (an FcmError with an error code) is about
  the token. A bare 404 NOT_FOUND (Google's error, no details: a fixture of the Python SDK's
  suite, and also what a front end answers for a route it does not know) is flagged: the engine
  believes it only on an endpoint it has seen answer per token (engine/drain.py).
* legacy batch (IID): HTTP 200 with a JSON object whose `results` is a list of exactly one JSON
  object per token sent, each `{}` or `{"error": "<code>"}`; anything else is no evidence about
  any token of the batch.
* send: HTTP 200 with a JSON object whose `name` is a non-empty string without blanks (FCM
  documents `projects/*/messages/{id}`; the Python suite's own success fixture names
  `message-id`, so the format itself is not required).

Anything else (another 2xx, HTML, an empty or cut body, plain text, JSON that is not an object,
a JSON error on a 2xx, a redirect, a 5xx whatever its details) proves nothing: no verdict.
Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from topic_sync.fcm.wire import FCM_ERROR_TYPE

UNEXPECTED_ANSWER = "UNEXPECTED_ANSWER"
"""The raw reason of an answer of no documented shape (an HTML page, an empty body, a JSON
error on a 2xx, a legacy `results` that is not one object per token): no verdict."""

REDIRECTED = "REDIRECTED"
"""The raw reason of a 3xx: never followed, and no verdict."""

NO_ANSWER = "UNKNOWN_ERROR"
"""The raw reason of a request that got no complete answer (as firebase-admin reports one)."""

ErrorCode = Callable[[dict[str, Any], int], str]
"""How a v1 error body and HTTP status read as a raw reason (firebase-admin's own reading)."""

_MESSAGE_NAME = re.compile(r"\S+")


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer as it arrived: status, body (None: cut short) and Location, if any."""

    status: int
    body: bytes | None
    location: str | None = None

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    def json(self) -> Any:
        """The body as JSON, or None when it is none (not JSON, empty, cut)."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def describe(self) -> str:
        """For people: the status and the start of the body."""
        if self.redirect:
            return f"HTTP {self.status} redirect to {self.location or '(no Location)'}"
        if self.body is None:
            return f"HTTP {self.status}, body cut short"
        text = self.body[:120].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}, body {text!r}" if text else f"HTTP {self.status}, empty body"


@dataclass(frozen=True)
class TokenAnswer:
    """One token's v1 answer: raw reason (None: success), whether it is about the token, and
    whether it is a bare 404 NOT_FOUND (a verdict only on a proven endpoint)."""

    reason: str | None
    proven: bool
    bare_not_found: bool = False


def has_fcm_details(body: object) -> bool:
    """Whether a v1 error body carries FCM's own error details (an FcmError with a code).

    FCM says what is wrong with a registration in those details; a front end (an API not
    enabled, a route not found) answers in Google's error format without them.
    """
    return fcm_error_code(body) is not None


def fcm_error_code(body: object) -> str | None:
    """The FcmError `errorCode` of a Google error body, if it has one."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            if isinstance(code, str) and code:
                return code
    return None


def google_error(body: object) -> dict[str, Any] | None:
    """The `error` object of Google's error format (with a string `status`), if it is one."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("status"), str):
        return error
    return None


def _names_topic(body: dict[str, Any], topic: str) -> bool:
    """Whether a TopicSubscription body names `topic` and nothing contradicts it."""
    named = False
    for key in ("topicName", "topic_name"):
        if key in body:
            if body[key] != topic:
                return False
            named = True
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or "/topicSubscriptions/" not in name:
            return False
        if name.rsplit("/topicSubscriptions/", 1)[1] != topic:
            return False
        named = True
    for key in ("createTime", "create_time"):
        if key in body and not isinstance(body[key], str):
            return False
    return named


def is_topic_success(answer: RawAnswer, *, subscribe: bool, topic: str) -> bool:
    """Whether a v1 answer is the documented success for this subscribe or unsubscribe."""
    body = answer.json()
    if subscribe and answer.status == 409:
        error = google_error(body)
        return error is not None and error["status"] == "ALREADY_EXISTS"
    if answer.status != 200 or not isinstance(body, dict) or "error" in body:
        return False
    if not subscribe:
        return body == {}
    return body == {} or _names_topic(body, topic)


def _bare_not_found(answer: RawAnswer, body: object) -> bool:
    error = google_error(body)
    return (
        answer.status == 404
        and error is not None
        and error["status"] == "NOT_FOUND"
        and error.get("code", 404) == 404
        and not has_fcm_details(body)
    )


def read_topic_answer(
    answer: RawAnswer, *, subscribe: bool, topic: str, error_code: ErrorCode
) -> TokenAnswer:
    """One v1 subscribe or unsubscribe answer, read by the evidence rule (module docstring)."""
    if answer.body is None:
        return TokenAnswer(NO_ANSWER, False)
    if is_topic_success(answer, subscribe=subscribe, topic=topic):
        return TokenAnswer(None, True)
    if answer.redirect:
        return TokenAnswer(REDIRECTED, False)
    if 200 <= answer.status < 300:
        return TokenAnswer(UNEXPECTED_ANSWER, False)
    body = answer.json()
    reason = error_code(body if isinstance(body, dict) else {}, answer.status)
    # The status class decides first: a 5xx (or anything but a 4xx) proves nothing about the
    # token, whatever details it carries.
    proven = 400 <= answer.status < 500 and has_fcm_details(body)
    return TokenAnswer(reason, proven, not proven and _bare_not_found(answer, body))


def read_batch_answer(answer: RawAnswer, tokens: Sequence[str]) -> list[str | None] | None:
    """The per-token reasons (None: success) of a legacy batch answer, or None when the answer
    is not per-token evidence: not a 200, not a JSON object, an `error` beside or instead of
    `results`, or `results` not exactly one `{}` / `{"error": "<code>"}` per token sent."""
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict) or "error" in body:
        return None
    results = body.get("results")
    if not isinstance(results, list) or len(results) != len(tokens):
        return None
    reasons: list[str | None] = []
    for result in results:
        if not isinstance(result, dict):
            return None
        if "error" not in result:
            reasons.append(None)
            continue
        error = result["error"]
        if not isinstance(error, str) or not error.strip():
            return None
        reasons.append(error)
    return reasons


def message_name(answer: RawAnswer) -> str | None:
    """The message's resource name in a send answer of the documented success shape."""
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict) or "error" in body:
        return None
    name = body.get("name")
    if isinstance(name, str) and _MESSAGE_NAME.fullmatch(name):
        return name
    return None
