"""The `legacy-iid` transport: the Instance ID batch API, through firebase-admin, until its
2027-09-29 turndown.

One request carries up to 1000 tokens and is made in the caller's thread, so its budget and
its raw answer travel in that thread (sdk_bridge.Budgets, sdk_bridge.Evidence). The SDK's
reading of `results` is no evidence (a short list confirms the tokens it leaves out): the raw
answer is read by our rule instead (answers.read_batch_answer).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import firebase_admin
from firebase_admin import exceptions as fb_exceptions
from firebase_admin import messaging

from topic_sync.fcm.answers import REDIRECTED, UNEXPECTED_ANSWER, RawAnswer, read_batch_answer
from topic_sync.fcm.client import BatchResult
from topic_sync.fcm.sdk_bridge import mounted_adapter
from topic_sync.fcm.sdk_messaging import error_wait_hint, whole_request_reason
from topic_sync.states import FcmApi


class LegacyIidTopics:
    """Subscribe and unsubscribe in batches on the Instance ID API."""

    api = FcmApi.IID

    def __init__(self, app: firebase_admin.App) -> None:
        self.app = app

    def warm_up(self, requests: int | None) -> None:
        """Nothing: firebase-admin's session opens its connections as its requests come."""

    def manage(
        self, batch: list[str], topic: str, *, subscribe: bool, give_up_at: float | None
    ) -> BatchResult:
        adapter = mounted_adapter(self.app)
        evidence = adapter.evidence
        call = (
            messaging.subscribe_to_topic_legacy
            if subscribe
            else messaging.unsubscribe_from_topic_legacy
        )
        evidence.note_batch(None)  # an earlier attempt's answer is not this one's
        try:
            with warnings.catch_warnings(), adapter.budgets.this_thread(give_up_at):
                warnings.simplefilter("ignore", DeprecationWarning)
                call(batch, topic, app=self.app)
        except fb_exceptions.FirebaseError as error:
            # An error for the whole batch says nothing about any one token, whatever its
            # code: a 404 or 400 here must never confirm a removal or mark a token dead.
            reason = _whole_reason(evidence.take_batch()) or whole_request_reason(error)
            return BatchResult.whole(reason, len(batch), retry_after=error_wait_hint(error))
        except (ValueError, TypeError, AttributeError, KeyError):
            # firebase-admin could not read a 200 (no `results`, results of another shape).
            raw = evidence.take_batch()
            if raw is None or read_batch_answer(raw, batch) is not None:
                raise  # not an answer of FCM's it choked on: a fault of ours
            return BatchResult.whole(UNEXPECTED_ANSWER, len(batch))
        return legacy_result(evidence.take_batch(), batch)


def legacy_result(raw: RawAnswer | None, tokens: Sequence[str]) -> BatchResult:
    """A legacy batch's result from the raw answer to it: per token only when it holds exactly
    one result object per token sent; otherwise a whole-request no-verdict."""
    per_token = read_batch_answer(raw, tokens) if raw is not None else None
    if per_token is None:
        return BatchResult.whole(_whole_reason(raw) or UNEXPECTED_ANSWER, len(tokens))
    return BatchResult.per_token(per_token)


def _whole_reason(raw: RawAnswer | None) -> str | None:
    """The reason of a legacy batch answer that is about no token, when the raw answer says
    more than the SDK's exception: a redirect, or a 2xx of no known shape (one cut short is
    no answer at all, as on v1)."""
    if raw is None or raw.body is None:
        return None
    if raw.redirect:
        return REDIRECTED
    return UNEXPECTED_ANSWER if 200 <= raw.status < 300 else None
