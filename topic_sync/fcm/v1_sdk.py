"""The `v1` transport: the FCM topic subscription API through firebase-admin's own calls.

firebase-admin sends one request per token, fanned out over up to 100 threads, and folds
every answer into a reason string (or into nothing, for any 2xx). What FCM really answered
is read beneath it, by our adapter, by the evidence rule (answers.py); this module takes
those readings back per request (sdk_bridge.Evidence). The SDK's threads carry nothing of
the caller's, so the batch's budget and the answers travel under each request's name.
"""

from __future__ import annotations

import firebase_admin
from firebase_admin import messaging

from topic_sync.fcm.answers import UNEXPECTED_ANSWER, TokenAnswer
from topic_sync.fcm.client import BatchResult
from topic_sync.fcm.sdk_bridge import TopicRequest, mounted_adapter
from topic_sync.states import FcmApi


class V1SdkTopics:
    """Subscribe and unsubscribe through firebase-admin's v1 calls."""

    api = FcmApi.V1

    def __init__(self, app: firebase_admin.App) -> None:
        self.app = app

    def warm_up(self, requests: int | None) -> None:
        """Nothing: firebase-admin's session opens its connections as its requests come."""

    def manage(
        self, batch: list[str], topic: str, *, subscribe: bool, give_up_at: float | None
    ) -> BatchResult:
        adapter = mounted_adapter(self.app)
        requests = [TopicRequest(subscribe, token, topic) for token in batch]
        call = messaging.subscribe_to_topic if subscribe else messaging.unsubscribe_from_topic
        adapter.evidence.forget(requests)
        with adapter.budgets.v1_batch(requests, give_up_at):
            response = call(batch, topic, app=self.app)
        reasons: list[str | None] = [None] * len(batch)
        for error in response.errors:
            reasons[error.index] = str(error.reason)
        return BatchResult.of_answers(
            [
                _settled(reason, adapter.evidence.take(request))
                for request, reason in zip(requests, reasons, strict=True)
            ]
        )


def _settled(sdk_reason: str | None, noted: TokenAnswer | None) -> TokenAnswer:
    """One token's answer: what the adapter read beneath the SDK, when it read one."""
    if noted is None:
        # No answer reached the adapter (no connection, out of time): no verdict.
        return TokenAnswer(sdk_reason or UNEXPECTED_ANSWER, False)
    if noted.reason is None and sdk_reason is not None:
        return TokenAnswer(sdk_reason, False)  # the SDK failed it after a good answer
    return noted
