"""The per-token error table: what each FCM answer means for a token.

This is the one place that decides, per raw reason and per operation, whether a
token succeeded, failed for good, should be retried, or whether the whole run
must stop. The README table is generated from it (and a test keeps them equal).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Op(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


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


_P, _R, _S, _OK = Outcome.PERMANENT, Outcome.RETRY, Outcome.STOP, Outcome.SUCCESS

RULES: tuple[ErrorRule, ...] = (
    ErrorRule("invalid-argument", ("INVALID_ARGUMENT",), "malformed token", _P, _OK, True),
    ErrorRule(
        "registration-token-not-registered",
        ("NOT_FOUND", "UNREGISTERED"),
        "token no longer valid",
        _P,
        _OK,
        True,
    ),
    ErrorRule(
        "sender-id-mismatch",
        ("SENDER_ID_MISMATCH",),
        "token belongs to another project",
        _P,
        _OK,
        True,
    ),
    ErrorRule(
        "internal-error",
        ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"),
        "FCM server error",
        _R,
        _R,
    ),
    ErrorRule("too-many-topics", ("TOO_MANY_TOPICS",), "token already in 2000 topics", _P, _OK),
    ErrorRule(
        "rate-limited",
        ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        "too many requests too fast",
        _R,
        _R,
    ),
    ErrorRule(
        "credentials",
        ("UNAUTHENTICATED", "PERMISSION_DENIED"),
        "our credentials are wrong: not the token's fault",
        _S,
        _S,
    ),
)

UNKNOWN = ErrorRule(
    "unknown-error",
    ("UNKNOWN_ERROR",),
    "unexplained backend failure (anything not listed above)",
    _R,
    _R,
)

_BY_REASON = {reason: rule for rule in (*RULES, UNKNOWN) for reason in rule.reasons}
_BY_CODE = {rule.code: rule for rule in (*RULES, UNKNOWN)}


def classify(reason: str) -> ErrorRule:
    """The rule for a raw reason; anything unrecognised is an unknown (retryable) error."""
    return _BY_REASON.get(reason.strip().upper(), UNKNOWN)


def rule_for_code(code: str) -> ErrorRule:
    return _BY_CODE[code]


def all_reasons() -> list[str]:
    """Every raw reason the table names, in table order."""
    return [reason for rule in (*RULES, UNKNOWN) for reason in rule.reasons]


def all_codes() -> list[str]:
    return [rule.code for rule in (*RULES, UNKNOWN)]


def markdown_table() -> str:
    """The README's error table, rendered from RULES."""
    lines = [
        "| raw reason(s) | code | meaning | subscribe | unsubscribe |",
        "|---|---|---|---|---|",
    ]
    for rule in (*RULES, UNKNOWN):
        reasons = ", ".join(rule.reasons)
        if rule is UNKNOWN:
            reasons = "anything else, " + reasons
        lines.append(
            f"| {reasons} | {rule.code} | {rule.meaning} | {rule.subscribe} | {rule.unsubscribe} |"
        )
    return "\n".join(lines)
