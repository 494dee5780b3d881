"""FCM's own endpoints: v1 topic subscriptions, the legacy Instance ID batch API, messages:send.

Why it exists: this is the service being faked. ``FcmApi.handle`` runs one FCM request through
the same steps every time (latency, traps, whole-request faults, quota, the handler, stats) and
the handlers answer it from ``FcmState`` as FCM would, per-token faults included. Everything
that reads or changes state or faults runs under the emulator's one lock; latency and trap
actions run outside it, so requests overlap and a trap may call back into the emulator. The
latency is a ``Later`` the server waits out without a thread; a trap's action, which may
block, runs in a thread of its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from topic_sync.emulator.faults import Faults
from topic_sync.emulator.limits import MAX_TOKENS_PER_CALL, MAX_TOPICS_PER_TOKEN, TOPIC_NAME_PATTERN
from topic_sync.emulator.replies import (
    Later,
    Reply,
    dumps,
    error_reply,
    google_error,
    legacy_error_reply,
    reason_reply,
    request_error_reply,
    service_disabled_reply,
)
from topic_sync.emulator.routes import LEGACY_KINDS, V1_TOKEN_KINDS, route
from topic_sync.emulator.shapes import Request
from topic_sync.emulator.state import FcmState

MAX_BATCH_TOKENS = MAX_TOKENS_PER_CALL
MAX_MESSAGE_BYTES = 4096
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 2000

_TOKEN_RE = re.compile(r"[A-Za-z0-9_:.-]{1,4096}")
_TOPIC_RE = re.compile(TOPIC_NAME_PATTERN)

Params = dict[str, list[str]]


def _bool_param(values: list[str] | None) -> bool:
    if not values:
        return False
    return values[-1].lower() in ("true", "1")


def _decode_page_token(raw: str) -> str:
    """A page token is the last topic name of the previous page, base64url-encoded."""
    after = base64.b64decode(raw.encode(), altchars=b"-_", validate=True).decode()
    if not after:
        raise ValueError("empty page token")
    return after


def _valid_topic(topic: Any) -> bool:
    return isinstance(topic, str) and _TOPIC_RE.fullmatch(topic) is not None


def _strip_topic_prefix(topic: Any) -> Any:
    if isinstance(topic, str) and topic.startswith("/topics/"):
        return topic[len("/topics/") :]
    return topic


def _subscription_json(project: str, token: str, topic: str, created: str) -> bytes:
    return dumps(
        {
            "name": f"projects/{project}/registrations/{token}/topicSubscriptions/{topic}",
            "topicName": topic,
            "createTime": created,
        }
    )


def _request_tokens(kind: str, args: tuple[str, ...], body: bytes) -> list[str]:
    """The registration tokens a request is about (a v1 path's, a legacy batch's)."""
    if kind in V1_TOKEN_KINDS:
        return [args[1]]
    if kind in LEGACY_KINDS:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return []
        tokens = data.get("registration_tokens") if isinstance(data, dict) else None
        return [t for t in tokens if isinstance(t, str)] if isinstance(tokens, list) else []
    return []


class FcmApi:
    """FCM's request handling over the emulator's state, faults and lock."""

    def __init__(self, lock: threading.Lock, state: FcmState, faults: Faults) -> None:
        self._lock = lock
        self._state = state
        self._faults = faults

    def handle(self, method: str, path: str, query: str, body: bytes) -> Reply | Later:
        """Answer one FCM request (anything outside ``/emulator/``): at once, or after its
        latency (a Later the server waits for without holding a thread)."""
        kind, args = route(method, path)
        if kind == "landing":
            with self._lock:
                self._state.stats[(kind, 200)] += 1
            return Reply(200, b"{}")
        # The quota counts a request when it arrives, as FCM's front door does, not when it
        # is handled after the latency (requests waiting it out are answered bunched).
        arrived = time.monotonic()
        latency = self._faults.latency if kind != "unknown" else 0.0
        return Later(lambda: self._served(kind, args, query, body, arrived), after=latency)

    def _served(
        self, kind: str, args: tuple[str, ...], query: str, body: bytes, arrived: float
    ) -> Reply | Later:
        """The request once its latency has passed. A trap's action may block or call back
        into the emulator, so a request that springs one ends in a thread of its own."""
        params = parse_qs(query) if query else {}
        with self._lock:
            trap = self._faults.take_trap(kind)
        if trap is not None and not trap.after:
            action = trap.action

            def refused() -> Reply:
                action()
                with self._lock:
                    self._state.stats[(kind, 0)] += 1  # never served
                return error_reply(503, "UNAVAILABLE")

            return Later(refused, blocking=True)
        with self._lock:
            reply = self._dispatch(kind, args, params, body, arrived)
            self._state.stats[(kind, reply.status)] += 1
        if trap is not None:
            action = trap.action

            def answered() -> Reply:
                action()
                return reply

            return Later(answered, blocking=True)
        return reply

    # Everything below runs under the lock.

    def _dispatch(
        self, kind: str, args: tuple[str, ...], params: Params, body: bytes, arrived: float
    ) -> Reply:
        if kind == "unknown":
            return error_reply(404, "NOT_FOUND", "Unknown FCM endpoint.")
        if self._faults.api_disabled:
            project = args[0] if kind not in LEGACY_KINDS else "unknown"
            return service_disabled_reply(project)
        fault = self._faults.take_request_error(kind)
        if fault is not None:
            if fault.served:
                self._serve(kind, args, params, body, arrived)
            return request_error_reply(fault.status, fault.retry_after, legacy=kind in LEGACY_KINDS)
        tokens = _request_tokens(kind, args, body)
        odd = self._faults.take_answer(kind, tokens)
        if odd is None:
            return self._serve(kind, args, params, body, arrived)
        if odd.served:
            self._serve(kind, args, params, body, arrived)
        return odd.reply(Request(kind, len(tokens)))

    def _serve(
        self, kind: str, args: tuple[str, ...], params: Params, body: bytes, arrived: float
    ) -> Reply:
        if kind in V1_TOKEN_KINDS:
            refused = self._faults.take_quota(1, arrived=arrived)
            if refused is not None:
                return refused
            if kind == "subscribe":
                topics = params.get("topic_name") or params.get("topicName")
                return self._v1_subscribe(args[0], args[1], topics[-1] if topics else None)
            if kind == "unsubscribe":
                return self._v1_unsubscribe(
                    args[1],
                    args[2],
                    _bool_param(params.get("allow_missing") or params.get("allowMissing")),
                )
            if kind == "get":
                return self._v1_get(args[0], args[1], args[2])
            return self._v1_list(args[0], args[1], params)
        if kind in LEGACY_KINDS:
            return self._legacy(kind == "batchAdd", body, arrived)
        return self._send(args[0], body)

    def _token_problem(self, token: str, op: str, *, legacy: bool = False) -> str | None:
        """The reason ``op`` on ``token`` fails before subscriptions are looked at, if any.

        A dead token is NOT_FOUND on the legacy API and UNREGISTERED (FCM's error code) on v1.
        """
        reason = self._faults.take_token_fault(token, op)
        if reason is not None:
            return reason
        if _TOKEN_RE.fullmatch(token) is None:
            return "INVALID_ARGUMENT"
        if token in self._state.unregistered:
            return "NOT_FOUND" if legacy else "UNREGISTERED"
        return None

    # ----------------------------------------------------------------- v1 API

    def _v1_subscribe(self, project: str, token: str, topic: str | None) -> Reply:
        if topic is None or not _valid_topic(topic):
            return error_reply(400, "INVALID_ARGUMENT", "Invalid or missing topic_name.")
        problem = self._token_problem(token, "subscribe")
        if problem is not None:
            return reason_reply(problem)
        topics = self._state.subs.get(token)
        if topics is not None:
            if topic in topics:
                return error_reply(409, "ALREADY_EXISTS")
            if len(topics) >= MAX_TOPICS_PER_TOKEN:
                return reason_reply("TOO_MANY_TOPICS")
        created = self._state.add(token, topic, time.time())
        return Reply(200, _subscription_json(project, token, topic, created))

    def _v1_unsubscribe(self, token: str, topic: str, allow_missing: bool) -> Reply:
        if not _valid_topic(topic):
            return error_reply(400, "INVALID_ARGUMENT", "Invalid topic name.")
        problem = self._token_problem(token, "unsubscribe")
        if problem is not None:
            return reason_reply(problem)
        if not self._state.remove(token, topic) and not allow_missing:
            return error_reply(404, "NOT_FOUND", "Topic subscription not found.")
        return Reply(200, b"{}")

    def _v1_lookup_problem(self, token: str) -> Reply | None:
        """Reads (get, list) meet no injected faults, only bad and dead tokens."""
        if _TOKEN_RE.fullmatch(token) is None:
            return reason_reply("INVALID_ARGUMENT")
        if token in self._state.unregistered:
            return reason_reply("UNREGISTERED")
        return None

    def _v1_get(self, project: str, token: str, topic: str) -> Reply:
        problem = self._v1_lookup_problem(token)
        if problem is not None:
            return problem
        created = self._state.subs.get(token, {}).get(topic)
        if created is None:
            return error_reply(404, "NOT_FOUND", "Topic subscription not found.")
        return Reply(200, _subscription_json(project, token, topic, created))

    def _v1_list(self, project: str, token: str, params: Params) -> Reply:
        problem = self._v1_lookup_problem(token)
        if problem is not None:
            return problem
        raw_size = (params.get("pageSize") or params.get("page_size") or ["0"])[-1]
        raw_page = (params.get("pageToken") or params.get("page_token") or [""])[-1]
        try:
            size = int(raw_size)
            after = _decode_page_token(raw_page) if raw_page else None
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return error_reply(400, "INVALID_ARGUMENT", "Invalid pageSize or pageToken.")
        if size < 0:
            return error_reply(400, "INVALID_ARGUMENT", "pageSize must not be negative.")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        subs = self._state.subs.get(token, {})
        # Paging by name (not offset) keeps pages stable while subscriptions change.
        names = sorted(t for t in subs if after is None or t > after)
        page = names[:size]
        out: dict[str, Any] = {}
        if page:
            prefix = f"projects/{project}/registrations/{token}/topicSubscriptions/"
            out["topicSubscriptions"] = [
                {"name": prefix + t, "topicName": t, "createTime": subs[t]} for t in page
            ]
        if len(names) > size:
            out["nextPageToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return Reply(200, dumps(out))

    # ----------------------------------------------------------------- legacy batch API

    def _legacy(self, add: bool, body: bytes, arrived: float) -> Reply:
        bad = legacy_error_reply(400, "INVALID_ARGUMENT")
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return bad
        if not isinstance(data, dict):
            return bad
        topic = _strip_topic_prefix(data.get("to"))
        tokens = data.get("registration_tokens")
        if (
            not _valid_topic(topic)
            or not isinstance(tokens, list)
            or not 1 <= len(tokens) <= MAX_BATCH_TOKENS
            or not all(isinstance(t, str) and t for t in tokens)
        ):
            return bad
        refused = self._faults.take_quota(len(tokens), legacy=True, arrived=arrived)
        if refused is not None:
            return refused
        op = "subscribe" if add else "unsubscribe"
        now = time.time()
        results: list[dict[str, str]] = []
        for token in tokens:
            problem = self._token_problem(token, op, legacy=True)
            if problem is None and add:
                topics = self._state.subs.get(token)
                if topics is None or topic not in topics:
                    if topics is not None and len(topics) >= MAX_TOPICS_PER_TOKEN:
                        problem = "TOO_MANY_TOPICS"
                    else:
                        self._state.add(token, topic, now)
            elif problem is None:
                self._state.remove(token, topic)
            results.append({} if problem is None else {"error": problem})
        return Reply(200, dumps({"results": results}))

    # ----------------------------------------------------------------- messages:send

    def _send(self, project: str, body: bytes) -> Reply:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return error_reply(400, "INVALID_ARGUMENT", "Invalid JSON payload.")
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            return error_reply(400, "INVALID_ARGUMENT", "A message is required.")
        if message.get("condition"):
            return error_reply(
                400, "INVALID_ARGUMENT", "condition targets are not supported by this emulator"
            )
        targets = [k for k in ("topic", "token") if message.get(k)]
        if len(targets) != 1:
            return error_reply(
                400, "INVALID_ARGUMENT", "Exactly one of topic or token is required."
            )
        if len(dumps(message)) > MAX_MESSAGE_BYTES:
            return error_reply(400, "INVALID_ARGUMENT", "Message is too big.")
        topic: str | None = None
        if targets[0] == "topic":
            topic = _strip_topic_prefix(message["topic"])
            if not _valid_topic(topic):
                return error_reply(400, "INVALID_ARGUMENT", "Invalid topic name.")
            recipients = frozenset(self._state.members.get(topic, ()))
        else:
            token = message["token"]
            if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
                return error_reply(400, "INVALID_ARGUMENT", "Invalid registration token.")
            if token in self._state.unregistered:
                return Reply(404, google_error(404, "NOT_FOUND", None, "UNREGISTERED"))
            recipients = frozenset((token,))
        validate_only = data.get("validate_only") is True
        message_id = self._state.record_send(
            topic, message, recipients, validate_only=validate_only
        )
        return Reply(200, dumps({"name": f"projects/{project}/messages/{message_id}"}))
