"""A local, in-memory fake of Firebase Cloud Messaging (FCM).

Why it exists: topic-sync must be tested end to end (the real firebase-admin SDK, real HTTP,
real concurrency) against FCM's per-token errors, whole-request failures and rate limits,
none of which can be provoked on demand against Google. The emulator serves the same paths
as ``https://fcm.googleapis.com`` and ``https://iid.googleapis.com``:

* v1 topic subscription API (one request per token):
  ``POST|GET /v1/projects/{p}/registrations/{token}/topicSubscriptions`` and
  ``GET|DELETE /v1/projects/{p}/registrations/{token}/topicSubscriptions/{topic}``;
* legacy Instance ID batch API: ``POST /iid/v1:batchAdd`` and ``POST /iid/v1:batchRemove``;
* ``POST /v1/projects/{p}/messages:send``, which records every publish together with the
  tokens subscribed to the topic at that instant, so tests can check for misdelivery.

Faults (per-token errors, whole-request errors, a quota, latency) are set in-process or through
a small HTTP control API under ``/emulator/`` for an emulator started in another process.
Standard library only; one lock guards all state.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import math
import random
import re
import secrets
import signal
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

from topic_sync.fcm.wire import (
    FCM_ERROR_TYPE,
    MAX_TOKENS_PER_CALL,
    MAX_TOPICS_PER_TOKEN,
    TOPIC_NAME_PATTERN,
)

__all__ = [
    "MAX_BATCH_TOKENS",
    "MAX_MESSAGE_BYTES",
    "MAX_TOPICS_PER_TOKEN",
    "REASON_WIRE",
    "FcmEmulator",
    "Publish",
    "serve",
]

MAX_BATCH_TOKENS = MAX_TOKENS_PER_CALL
MAX_MESSAGE_BYTES = 4096
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 2000

_TOKEN_RE = re.compile(r"[A-Za-z0-9_:.-]{1,4096}")
_TOPIC_RE = re.compile(TOPIC_NAME_PATTERN)
_JSON = "application/json; charset=UTF-8"
_TEXT = "text/plain; charset=UTF-8"

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

# Whole-request failures that inject_request_errors accepts: HTTP status -> Google status.
_REQUEST_ERROR_STATUS: dict[int, str | None] = {
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

_OPS = ("subscribe", "unsubscribe", "both")
_V1_TOKEN_KINDS = frozenset({"subscribe", "unsubscribe", "list", "get"})
_LEGACY_KINDS = frozenset({"batchAdd", "batchRemove"})
_KINDS = _V1_TOKEN_KINDS | _LEGACY_KINDS | {"send"}


@dataclass(frozen=True)
class Publish:
    """One accepted send: who was subscribed at that instant is what a test checks."""

    message_id: str
    topic: str | None
    message: dict[str, Any]
    recipients: frozenset[str]
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "topic": self.topic,
            "message": self.message,
            "recipients": sorted(self.recipients),
            "at": self.at,
        }


class _Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _TokenFault:
    reason: str
    op: str
    remaining: int | None  # None: until cleared


@dataclass
class _RequestFaults:
    status: int
    count: int | None
    rate: float | None
    retry_after: int | None
    rng: random.Random
    kinds: frozenset[str] | None  # None: every kind of FCM request
    served: bool  # the request is served first, then answered with the error


@dataclass
class _Trap:
    """Call ``action`` at the ``nth`` request of ``kind``, before or after serving it."""

    kind: str
    remaining: int
    action: Callable[[], object]
    after: bool


class _Bucket:
    """Token bucket holding one second's worth of requests.

    A request costing more than the capacity (a legacy batch of 1000 at a lower rate) passes
    once the bucket is full and drives it negative, so big batches are slowed, not starved.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = rate
        self.level = rate
        self.last = time.monotonic()

    def take(self, cost: float) -> bool:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
        self.last = now
        if self.level >= min(cost, self.capacity):
            self.level -= cost
            return True
        return False


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _google_error(
    code: int, status: str, message: str | None = None, fcm_code: str | None = None
) -> bytes:
    err: dict[str, Any] = {
        "code": code,
        "message": message or _MESSAGES.get(status, status),
        "status": status,
    }
    if fcm_code:
        err["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return _dumps({"error": err})


def _error_reply(code: int, status: str, message: str | None = None) -> _Reply:
    return _Reply(code, _google_error(code, status, message))


def _reason_reply(reason: str) -> _Reply:
    """The v1 answer for a per-token failure with raw reason ``reason`` (see REASON_WIRE)."""
    wire = REASON_WIRE.get(reason)
    if wire is None:
        code, status = _OTHER_REASON_WIRE
        return _Reply(code, _google_error(code, status, f"Injected error: {reason}", reason))
    code, status, fcm_code = wire
    if status is None:
        return _Reply(code, b"Bad Gateway", _TEXT)
    return _Reply(code, _google_error(code, status, None, fcm_code))


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _bool_param(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("true", "1")


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


_COND_TOKEN = re.compile(
    r"\s*(?:'([A-Za-z0-9_.~%-]{1,900})'\s+in\s+topics|(&&)|(\|\|)|(!)|(\()|(\)))"
)


def _eval_condition(text: str, members: Callable[[str], set[str]], universe: set[str]) -> set[str]:
    """Recipients of an FCM condition such as ``'a' in topics && !('b' in topics)``."""
    tokens: list[tuple[str, str]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _COND_TOKEN.match(text, pos)
        if m is None:
            raise ValueError("malformed condition")
        tokens.append(("topic", m.group(1)) if m.group(1) else (m.group(0).strip(), ""))
        pos = m.end()
    if not 1 <= sum(kind == "topic" for kind, _ in tokens) <= 5:
        raise ValueError("a condition names 1 to 5 topics")
    i = 0

    def peek() -> str | None:
        return tokens[i][0] if i < len(tokens) else None

    def expr() -> set[str]:
        nonlocal i
        value = term()
        while peek() == "||":
            i += 1
            value = value | term()
        return value

    def term() -> set[str]:
        nonlocal i
        value = factor()
        while peek() == "&&":
            i += 1
            value = value & factor()
        return value

    def factor() -> set[str]:
        nonlocal i
        kind = peek()
        if kind == "!":
            i += 1
            return universe - factor()
        if kind == "(":
            i += 1
            value = expr()
            if peek() != ")":
                raise ValueError("unbalanced parentheses")
            i += 1
            return value
        if kind == "topic":
            i += 1
            return set(members(tokens[i - 1][1]))
        raise ValueError("malformed condition")

    result = expr()
    if i != len(tokens):
        raise ValueError("malformed condition")
    return result


class FcmEmulator:
    """In-memory FCM with real per-token subscription state and injectable faults."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Message ids stay unique across reset() and across emulator instances.
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._init_state()
        self._init_faults()

    def _init_state(self) -> None:
        self._subs: dict[str, dict[str, str]] = {}  # token -> {topic: createTime}
        self._members: dict[str, set[str]] = {}  # topic -> tokens
        self._unregistered: set[str] = set()
        self._publishes: list[Publish] = []
        self._validations: list[Publish] = []
        self._stats: Counter[tuple[str, int]] = Counter()

    def _init_faults(self) -> None:
        self._token_faults: dict[str, list[_TokenFault]] = {}
        self._request_faults: _RequestFaults | None = None
        self._bucket: _Bucket | None = None
        self._latency = 0.0
        self._traps: list[_Trap] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FcmEmulator:
        """Listen and serve in a daemon thread; returns self so it can be chained."""
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fcm-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections so clients notice at once."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FcmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def host_port(self) -> str:
        """``host:port`` as clients should dial it (the FCM_EMULATOR_HOST value)."""
        host = self._host if self._host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    # ----------------------------------------------------------------- faults

    def inject_token_error(
        self, token: str, reason: str, op: str = "both", times: int | None = None
    ) -> None:
        """Make ``op`` on ``token`` fail with raw reason ``reason``.

        ``times=None`` fails until cleared; ``times=N`` fails the next N attempts (the SDK's
        own retries on 500/503 count as attempts). The newest injection wins.
        """
        if not isinstance(reason, str) or not reason:
            raise ValueError("reason must be a non-empty string")
        if op not in _OPS:
            raise ValueError(f"op must be one of {_OPS}")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be None or a positive integer")
        with self._lock:
            self._token_faults.setdefault(token, []).insert(0, _TokenFault(reason, op, times))

    def inject_request_errors(
        self,
        status: int,
        *,
        count: int | None = None,
        rate: float | None = None,
        retry_after: float | None = None,
        seed: int = 0,
        kinds: Iterable[str] | None = None,
        served: bool = False,
    ) -> None:
        """Fail whole FCM requests with ``status`` (without FCM's error details).

        ``rate`` picks a fraction of requests with a seeded RNG (deterministic for a given
        request order); ``count`` caps how many fail in all. With neither, every request fails
        until cleared. ``retry_after`` adds a ``Retry-After`` header (whole seconds).
        ``kinds`` limits the fault to those requests (``send``, ``subscribe``,
        ``batchRemove``, ...). ``served`` serves the request first and answers the error
        after, as a front end that timed out on a request FCM carried out.
        """
        kind_set = None if kinds is None else frozenset(kinds)
        if kind_set is not None and not kind_set <= _KINDS:
            raise ValueError(f"kinds must be among {sorted(_KINDS)}")
        if status not in _REQUEST_ERROR_STATUS:
            raise ValueError(f"status must be one of {sorted(_REQUEST_ERROR_STATUS)}")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ValueError("count must be None or a non-negative integer")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        after = None if retry_after is None else math.ceil(retry_after)
        with self._lock:
            self._request_faults = _RequestFaults(
                status, count, rate, after, random.Random(seed), kind_set, served
            )

    def add_trap(
        self, kind: str, nth: int, action: Callable[[], object], *, after: bool = False
    ) -> None:
        """Call ``action`` (e.g. kill the client) when the ``nth`` request of ``kind`` from now
        arrives: before serving it (it never takes effect) or after (it took effect, but its
        answer goes to whoever is still listening). For deterministic crash tests."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}")
        if nth < 1:
            raise ValueError("nth must be at least 1")
        with self._lock:
            self._traps.append(_Trap(kind, nth, action, after))

    def set_quota(self, requests_per_second: float | None) -> None:
        """Rate-limit topic management (v1 request = 1, legacy batch = its token count)."""
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive or None")
        with self._lock:
            self._bucket = (
                None if requests_per_second is None else _Bucket(float(requests_per_second))
            )

    def set_latency(self, seconds: float) -> None:
        """Sleep this long in every FCM request (outside the lock, so requests overlap)."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency = float(seconds)

    def unregister(self, token: str) -> None:
        """Kill a token: FCM forgets its subscriptions and answers NOT_FOUND from now on."""
        with self._lock:
            self._unregistered.add(token)
            for topic in self._subs.pop(token, {}):
                self._discard_member(topic, token)

    def clear_faults(self) -> None:
        """Drop token/request faults, quota and latency; unregistered tokens stay dead."""
        with self._lock:
            self._init_faults()

    def reset(self) -> None:
        """Forget everything: subscriptions, unregistered tokens, faults, records, stats."""
        with self._lock:
            self._init_state()
            self._init_faults()

    # ----------------------------------------------------------------- inspection

    def members(self, topic: str) -> set[str]:
        with self._lock:
            return set(self._members.get(topic, ()))

    def topics_of(self, token: str) -> set[str]:
        with self._lock:
            return set(self._subs.get(token, ()))

    @property
    def publishes(self) -> list[Publish]:
        with self._lock:
            return list(self._publishes)

    @property
    def validations(self) -> list[Publish]:
        """validate_only sends, kept apart so they can never be mistaken for a publish."""
        with self._lock:
            return list(self._validations)

    @property
    def stats(self) -> Counter[tuple[str, int]]:
        """Requests served, keyed by (kind, HTTP status)."""
        with self._lock:
            return Counter(self._stats)

    def subscribe_direct(self, token: str, topic: str) -> None:
        """Subscribe behind the client's back (no checks, no faults, no quota)."""
        with self._lock:
            if topic not in self._subs.get(token, {}):
                self._add(token, topic, time.time())

    def unsubscribe_direct(self, token: str, topic: str) -> None:
        """Unsubscribe behind the client's back."""
        with self._lock:
            self._remove(token, topic)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot, as served by ``GET /emulator/state``."""
        with self._lock:
            stats: dict[str, dict[str, int]] = {}
            for (kind, status), n in sorted(self._stats.items()):
                stats.setdefault(kind, {})[str(status)] = n
            return {
                "topics": {t: sorted(m) for t, m in sorted(self._members.items())},
                "publishes": [p.to_json() for p in self._publishes],
                "validations": len(self._validations),
                "unregistered": sorted(self._unregistered),
                "stats": stats,
            }

    # ----------------------------------------------------------------- state helpers

    def _add(self, token: str, topic: str, now: float) -> str:
        created = _rfc3339(now)
        self._subs.setdefault(token, {})[topic] = created
        self._members.setdefault(topic, set()).add(token)
        return created

    def _remove(self, token: str, topic: str) -> bool:
        topics = self._subs.get(token)
        if topics is None or topic not in topics:
            return False
        del topics[topic]
        if not topics:
            del self._subs[token]
        self._discard_member(topic, token)
        return True

    def _discard_member(self, topic: str, token: str) -> None:
        tokens = self._members.get(topic)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._members[topic]

    def _token_problem(self, token: str, op: str, *, legacy: bool = False) -> str | None:
        """The reason ``op`` on ``token`` fails before state is looked at, if any.

        A dead token is NOT_FOUND on the legacy API and UNREGISTERED (FCM's error code) on v1.
        """
        faults = self._token_faults.get(token)
        if faults:
            for fault in faults:
                if fault.op == op or fault.op == "both":
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            faults.remove(fault)
                            if not faults:
                                del self._token_faults[token]
                    return fault.reason
        if _TOKEN_RE.fullmatch(token) is None:
            return "INVALID_ARGUMENT"
        if token in self._unregistered:
            return "NOT_FOUND" if legacy else "UNREGISTERED"
        return None

    def _take_trap(self, kind: str) -> _Trap | None:
        for trap in self._traps:
            if trap.kind == kind:
                trap.remaining -= 1
                if trap.remaining == 0:
                    self._traps.remove(trap)
                    return trap
        return None

    def _take_request_fault(self, kind: str) -> tuple[_Reply, bool] | None:
        """The error reply for this request, if a fault is armed, and whether to serve first."""
        rf = self._request_faults
        if rf is None or (rf.kinds is not None and kind not in rf.kinds):
            return None
        if rf.count is not None and rf.count <= 0:
            self._request_faults = None
            return None
        if rf.rate is not None and rf.rng.random() >= rf.rate:
            return None
        if rf.count is not None:
            rf.count -= 1
        headers = () if rf.retry_after is None else (("Retry-After", str(rf.retry_after)),)
        status = _REQUEST_ERROR_STATUS[rf.status]
        if status is None:
            return _Reply(rf.status, b"Bad Gateway", _TEXT, headers), rf.served
        legacy = kind in _LEGACY_KINDS
        body = _dumps({"error": status}) if legacy else _google_error(rf.status, status)
        return _Reply(rf.status, body, _JSON, headers), rf.served

    def _subscription_json(self, project: str, token: str, topic: str, created: str) -> bytes:
        return _dumps(
            {
                "name": f"projects/{project}/registrations/{token}/topicSubscriptions/{topic}",
                "topicName": topic,
                "createTime": created,
            }
        )

    # ----------------------------------------------------------------- request handling

    def _handle(self, method: str, target: str, body: bytes) -> _Reply:
        """Answer one HTTP request; the HTTP handler only moves bytes."""
        path, _, query = target.partition("?")
        if path.startswith("/emulator/"):
            return self._control(method, path, body)
        kind, args = _route(method, path)
        if self._latency and kind != "unknown":
            time.sleep(self._latency)
        params = parse_qs(query) if query else {}
        with self._lock:
            trap = self._take_trap(kind)
        if trap is not None and not trap.after:
            trap.action()
            with self._lock:
                self._stats[(kind, 0)] += 1  # never served
            return _error_reply(503, "UNAVAILABLE")
        with self._lock:
            reply = self._dispatch(kind, args, params, body)
            self._stats[(kind, reply.status)] += 1
        if trap is not None:
            trap.action()
        return reply

    def _dispatch(
        self, kind: str, args: tuple[str, ...], params: dict[str, list[str]], body: bytes
    ) -> _Reply:
        if kind == "unknown":
            return _error_reply(404, "NOT_FOUND", "Unknown FCM endpoint.")
        fault = self._take_request_fault(kind)
        if fault is not None:
            reply, served = fault
            if served:
                self._serve(kind, args, params, body)
            return reply
        return self._serve(kind, args, params, body)

    def _serve(
        self, kind: str, args: tuple[str, ...], params: dict[str, list[str]], body: bytes
    ) -> _Reply:
        if kind in _V1_TOKEN_KINDS:
            if self._bucket is not None and not self._bucket.take(1):
                return _error_reply(429, "RESOURCE_EXHAUSTED")
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
        if kind in _LEGACY_KINDS:
            return self._legacy(kind == "batchAdd", body)
        return self._send(args[0], body)

    def _v1_subscribe(self, project: str, token: str, topic: str | None) -> _Reply:
        if not _valid_topic(topic):
            return _error_reply(400, "INVALID_ARGUMENT", "Invalid or missing topic_name.")
        assert topic is not None
        problem = self._token_problem(token, "subscribe")
        if problem is not None:
            return _reason_reply(problem)
        topics = self._subs.get(token)
        if topics is not None:
            if topic in topics:
                return _error_reply(409, "ALREADY_EXISTS")
            if len(topics) >= MAX_TOPICS_PER_TOKEN:
                return _reason_reply("TOO_MANY_TOPICS")
        created = self._add(token, topic, time.time())
        return _Reply(200, self._subscription_json(project, token, topic, created))

    def _v1_unsubscribe(self, token: str, topic: str, allow_missing: bool) -> _Reply:
        if not _valid_topic(topic):
            return _error_reply(400, "INVALID_ARGUMENT", "Invalid topic name.")
        problem = self._token_problem(token, "unsubscribe")
        if problem is not None:
            return _reason_reply(problem)
        if not self._remove(token, topic) and not allow_missing:
            return _error_reply(404, "NOT_FOUND", "Topic subscription not found.")
        return _Reply(200, b"{}")

    def _v1_lookup_problem(self, token: str) -> _Reply | None:
        if _TOKEN_RE.fullmatch(token) is None:
            return _reason_reply("INVALID_ARGUMENT")
        if token in self._unregistered:
            return _reason_reply("UNREGISTERED")
        return None

    def _v1_get(self, project: str, token: str, topic: str) -> _Reply:
        problem = self._v1_lookup_problem(token)
        if problem is not None:
            return problem
        created = self._subs.get(token, {}).get(topic)
        if created is None:
            return _error_reply(404, "NOT_FOUND", "Topic subscription not found.")
        return _Reply(200, self._subscription_json(project, token, topic, created))

    def _v1_list(self, project: str, token: str, params: dict[str, list[str]]) -> _Reply:
        problem = self._v1_lookup_problem(token)
        if problem is not None:
            return problem
        raw_size = (params.get("pageSize") or params.get("page_size") or ["0"])[-1]
        raw_page = (params.get("pageToken") or params.get("page_token") or [""])[-1]
        try:
            size = int(raw_size)
            after = _decode_page_token(raw_page) if raw_page else None
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return _error_reply(400, "INVALID_ARGUMENT", "Invalid pageSize or pageToken.")
        if size < 0:
            return _error_reply(400, "INVALID_ARGUMENT", "pageSize must not be negative.")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        subs = self._subs.get(token, {})
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
        return _Reply(200, _dumps(out))

    def _legacy(self, add: bool, body: bytes) -> _Reply:
        bad = _Reply(400, b'{"error":"INVALID_ARGUMENT"}')
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
        if self._bucket is not None and not self._bucket.take(len(tokens)):
            return _Reply(429, b'{"error":"RESOURCE_EXHAUSTED"}')
        op = "subscribe" if add else "unsubscribe"
        now = time.time()
        results: list[dict[str, str]] = []
        for token in tokens:
            problem = self._token_problem(token, op, legacy=True)
            if problem is None and add:
                topics = self._subs.get(token)
                if topics is None or topic not in topics:
                    if topics is not None and len(topics) >= MAX_TOPICS_PER_TOKEN:
                        problem = "TOO_MANY_TOPICS"
                    else:
                        self._add(token, topic, now)
            elif problem is None:
                self._remove(token, topic)
            results.append({} if problem is None else {"error": problem})
        return _Reply(200, _dumps({"results": results}))

    def _send(self, project: str, body: bytes) -> _Reply:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return _error_reply(400, "INVALID_ARGUMENT", "Invalid JSON payload.")
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            return _error_reply(400, "INVALID_ARGUMENT", "A message is required.")
        targets = [k for k in ("topic", "token", "condition") if message.get(k)]
        if len(targets) != 1:
            return _error_reply(
                400, "INVALID_ARGUMENT", "Exactly one of topic, token or condition is required."
            )
        if len(_dumps(message)) > MAX_MESSAGE_BYTES:
            return _error_reply(400, "INVALID_ARGUMENT", "Message is too big.")
        topic: str | None = None
        if targets[0] == "topic":
            topic = _strip_topic_prefix(message["topic"])
            if not _valid_topic(topic):
                return _error_reply(400, "INVALID_ARGUMENT", "Invalid topic name.")
            recipients = frozenset(self._members.get(topic, ()))
        elif targets[0] == "token":
            token = message["token"]
            if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
                return _error_reply(400, "INVALID_ARGUMENT", "Invalid registration token.")
            if token in self._unregistered:
                return _Reply(404, _google_error(404, "NOT_FOUND", None, "UNREGISTERED"))
            recipients = frozenset((token,))
        else:
            try:
                recipients = frozenset(
                    _eval_condition(
                        str(message["condition"]),
                        lambda t: self._members.get(t, set()),
                        set(self._subs),
                    )
                )
            except ValueError as exc:
                return _error_reply(400, "INVALID_ARGUMENT", f"Invalid condition: {exc}.")
        if data.get("validate_only") is True:
            self._validations.append(
                Publish("fake_message_id", topic, message, recipients, time.time())
            )
            return _Reply(200, _dumps({"name": f"projects/{project}/messages/fake_message_id"}))
        message_id = f"0:{self._id_prefix}{next(self._ids):012d}"
        self._publishes.append(Publish(message_id, topic, message, recipients, time.time()))
        return _Reply(200, _dumps({"name": f"projects/{project}/messages/{message_id}"}))

    # ----------------------------------------------------------------- control API

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        try:
            if method == "GET" and path == "/emulator/state":
                return _Reply(200, _dumps(self.state()))
            if method == "GET" and path == "/emulator/health":
                return _Reply(200, b'{"ok":true}')
            if method == "GET" and path.startswith("/emulator/topics/"):
                topic = unquote(path[len("/emulator/topics/") :])
                return _Reply(200, _dumps(sorted(self.members(topic))))
            if method == "POST" and path == "/emulator/reset":
                self.reset()
                return _Reply(200, b"{}")
            if method == "POST" and path == "/emulator/clear-faults":
                self.clear_faults()
                return _Reply(200, b"{}")
            if method == "POST" and path == "/emulator/faults":
                self._apply_faults(json.loads(body or b"{}"))
                return _Reply(200, b"{}")
            if method == "POST" and path == "/emulator/direct":
                self._apply_direct(json.loads(body or b"{}"))
                return _Reply(200, b"{}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _Reply(400, _dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return _Reply(404, _dumps({"error": f"no control endpoint {method} {path}"}))

    def _apply_faults(self, spec: dict[str, Any]) -> None:
        """Apply a ``POST /emulator/faults`` body; a key present with null clears that fault."""
        if not isinstance(spec, dict):
            raise ValueError("faults body must be a JSON object")
        for item in spec.get("token_errors") or ():
            self.inject_token_error(
                item["token"], item["reason"], item.get("op", "both"), item.get("times")
            )
        if "request_errors" in spec:
            rq = spec["request_errors"]
            if rq is None:
                with self._lock:
                    self._request_faults = None
            else:
                self.inject_request_errors(
                    int(rq["status"]),
                    count=rq.get("count"),
                    rate=rq.get("rate"),
                    retry_after=rq.get("retry_after"),
                    seed=int(rq.get("seed", 0)),
                    kinds=rq.get("kinds"),
                    served=bool(rq.get("served", False)),
                )
        if "quota" in spec:
            self.set_quota(spec["quota"])
        if "latency" in spec:
            self.set_latency(float(spec["latency"] or 0.0))
        for token in spec.get("unregister") or ():
            self.unregister(token)

    def _apply_direct(self, spec: dict[str, Any]) -> None:
        """``{"subscribe": [{"token","topic"}], "unsubscribe": [...]}`` behind clients' backs."""
        for item in spec.get("subscribe") or ():
            self.subscribe_direct(item["token"], item["topic"])
        for item in spec.get("unsubscribe") or ():
            self.unsubscribe_direct(item["token"], item["topic"])


def _route(method: str, path: str) -> tuple[str, tuple[str, ...]]:
    """Map a request to (kind, decoded path arguments). Segments are split before decoding,
    so a token or topic with an encoded ``/`` stays one segment."""
    if path.startswith("/v1/projects/"):
        parts = path.split("/")
        n = len(parts)
        if n == 5 and parts[4] == "messages:send" and method == "POST":
            return "send", (unquote(parts[3]),)
        if n in (7, 8) and parts[4] == "registrations" and parts[6] == "topicSubscriptions":
            project, token = unquote(parts[3]), unquote(parts[5])
            if n == 7:
                if method == "POST":
                    return "subscribe", (project, token)
                if method == "GET":
                    return "list", (project, token)
            elif method == "DELETE":
                return "unsubscribe", (project, token, unquote(parts[7]))
            elif method == "GET":
                return "get", (project, token, unquote(parts[7]))
    elif method == "POST" and path == "/iid/v1:batchAdd":
        return "batchAdd", ()
    elif method == "POST" and path == "/iid/v1:batchRemove":
        return "batchRemove", ()
    return "unknown", ()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # SDK callers open up to 100 connections at once
    emulator: FcmEmulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # Skip HTTPServer's reverse DNS lookup (getfqdn), which can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Lean HTTP/1.1 keep-alive handler: one buffered write per response, no logging."""

    protocol_version = "HTTP/1.1"
    server_version = "fcm-emulator"
    sys_version = ""
    wbufsize = 1 << 16  # flushed once per request by handle_one_request
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, *args: Any) -> None:
        pass

    def handle_expect_100(self) -> bool:
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            reply = _error_reply(400, "INVALID_ARGUMENT", "Malformed request body.")
        else:
            try:
                reply = self.server.emulator._handle(self.command, self.path, body)
            except Exception as exc:  # keep the connection answering; surface the bug
                reply = _error_reply(500, "INTERNAL", f"emulator error: {exc!r}")
        self.send_response_only(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _serve


def serve(
    host: str = "127.0.0.1",
    port: int = 9099,
    ready: Callable[[FcmEmulator], object] | threading.Event | None = None,
) -> None:
    """Run an emulator in the foreground until SIGTERM, SIGINT or KeyboardInterrupt.

    ``ready`` is called with the started emulator (or set, if it is an Event), e.g. so a
    caller using port 0 can learn the port.
    """
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    emulator = FcmEmulator(host, port).start()
    try:
        if isinstance(ready, threading.Event):
            ready.set()
        elif ready is not None:
            ready(emulator)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
