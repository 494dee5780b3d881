"""The FCM client over firebase-admin: one transport's topic calls plus the SDK's publish and
list, composed; and the one place that maps a transport name to its topic calls.

A transport module (v1_sdk, v1_direct, legacy_iid) says only how a batch of subscriptions
travels (`TopicCalls`); `SdkTransport` holds one of them and an `SdkMessaging`, and is the
`FcmClient` the engine is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import firebase_admin
from firebase_admin import messaging

from topic_sync.fcm import TRANSPORTS
from topic_sync.fcm.client import BatchResult, check_batch
from topic_sync.fcm.legacy_iid import LegacyIidTopics
from topic_sync.fcm.sdk_messaging import SdkMessaging
from topic_sync.fcm.target import FcmTarget
from topic_sync.fcm.v1_direct import V1DirectTopics
from topic_sync.fcm.v1_sdk import V1SdkTopics
from topic_sync.states import FcmApi

__all__ = ["TRANSPORTS", "SdkTransport", "TopicCalls", "make_client"]


class TopicCalls(Protocol):
    """How one transport carries a batch of subscriptions or removals (1 to 1000 tokens)."""

    api: FcmApi

    def warm_up(self, requests: int | None) -> None:
        """Get ready, in the background, to send about `requests` (None: not known)."""

    def manage(
        self, batch: list[str], topic: str, *, subscribe: bool, give_up_at: float | None
    ) -> BatchResult: ...


_TOPIC_CALLS: dict[str, Callable[[firebase_admin.App], TopicCalls]] = {
    "v1": V1SdkTopics,
    "v1-direct": V1DirectTopics,
    "legacy-iid": LegacyIidTopics,
}


class SdkTransport:
    """An FcmClient over a firebase-admin app: its transport's topic calls, and the SDK's
    publish and list (the same for every transport)."""

    def __init__(self, app: firebase_admin.App, transport: str) -> None:
        if transport not in TRANSPORTS:
            choices = ", ".join(TRANSPORTS)
            raise ValueError(f"unknown transport {transport!r}; choose from {choices}")
        self.app = app
        self.transport = transport
        self.topic_calls = _TOPIC_CALLS[transport](app)
        self._sdk = SdkMessaging(app)

    @property
    def target(self) -> FcmTarget:
        return self._sdk.target

    @property
    def api(self) -> FcmApi:
        """The API its topic requests go to (each has a quota of its own)."""
        return self.topic_calls.api

    def warm_up(self, requests: int | None) -> None:
        """Get ready, in the background, to send about `requests` topic requests (None: not
        known): a transport of its own opens its connections meanwhile."""
        self.topic_calls.warm_up(requests)

    def subscribe(
        self, tokens: Sequence[str], topic: str, *, give_up_at: float | None = None
    ) -> BatchResult:
        """Subscribe a batch; requests not sent by `give_up_at` (time.monotonic) are not sent
        and answer a retryable, unproven verdict."""
        batch = check_batch(tokens)
        return self.topic_calls.manage(batch, topic, subscribe=True, give_up_at=give_up_at)

    def unsubscribe(
        self, tokens: Sequence[str], topic: str, *, give_up_at: float | None = None
    ) -> BatchResult:
        batch = check_batch(tokens)
        return self.topic_calls.manage(batch, topic, subscribe=False, give_up_at=give_up_at)

    def publish(self, message: messaging.Message, *, validate_only: bool = False) -> str:
        return self._sdk.publish(message, validate_only=validate_only)

    def list_topics(self, token: str) -> set[str]:
        return self._sdk.list_topics(token)


def make_client(app: firebase_admin.App, transport: str) -> SdkTransport:
    """The client for a transport name (see TRANSPORTS)."""
    return SdkTransport(app, transport)
