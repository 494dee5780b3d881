"""The per-token error table, checked against the product brief, row by row."""

from __future__ import annotations

import pytest

from topic_sync.fcm.answers import REDIRECTED, UNEXPECTED_ANSWER
from topic_sync.fcm.error_table import (
    NO_VERDICT,
    RULES,
    UNKNOWN,
    ErrorRule,
    Op,
    Outcome,
    all_codes,
    all_reasons,
    classify,
    markdown_table,
    rule_for,
)


def rule_for_code(code: str) -> ErrorRule:
    """The table's rule of a code (the code needs none: it maps reasons, not codes)."""
    (rule,) = [rule for rule in (*RULES, UNKNOWN, NO_VERDICT) if rule.code == code]
    return rule


OK = "success"
PERMANENT = "failure (permanent)"
RETRY = "failure (retry)"
STOP = "stop the run"

# The brief's table, literally: raw reason -> (code, subscribe, unsubscribe).
# Where the brief names a code only in words ("(sender mismatch)", "(rate limited)",
# "(credentials)"), the code is topic-sync's kebab-case name for it.
BRIEF_TABLE: dict[str, tuple[str, str, str]] = {
    "INVALID_ARGUMENT": ("invalid-argument", PERMANENT, OK),
    "NOT_FOUND": ("registration-token-not-registered", PERMANENT, OK),
    "UNREGISTERED": ("registration-token-not-registered", PERMANENT, OK),
    "SENDER_ID_MISMATCH": ("sender-id-mismatch", PERMANENT, OK),
    "INTERNAL": ("internal-error", RETRY, RETRY),
    "UNAVAILABLE": ("internal-error", RETRY, RETRY),
    "DEADLINE_EXCEEDED": ("internal-error", RETRY, RETRY),
    # The brief says "success" on unsubscribe; it is not one (the token can still be a member
    # of this topic), so topic-sync retries it and keeps the removal owed.
    "TOO_MANY_TOPICS": ("too-many-topics", PERMANENT, RETRY),
    "RESOURCE_EXHAUSTED": ("rate-limited", RETRY, RETRY),
    "QUOTA_EXCEEDED": ("rate-limited", RETRY, RETRY),
    "UNAUTHENTICATED": ("credentials", STOP, STOP),
    "PERMISSION_DENIED": ("credentials", STOP, STOP),
    "UNKNOWN_ERROR": ("unknown-error", RETRY, RETRY),
}
# "anything else" in the brief's last row.
ANYTHING_ELSE = ("unknown-error", RETRY, RETRY)

# Dead tokens: FCM will never deliver to them, so they are not sent to again.
DEAD_TOKEN_CODES = {"invalid-argument", "registration-token-not-registered", "sender-id-mismatch"}


@pytest.mark.parametrize("reason", sorted(BRIEF_TABLE))
def test_every_brief_reason_maps_as_documented(reason):
    code, subscribe, unsubscribe = BRIEF_TABLE[reason]

    rule = classify(reason)

    assert rule.code == code
    assert rule.outcome(Op.SUBSCRIBE) == subscribe
    assert rule.outcome(Op.UNSUBSCRIBE) == unsubscribe
    assert rule.subscribe == subscribe
    assert rule.unsubscribe == unsubscribe
    assert reason in rule.reasons


def test_table_has_no_reason_the_brief_does_not_list():
    listed = {reason for rule in (*RULES, UNKNOWN) for reason in rule.reasons}
    assert listed == set(BRIEF_TABLE)


@pytest.mark.parametrize(
    "reason",
    ["SOMETHING_NEW", "ABORTED", "FAILED_PRECONDITION", "ALREADY_EXISTS", "", "   ", "4 0 4"],
)
def test_unknown_reasons_are_retryable_unknown_errors(reason):
    rule = classify(reason)
    assert rule is UNKNOWN
    assert (rule.code, rule.subscribe, rule.unsubscribe) == ANYTHING_ELSE
    assert not rule.marks_invalid


@pytest.mark.parametrize("reason", sorted(BRIEF_TABLE))
def test_lower_case_and_padded_variants_map_the_same(reason):
    rule = classify(reason)
    assert classify(reason.lower()) is rule
    assert classify(reason.title()) is rule
    assert classify(f"  {reason}\n") is rule


def test_a_near_miss_is_not_mistaken_for_a_known_reason():
    # Not-registered means "stop sending"; a typo must not make a live token look dead.
    assert classify("NOT_FOUND_X") is UNKNOWN
    assert classify("UNREGISTERED_TOKEN") is UNKNOWN
    assert classify("INVALID-ARGUMENT") is UNKNOWN


@pytest.mark.parametrize("reason", sorted(BRIEF_TABLE))
def test_marks_invalid_only_for_dead_tokens(reason):
    rule = classify(reason)
    assert rule.marks_invalid is (rule.code in DEAD_TOKEN_CODES)


def test_dead_token_codes_are_exactly_those_marked_invalid():
    marked = {rule.code for rule in (*RULES, UNKNOWN) if rule.marks_invalid}
    assert marked == DEAD_TOKEN_CODES
    # A token over the topic limit is alive: it only cannot join one more topic.
    assert not rule_for_code("too-many-topics").marks_invalid


def test_all_codes_unique_and_complete():
    codes = all_codes()
    assert len(codes) == len(set(codes))
    assert set(codes) == {code for code, _, _ in BRIEF_TABLE.values()} | {"no-verdict"}
    assert codes[-2:] == ["unknown-error", "no-verdict"]


@pytest.mark.parametrize("code", sorted({code for code, _, _ in BRIEF_TABLE.values()}))
def test_rule_for_code_round_trips(code):
    rule = rule_for_code(code)
    assert isinstance(rule, ErrorRule)
    assert rule.code == code
    assert all(classify(reason) is rule for reason in rule.reasons)


def test_no_reason_belongs_to_two_rules():
    reasons = [reason for rule in (*RULES, UNKNOWN) for reason in rule.reasons]
    assert len(reasons) == len(set(reasons))


def test_unsubscribe_never_fails_for_good():
    # A removal either succeeds, is retried, or stops the run: a "permanent" failure would
    # leave a token on the topic for good, and it would receive messages not meant for it.
    for rule in (*RULES, UNKNOWN):
        assert rule.unsubscribe is not Outcome.PERMANENT


def test_outcome_values_are_the_brief_wording():
    assert {o.value for o in Outcome} == {OK, PERMANENT, RETRY, STOP}


def test_markdown_table_lists_every_rule_with_brief_wording():
    lines = markdown_table().splitlines()
    assert lines[0] == "| raw reason(s) | code | meaning | subscribe | unsubscribe |"
    assert len(lines) == 2 + len(RULES) + 2
    assert lines[-2].startswith("| anything else, UNKNOWN_ERROR | unknown-error |")
    assert lines[-1].startswith(
        "| UNEXPECTED_ANSWER, REDIRECTED, or any of the above without per-token evidence "
        "| no-verdict |"
    )
    assert "| NOT_FOUND, UNREGISTERED | registration-token-not-registered |" in lines[3]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == 5
        assert cells[3] in (OK, PERMANENT, RETRY, STOP)
        assert cells[4] in (OK, PERMANENT, RETRY, STOP)


# ------------------------------------------------------------------ verdicts need evidence


@pytest.mark.parametrize("op", list(Op))
@pytest.mark.parametrize("reason", all_reasons())
def test_an_unproven_answer_never_settles_a_token(reason, op):
    # A whole-request error or a v1 error without FCM's details says nothing about a token:
    # it may neither confirm a removal nor mark a token dead, whatever its code.
    proven = rule_for(reason, op, proven=True)
    unproven = rule_for(reason, op, proven=False)
    assert proven is classify(reason)
    if proven.outcome(op) in (Outcome.SUCCESS, Outcome.PERMANENT):
        assert unproven is NO_VERDICT
    else:
        assert unproven is proven  # a retry stays a retry, a stop stays a stop
    assert unproven.outcome(op) in (Outcome.RETRY, Outcome.STOP)
    assert not unproven.marks_invalid


def test_no_verdict_is_retried_both_ways_and_marks_nothing():
    assert (NO_VERDICT.subscribe, NO_VERDICT.unsubscribe) == (RETRY, RETRY)
    assert not NO_VERDICT.marks_invalid
    assert rule_for_code("no-verdict") is NO_VERDICT


@pytest.mark.parametrize("op", list(Op))
@pytest.mark.parametrize("proven", [True, False])
def test_an_answer_of_no_documented_shape_or_a_redirect_is_no_verdict(op, proven):
    # What a transport reports for a 2xx of no documented shape (HTML, empty, an error
    # object...) or a 3xx: never a success, never a dead mark, whatever claims to prove it.
    assert NO_VERDICT.reasons == (UNEXPECTED_ANSWER, REDIRECTED)
    for reason in NO_VERDICT.reasons:
        assert classify(reason) is NO_VERDICT
        assert rule_for(reason, op, proven=proven) is NO_VERDICT
