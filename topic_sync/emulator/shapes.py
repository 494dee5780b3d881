"""Strange answers on demand: what a proxy, a broken front end or a changed service may send.

Why it exists: a client must prove a success as it proves an error, so tests must be able to
meet every answer that is *not* FCM's documented shape, on every kind of request: an HTML
page, an empty body or plain text on a 2xx, a JSON error object or a JSON list on a 2xx, a
redirect, a legacy `results` list one short or one long (or missing, not a list, holding
non-objects), an `error` that is a bare string, a body cut short. Each named shape is built
for the request it answers (a legacy batch's `results` from its token count); `Canned` is an
answer given byte for byte (the conformance corpus replays the official SDK suites' fixtures
with it). Plain data, no HTTP, no state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from topic_sync.emulator.replies import JSON, TEXT, Reply, dumps, google_error
from topic_sync.emulator.routes import LEGACY_KINDS

HTML = "text/html; charset=UTF-8"
LANDING = "/landing"
"""Where the ``redirect`` shape points: a path of the emulator's own that answers 200 ``{}``
to anything and is counted in stats as kind ``landing``, so a test sees a followed redirect."""


@dataclass(frozen=True)
class Canned:
    """An answer given as is: status, body bytes, Content-Type (None: no header), other
    headers, and ``cut`` (send only that many bytes of the body, then close)."""

    status: int
    body: bytes
    content_type: str | None = JSON
    headers: tuple[tuple[str, str], ...] = ()
    cut: int | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status (100-599)")
        if self.cut is not None and not 0 <= self.cut < len(self.body):
            raise ValueError("cut must be shorter than the body")

    def reply(self) -> Reply:
        return Reply(self.status, self.body, self.content_type, self.headers, self.cut)


@dataclass(frozen=True)
class Request:
    """What a shape may depend on: the request's kind and how many tokens it carried."""

    kind: str
    tokens: int


def _results(count: int) -> bytes:
    return dumps({"results": [{}] * max(count, 0)})


def _success_body(request: Request) -> bytes:
    """The success body of the request's kind, as a cut or a relabelled answer starts from."""
    if request.kind in LEGACY_KINDS:
        return _results(request.tokens)
    if request.kind == "send":
        return dumps({"name": "projects/cut/messages/0:cut"})
    return b"{}"


_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    b"<body><h1>Please try again later</h1></body></html>"
)

# Each shape: (HTTP status it answers with by default, kinds it is meant for (None: all),
# what it builds from the request and that status).
_Builder = Callable[[Request, int], Reply]
SHAPES: dict[str, tuple[int, frozenset[str] | None, _Builder]] = {
    "html": (200, None, lambda r, s: Reply(s, _PAGE, HTML)),
    "empty": (200, None, lambda r, s: Reply(s, b"", JSON)),
    "text": (200, None, lambda r, s: Reply(s, b"OK", TEXT)),
    "json-error": (
        200,
        None,
        lambda r, s: Reply(s, google_error(404, "NOT_FOUND", "Requested entity was not found.")),
    ),
    "json-list": (200, None, lambda r, s: Reply(s, b"[]")),
    "json-null": (200, None, lambda r, s: Reply(s, b"null")),
    "string-error": (200, None, lambda r, s: Reply(s, dumps({"error": "NotRegistered"}))),
    "redirect": (302, None, lambda r, s: Reply(s, b"", HTML, (("Location", LANDING),))),
    "cut": (200, None, lambda r, s: _cut(_success_body(r), s)),
    "short-results": (200, LEGACY_KINDS, lambda r, s: Reply(s, _results(r.tokens - 1))),
    "empty-results": (200, LEGACY_KINDS, lambda r, s: Reply(s, _results(0))),
    "long-results": (200, LEGACY_KINDS, lambda r, s: Reply(s, _results(r.tokens + 1))),
    "no-results": (200, LEGACY_KINDS, lambda r, s: Reply(s, b"{}")),
    "results-not-list": (200, LEGACY_KINDS, lambda r, s: Reply(s, b'{"results":{}}')),
    "non-object-results": (
        200,
        LEGACY_KINDS,
        lambda r, s: Reply(s, dumps({"results": [""] * r.tokens})),
    ),
    "no-name": (200, frozenset({"send"}), lambda r, s: Reply(s, b"{}")),
    "null-name": (200, frozenset({"send"}), lambda r, s: Reply(s, b'{"name":null}')),
}
"""The fault menu of strange answers, by name (see FcmEmulator.inject_answer)."""

FOR_EVERY_KIND = tuple(name for name, (_, kinds, _) in SHAPES.items() if kinds is None)
"""The shapes any request can meet."""
FOR_BATCHES = tuple(name for name, (_, kinds, _) in SHAPES.items() if kinds == LEGACY_KINDS)
"""The shapes only a legacy batch can meet (its `results` list wrong)."""


def _cut(body: bytes, status: int) -> Reply:
    return Reply(status, body, JSON, (), max(len(body) // 2, 0) if body else None)


def check_shape(name: str, kinds: frozenset[str] | None) -> None:
    """Refuse an unknown shape, or one armed for requests it cannot answer."""
    if name not in SHAPES:
        raise ValueError(f"shape must be one of {sorted(SHAPES)}")
    meant = SHAPES[name][1]
    if meant is not None and (kinds is None or not kinds <= meant):
        raise ValueError(f"shape {name!r} answers only {sorted(meant)}: give kinds among them")


def build(name: str, request: Request, status: int | None = None) -> Reply:
    """The named shape's answer to this request, with its own status or the one given."""
    default, _kinds, builder = SHAPES[name]
    return builder(request, default if status is None else status)
