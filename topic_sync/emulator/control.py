"""The emulator's own HTTP control API, under ``/emulator/``.

Why it exists: an emulator running in another process (``topic-sync emulator``) can only be
inspected and given faults over HTTP. Each endpoint calls the FcmEmulator method of the same
meaning, so the control API and the in-process API cannot drift apart. Control requests are
never faulted, delayed or counted in stats.

* ``GET /emulator/state``, ``GET /emulator/health``, ``GET /emulator/topics/{topic}``;
* ``POST /emulator/reset``, ``POST /emulator/clear-faults``;
* ``POST /emulator/faults`` (see ``_apply_faults``), ``POST /emulator/direct``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import unquote

from topic_sync.emulator.replies import Reply, dumps
from topic_sync.emulator.shapes import Canned

PREFIX = "/emulator/"


class Controlled(Protocol):
    """What the control API drives: the FcmEmulator methods of the same meaning."""

    def state(self) -> dict[str, Any]: ...
    def members(self, topic: str) -> set[str]: ...
    def reset(self) -> None: ...
    def clear_faults(self) -> None: ...
    def _clear_request_errors(self) -> None: ...
    def _clear_answers(self) -> None: ...
    def inject_answer(
        self,
        answer: str | Canned,
        *,
        status: int | None = ...,
        kinds: Iterable[str] | None = ...,
        tokens: Iterable[str] | None = ...,
        count: int | None = ...,
        served: bool = ...,
    ) -> None: ...
    def inject_token_error(
        self, token: str, reason: str, op: str = ..., times: int | None = ...
    ) -> None: ...
    def inject_request_errors(
        self,
        status: int,
        *,
        count: int | None = ...,
        rate: float | None = ...,
        retry_after: float | None = ...,
        seed: int = ...,
        kinds: Iterable[str] | None = ...,
        served: bool = ...,
    ) -> None: ...
    def set_quota(
        self,
        requests_per_second: float | None,
        *,
        window: str = ...,
        retry_after: float | None = ...,
        retry_delay: float | None = ...,
    ) -> None: ...
    def set_latency(self, seconds: float) -> None: ...
    def set_api_disabled(self, disabled: bool = ...) -> None: ...
    def unregister(self, token: str) -> None: ...
    def subscribe_direct(self, token: str, topic: str) -> None: ...
    def unsubscribe_direct(self, token: str, topic: str) -> None: ...


def handle_control(emulator: Controlled, method: str, path: str, body: bytes) -> Reply:
    """Answer one control request; a bad body is a 400 naming the problem."""
    try:
        if method == "GET" and path == "/emulator/state":
            return Reply(200, dumps(emulator.state()))
        if method == "GET" and path == "/emulator/health":
            return Reply(200, b'{"ok":true}')
        if method == "GET" and path.startswith("/emulator/topics/"):
            topic = unquote(path[len("/emulator/topics/") :])
            return Reply(200, dumps(sorted(emulator.members(topic))))
        if method == "POST" and path == "/emulator/reset":
            emulator.reset()
            return Reply(200, b"{}")
        if method == "POST" and path == "/emulator/clear-faults":
            emulator.clear_faults()
            return Reply(200, b"{}")
        if method == "POST" and path == "/emulator/faults":
            _apply_faults(emulator, json.loads(body or b"{}"))
            return Reply(200, b"{}")
        if method == "POST" and path == "/emulator/direct":
            _apply_direct(emulator, json.loads(body or b"{}"))
            return Reply(200, b"{}")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Reply(400, dumps({"error": f"{type(exc).__name__}: {exc}"}))
    return Reply(404, dumps({"error": f"no control endpoint {method} {path}"}))


def _apply_faults(emulator: Controlled, spec: dict[str, Any]) -> None:
    """Apply a ``POST /emulator/faults`` body; a key present with null clears that fault.

    ``{"token_errors": [{"token", "reason", "op"?, "times"?}], "request_errors": {"status",
    "count"?, "rate"?, "retry_after"?, "seed"?, "kinds"?, "served"?}, "answers": [{"shape"
    or "canned": {"status", "body"? or "body_base64"?, "content_type"?, "headers"?, "cut"?},
    "status"?, "kinds"?, "tokens"?, "count"?, "served"?}], "quota": rps or {"rate",
    "window"?, "retry_after"?, "retry_delay"?}, "latency": seconds, "api_disabled": bool,
    "unregister": [token]}``, every key optional.
    """
    if not isinstance(spec, dict):
        raise ValueError("faults body must be a JSON object")
    for item in spec.get("token_errors") or ():
        emulator.inject_token_error(
            item["token"], item["reason"], item.get("op", "both"), item.get("times")
        )
    if "request_errors" in spec:
        rq = spec["request_errors"]
        if rq is None:
            emulator._clear_request_errors()
        else:
            emulator.inject_request_errors(
                int(rq["status"]),
                count=rq.get("count"),
                rate=rq.get("rate"),
                retry_after=rq.get("retry_after"),
                seed=int(rq.get("seed", 0)),
                kinds=rq.get("kinds"),
                served=bool(rq.get("served", False)),
            )
    if "answers" in spec:
        if spec["answers"] is None:
            emulator._clear_answers()
        for item in spec["answers"] or ():
            answer = _canned(item["canned"]) if "canned" in item else str(item["shape"])
            emulator.inject_answer(
                answer,
                status=item.get("status"),
                kinds=item.get("kinds"),
                tokens=item.get("tokens"),
                count=item.get("count"),
                served=bool(item.get("served", False)),
            )
    if "quota" in spec:
        quota = spec["quota"]
        if isinstance(quota, dict):
            emulator.set_quota(
                quota["rate"],
                window=quota.get("window", "bucket"),
                retry_after=quota.get("retry_after"),
                retry_delay=quota.get("retry_delay"),
            )
        else:
            emulator.set_quota(quota)
    if "latency" in spec:
        emulator.set_latency(float(spec["latency"] or 0.0))
    if "api_disabled" in spec:
        disabled = spec["api_disabled"]
        emulator.set_api_disabled(False if disabled is None else disabled)
    for token in spec.get("unregister") or ():
        emulator.unregister(token)


def _canned(spec: dict[str, Any]) -> Canned:
    """A canned answer from JSON: the body as text, or as base64 for any bytes."""
    if "body_base64" in spec:
        body = base64.b64decode(spec["body_base64"], validate=True)
    else:
        body = str(spec.get("body", "")).encode()
    headers = tuple((str(name), str(value)) for name, value in spec.get("headers") or ())
    return Canned(
        int(spec["status"]),
        body,
        spec.get("content_type", "application/json; charset=UTF-8"),
        headers,
        spec.get("cut"),
    )


def _apply_direct(emulator: Controlled, spec: dict[str, Any]) -> None:
    """``{"subscribe": [{"token","topic"}], "unsubscribe": [...]}`` behind clients' backs."""
    for item in spec.get("subscribe") or ():
        emulator.subscribe_direct(item["token"], item["topic"])
    for item in spec.get("unsubscribe") or ():
        emulator.unsubscribe_direct(item["token"], item["topic"])
