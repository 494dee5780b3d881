"""The database schema. Alembic migrations create it; a test keeps them in agreement.

Subscription rows are the job's memory of what FCM holds. A row is either
confirmed (`subscribed`, `unsubscribed`) or pending (`pending_subscribe`,
`pending_unsubscribe`): pending means an FCM call is still owed, and a pending
removal means FCM may still hold the token, so publishing must wait.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from topic_sync.states import (
    CampaignChange,
    FcmApi,
    Op,
    PublishState,
    RunStatus,
    SubscriptionStatus,
)
from topic_sync.store.fragments import MEMBER_SQL, PENDING_SQL, sql_list

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, values: type[enum.StrEnum]) -> str:
    """The CHECK constraint that keeps a column to an enum's values (see states)."""
    return f"{column} IN {sql_list(values)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Token(Base):
    """One FCM registration token. Tokens can be 4096 characters, too long for a
    btree key, so uniqueness and joins use `token_key`, the token's MD5 as a UUID."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token: Mapped[str] = mapped_column(Text, nullable=False)
    token_key: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), Computed("md5(token)::uuid", persisted=True), nullable=False
    )
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    invalid_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The date of the run that marked it dead, and the audience date it was last tried once
    # more on: a dead token that reappears in a later audience is tried once per death.
    dead_on: Mapped[dt.date | None] = mapped_column(Date)
    retried_on: Mapped[dt.date | None] = mapped_column(Date)
    forgotten_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        UniqueConstraint("token_key"),
        Index("ix_tokens_dead", "invalid_at", postgresql_where=text("invalid_at IS NOT NULL")),
    )


class Campaign(Base):
    """A campaign's stable identity: what makes "one publish per date" true.

    Runs, their publish records and the run lock are keyed on the campaign, not on the name
    of its topics, so a renamed prefix cannot make a published date look unpublished. A
    change of prefix or pool size is an explicit, recorded operation (campaign_changes).
    Its FCM target is the database's (fcm_target): one database, one target.
    """

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    # NULL: not known yet (a campaign made from earlier runs by the upgrade); its next live
    # run records the configured one once the topics it used agree with it.
    pool_size: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(Text, nullable=False, server_default="UTC")
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("prefix"),
        CheckConstraint("pool_size BETWEEN 1 AND 2000", name="pool_size_range"),
    )


class CampaignChangeRecord(Base):
    """Every change of a campaign's identity: who, when, what it was and what it became."""

    __tablename__ = "campaign_changes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    before: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    changed_by: Mapped[str] = mapped_column(Text, nullable=False)
    changed_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        CheckConstraint(one_of("kind", CampaignChange), name="kind_known"),
        Index("ix_campaign_changes_campaign_id", "campaign_id"),
    )


class AttemptFigures:
    """What one attempt at a day's run did: its plan, counts, status and times. `runs`
    holds the current attempt's; `run_attempts` keeps each earlier one's, so a rerun never
    overwrites the history of a day (store.runs.ATTEMPT_COLUMNS lists them)."""

    topic: Mapped[str] = mapped_column(Text, nullable=False)
    transport: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=RunStatus.PLANNED.value
    )
    audience_path: Mapped[str | None] = mapped_column(Text)
    audience_lines: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    audience_size: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    duplicates: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    skipped_invalid: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    suppressed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    newly_dead: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    to_add: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    to_remove: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    added: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    removed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failed: Mapped[dict[str, int]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    # Every attempt's outcome per token, counted: {"ok": n, "<error code>": n}.
    outcomes: Mapped[dict[str, int]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    retries: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    wait_seconds: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    note: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Run(AttemptFigures, Base):
    """One daily run per (campaign, date): the current attempt's figures and the day's
    publish record. `prefix` is the prefix the day's topic was chosen with."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False
    )
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    run_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    publish_state: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=PublishState.NONE.value
    )
    message_id: Mapped[str | None] = mapped_column(Text)
    publish_intent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The day's publish window (NULL: publish as soon as synced) and when the current
    # attempt's sync completed (NULL: not synced): a rerun of a synced day resumes the wait.
    publish_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    publish_by: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("campaign_id", "run_date"),
        CheckConstraint(one_of("publish_state", PublishState), name="publish_state_known"),
        CheckConstraint(one_of("status", RunStatus), name="status_known"),
    )


class RunAttempt(AttemptFigures, Base):
    """An earlier attempt at a day's run, as it ended (its figures kept when a rerun began)."""

    __tablename__ = "run_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        UniqueConstraint("run_id", "attempt"),
        CheckConstraint(one_of("status", RunStatus), name="status_known"),
    )


class Subscription(Base):
    """What FCM holds (or is owed) for one token on one topic."""

    __tablename__ = "subscriptions"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    token_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_code: Mapped[str | None] = mapped_column(Text)
    last_reason: Mapped[str | None] = mapped_column(Text)
    # The status a `forget` found when it queued this removal (subscribed or
    # pending_subscribe), kept while that removal is owed: `forget --undo` restores it.
    forgotten_from: Mapped[str | None] = mapped_column(Text)
    # The run that last planned or answered the row. Not a foreign key: nothing finds a run
    # through it, and the key's check cost one lookup per row written (migration 0014).
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            one_of("status", SubscriptionStatus),
            name="status_known",
        ),
        CheckConstraint(
            f"forgotten_from IN {MEMBER_SQL}",
            name="forgotten_from_known",
        ),
        Index(
            "ix_subscriptions_pending",
            "topic",
            "status",
            "token_id",
            postgresql_where=text(f"status IN {PENDING_SQL}"),
        ),
        Index("ix_subscriptions_token_id", "token_id"),
        # Members and owed work: what the pool's costs count (store.pool_costs), read
        # index-only, however many confirmed removals a topic's history holds.
        Index(
            "ix_subscriptions_live",
            "topic",
            "status",
            "token_id",
            postgresql_where=text(f"status <> '{SubscriptionStatus.UNSUBSCRIBED}'"),
        ),
    )


class TopicFence(Base):
    """Who last planned a topic. Every plan takes the fence (a new epoch); every batch and
    the publish check, in their own transaction, that the epoch is still theirs. A run
    whose lock was lost and whose topic someone else planned since therefore stops instead
    of publishing a stale plan: the row proves whether anybody else touched the topic."""

    __tablename__ = "topic_fences"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False)
    owner: Mapped[str] = mapped_column(Text, nullable=False)
    run_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="SET NULL")
    )
    taken_at: Mapped[dt.datetime] = _now()


class FcmTarget(Base):
    """The one FCM target (project and endpoint) this database's state describes.

    Subscription rows, dead-token marks and publish records are facts about one Firebase
    project at one endpoint; a rehearsal on the emulator must never be read as production.
    """

    __tablename__ = "fcm_target"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(Text, nullable=False)
    endpoint: Mapped[str] = mapped_column(Text, nullable=False)
    bound_at: Mapped[dt.datetime] = _now()

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class FcmQuota(Base):
    """The topic-management quota learned against one FCM target, per API: the next
    command starts from it instead of finding it again from a slow start."""

    __tablename__ = "fcm_quota"

    project_id: Mapped[str] = mapped_column(Text, primary_key=True)
    endpoint: Mapped[str] = mapped_column(Text, primary_key=True)
    api: Mapped[str] = mapped_column(Text, primary_key=True)
    rate: Mapped[float] = mapped_column(Double, nullable=False)  # requests per second
    measured: Mapped[bool] = mapped_column(nullable=False)  # refused above it (else: held)
    # Its 429s said how long to wait: a stream's last second then keeps a margin (pacer).
    waits: Mapped[bool] = mapped_column(nullable=False, server_default=text("false"))
    learned_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        CheckConstraint(one_of("api", FcmApi), name="api_known"),
        CheckConstraint("rate > 0", name="rate_positive"),
    )


class TokenFailure(Base):
    """A token's failed FCM calls within one run, for `report`."""

    __tablename__ = "token_failures"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="CASCADE")
    )
    token_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False
    )
    topic: Mapped[str] = mapped_column(Text, nullable=False)
    op: Mapped[str] = mapped_column(Text, nullable=False)
    code: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    first_seen: Mapped[dt.datetime] = _now()
    last_seen: Mapped[dt.datetime] = _now()
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # Repairs record failures without a run: NULLs must collide too (PostgreSQL 15+).
        UniqueConstraint("run_id", "token_id", "topic", "op", postgresql_nulls_not_distinct=True),
        CheckConstraint(one_of("op", Op), name="op_known"),
        Index("ix_token_failures_token_id", "token_id"),
        Index("ix_token_failures_last_seen", "last_seen"),
    )


class Audience(Base):
    """A campaign's audience of one date, for the audience guard of the next run: the ids of
    its distinct tokens, sorted, in one array (8 bytes a token; a million-token audience is
    one row, written and compared by set-based SQL). Only the two latest dates of each
    campaign are kept."""

    __tablename__ = "audiences"

    campaign_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    run_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("runs.id", ondelete="SET NULL")
    )
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    token_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    saved_at: Mapped[dt.datetime] = _now()
