"""The states things go through, as enums used from the SQL to the reports.

The database's CHECK constraints are generated from these (see store.models and the
migrations, kept equal by a test), the engine writes them, and the reports explain them:
a state cannot be written in one place and forgotten in another.
"""

from __future__ import annotations

import enum


class Op(enum.StrEnum):
    """An FCM topic-management operation."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class SubscriptionStatus(enum.StrEnum):
    """What FCM holds, or is owed, for one token on one topic. Pending rows are the queue."""

    PENDING_SUBSCRIBE = "pending_subscribe"
    SUBSCRIBED = "subscribed"
    PENDING_UNSUBSCRIBE = "pending_unsubscribe"
    UNSUBSCRIBED = "unsubscribed"

    @property
    def pending(self) -> bool:
        return self.value.startswith("pending_")

    @classmethod
    def pending_for(cls, op: Op) -> SubscriptionStatus:
        return cls.PENDING_SUBSCRIBE if op is Op.SUBSCRIBE else cls.PENDING_UNSUBSCRIBE

    @classmethod
    def confirmed_for(cls, op: Op) -> SubscriptionStatus:
        return cls.SUBSCRIBED if op is Op.SUBSCRIBE else cls.UNSUBSCRIBED


class RunStatus(enum.StrEnum):
    """Where a day's run stands; `why` is what the report says when the run has no note."""

    PLANNED = "planned"
    SYNCING = "syncing"
    WAITING = "waiting"  # synced; the publish waits for publish_at (or for --publish-only)
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    WITHHELD = "withheld"
    DEADLINE = "deadline"
    INTERRUPTED = "interrupted"
    FENCED = "fenced"
    GUARDED = "guarded"
    FAILED = "failed"
    NO_AUDIENCE = "no_audience"
    MISSED = "missed"  # synced, but publish_by passed first: not published that day

    @property
    def why(self) -> str:
        return _WHY[self]


_WHY = {
    RunStatus.PLANNED: "in progress",
    RunStatus.SYNCING: "in progress",
    RunStatus.WAITING: "synced, waiting to publish",
    RunStatus.PUBLISHING: (
        "publish not confirmed: in progress, or stopped between sending and recording"
    ),
    RunStatus.PUBLISHED: "published",
    RunStatus.WITHHELD: "withheld: removals unconfirmed",
    RunStatus.DEADLINE: "deadline reached with work left",
    RunStatus.INTERRUPTED: "stopped on request; rerun the date to resume",
    RunStatus.FENCED: "stopped: another run planned the topic after this run's lock was lost",
    RunStatus.GUARDED: "stopped by the dead-token guard: likelier a systemic fault",
    RunStatus.FAILED: "failed",
    RunStatus.NO_AUDIENCE: "the audience never came: nothing synced, nothing published",
    RunStatus.MISSED: "missed its window: publish_by passed before it could publish",
}


class CampaignChange(enum.StrEnum):
    """Why a campaign's record changed: every change of its identity is kept (campaign_changes)."""

    REGISTERED = "registered"  # its first live run recorded it
    MIGRATED = "migrated"  # the upgrade that introduced campaigns made it from earlier runs
    CHANGED = (
        "changed"  # `topic-sync campaign update --live`, or a run recording an unknown pool size
    )


class PublishState(enum.StrEnum):
    """The day's message: not sent, intent recorded (maybe on the wire), or confirmed sent."""

    NONE = "none"
    INTENT = "intent"
    SENT = "sent"


class Transport(enum.StrEnum):
    """How topic requests travel to FCM (the `transport` setting), and the API each uses."""

    V1 = "v1"  # the topic subscription API through firebase-admin's calls
    V1_DIRECT = "v1-direct"  # the same API and requests, over persistent connections
    LEGACY_IID = "legacy-iid"  # the Instance ID batch API (until 2027-09-29)

    @property
    def api(self) -> FcmApi:
        return FcmApi.IID if self is Transport.LEGACY_IID else FcmApi.V1


class FcmApi(enum.StrEnum):
    """An FCM API for topic management; each counts its own quota."""

    V1 = "v1"  # the topic subscription API: one request per token
    IID = "iid"  # the legacy Instance ID batch API: a batch costs its token count

    @classmethod
    def of_transport(cls, transport: str) -> FcmApi:
        """The API a transport's topic requests go to (each has a quota of its own)."""
        return cls.IID if transport == "legacy-iid" else cls.V1
