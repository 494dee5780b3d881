"""Which FCM request a method and path are: the request kinds, and the router.

Why it exists: stats, whole-request faults and traps are all keyed by a request's kind
(``subscribe``, ``batchAdd``, ``send``, ...), so the kinds and the one mapping from HTTP to a
kind sit apart from both the fault knobs and the handlers that use them.
"""

from __future__ import annotations

from urllib.parse import unquote

V1_TOKEN_KINDS = frozenset({"subscribe", "unsubscribe", "list", "get"})
"""The v1 topic subscription API: one request per token, charged 1 against the quota."""
LEGACY_KINDS = frozenset({"batchAdd", "batchRemove"})
"""The legacy Instance ID batch API: charged its token count against the quota."""
KINDS = V1_TOKEN_KINDS | LEGACY_KINDS | {"send"}
"""Every kind of FCM request; anything else is routed as ``unknown``."""


def route(method: str, path: str) -> tuple[str, tuple[str, ...]]:
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
    elif path == "/landing":
        return "landing", ()  # where the emulator's own redirects point (see shapes)
    return "unknown", ()
