"""The per-token error table: what each FCM answer means for a token.

This is the one place that decides, per raw reason and per operation, whether a
token succeeded, failed for good, should be retried, or whether the whole run
must stop. The table in docs/errors.md is generated from it (and a test keeps them equal).

A verdict about a token (a removal confirmed, a token found dead) needs an answer
about that token: a per-token result in a legacy batch response of the documented shape,
or a v1 4xx that carries FCM's error details. A whole-request error, or a v1 error without
details (a front end, a disabled API), proves nothing about any token, so `rule_for` turns
such an answer into NO_VERDICT: retried, and never a confirmation or a dead mark. A success
needs the same evidence (fcm/answers.py): an answer of no documented shape arrives as
UNEXPECTED_ANSWER, a redirect as REDIRECTED, and both are NO_VERDICT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from topic_sync.fcm.answers import REDIRECTED, UNEXPECTED_ANSWER
from topic_sync.states import Op

__all__ = [
    "NO_VERDICT",
    "RULES",
    "UNKNOWN",
    "ErrorRule",
    "Op",
    "Outcome",
    "all_codes",
    "all_reasons",
    "classify",
    "markdown_table",
    "rule_for",
]


# A 429: not an answer about the token but "not now". The pacer decides when to ask again, so
# a round whose only failures are these is retried at once (engine/drain.py).
RATE_LIMITED = "rate-limited"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    PERMANENT = "failure (permanent)"
    RETRY = "failure (retry)"
    STOP = "stop the run"


@dataclass(frozen=True)
class ErrorRule:
    code: str
    reasons: tuple[str, ...]
    meaning: str
    subscribe: Outcome
    unsubscribe: Outcome
    # A dead token: FCM will never deliver to it, so later diffs leave it out.
    marks_invalid: bool = False

    def outcome(self, op: Op) -> Outcome:
        return self.subscribe if op is Op.SUBSCRIBE else self.unsubscribe


RULES: tuple[ErrorRule, ...] = (
    ErrorRule(
        "invalid-argument",
        ("INVALID_ARGUMENT",),
        "malformed token",
        Outcome.PERMANENT,
        Outcome.SUCCESS,
        marks_invalid=True,
    ),
    ErrorRule(
        "registration-token-not-registered",
        ("NOT_FOUND", "UNREGISTERED"),
        "token no longer valid",
        Outcome.PERMANENT,
        Outcome.SUCCESS,
        marks_invalid=True,
    ),
    ErrorRule(
        "sender-id-mismatch",
        ("SENDER_ID_MISMATCH",),
        "token belongs to another project",
        Outcome.PERMANENT,
        Outcome.SUCCESS,
        marks_invalid=True,
    ),
    ErrorRule(
        "internal-error",
        ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"),
        "FCM server error",
        Outcome.RETRY,
        Outcome.RETRY,
    ),
    # Not a success on unsubscribe: a token over the topic limit may still be a member.
    ErrorRule(
        "too-many-topics",
        ("TOO_MANY_TOPICS",),
        "token already in 2000 topics",
        Outcome.PERMANENT,
        Outcome.RETRY,
    ),
    ErrorRule(
        RATE_LIMITED,
        ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        "too many requests too fast",
        Outcome.RETRY,
        Outcome.RETRY,
    ),
    ErrorRule(
        "credentials",
        ("UNAUTHENTICATED", "PERMISSION_DENIED"),
        "our credentials are wrong: not the token's fault",
        Outcome.STOP,
        Outcome.STOP,
    ),
)

UNKNOWN = ErrorRule(
    "unknown-error",
    ("UNKNOWN_ERROR",),
    "unexplained backend failure (anything not listed above)",
    Outcome.RETRY,
    Outcome.RETRY,
)

NO_VERDICT = ErrorRule(
    "no-verdict",
    (UNEXPECTED_ANSWER, REDIRECTED),
    "an answer about the request, not the token: a whole-request error, a v1 error "
    "without FCM's error details, an answer of no documented shape, a redirect",
    Outcome.RETRY,
    Outcome.RETRY,
)

_VERDICTS = (Outcome.SUCCESS, Outcome.PERMANENT)

_BY_REASON = {reason: rule for rule in (*RULES, UNKNOWN, NO_VERDICT) for reason in rule.reasons}


def classify(reason: str) -> ErrorRule:
    """The rule for a raw reason; anything unrecognised is an unknown (retryable) error."""
    return _BY_REASON.get(reason.strip().upper(), UNKNOWN)


def rule_for(reason: str, op: Op, *, proven: bool) -> ErrorRule:
    """The rule for one token's answer; `proven` says the answer is about that token.

    An unproven answer never settles a token: what would be a verdict (success or a
    permanent failure) becomes NO_VERDICT. Retries and stops are kept as they are.
    """
    rule = classify(reason)
    if not proven and rule.outcome(op) in _VERDICTS:
        return NO_VERDICT
    return rule


def all_reasons() -> list[str]:
    """Every raw reason the table names, in table order."""
    return [reason for rule in (*RULES, UNKNOWN) for reason in rule.reasons]


def all_codes() -> list[str]:
    return [rule.code for rule in (*RULES, UNKNOWN, NO_VERDICT)]


def markdown_table() -> str:
    """The error table of docs/errors.md, rendered from RULES."""
    lines = [
        "| raw reason(s) | code | meaning | subscribe | unsubscribe |",
        "|---|---|---|---|---|",
    ]
    for rule in (*RULES, UNKNOWN, NO_VERDICT):
        reasons = ", ".join(rule.reasons)
        if rule is UNKNOWN:
            reasons = "anything else, " + reasons
        if rule is NO_VERDICT:
            reasons = f"{reasons}, or any of the above without per-token evidence"
        lines.append(
            f"| {reasons} | {rule.code} | {rule.meaning} | {rule.subscribe} | {rule.unsubscribe} |"
        )
    return "\n".join(lines)
