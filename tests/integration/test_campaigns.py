"""Campaigns against real PostgreSQL and the emulator: one publish per campaign and date,
whatever its topics are called; a configuration that disagrees with the record is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from alembic import command
from sqlalchemy import text

from tests.support import DAY, POOL, PREFIX, last_recipients, opts, snapshot, toks
from topic_sync import store
from topic_sync.app.commands import Scope, repair_topics
from topic_sync.app.services import Io
from topic_sync.config.resolve import Resolved, Source
from topic_sync.config.table import DEFAULTS
from topic_sync.engine.run import run_day
from topic_sync.errors import CampaignMismatch
from topic_sync.pool import pool_topics, topic_for
from topic_sync.store import db


def rename(engine, name: str, **changes) -> None:
    """What `topic-sync campaign update NAME ... --live` records."""
    with engine.begin() as conn:
        before = store.campaign_by_name(conn, name, lock=True)
        store.update_campaign(conn, before, changes, "test")


def test_a_changed_prefix_never_publishes_a_date_twice(
    tmp_path, message_file, deps, emulator
) -> None:
    audience = toks(0, 20)
    first = run_day(opts(tmp_path, message_file, audience), deps)
    assert first.status == "published" and first.campaign == PREFIX
    rename(deps.engine, PREFIX, prefix="jobs")
    # The host with the new configuration finds the campaign by its prefix: already done.
    new = run_day(opts(tmp_path, message_file, audience, prefix="jobs"), deps)
    assert new.status == "already-published" and new.message_id == first.message_id
    # The host still configured with the old prefix is refused, and told the fix.
    before = snapshot(deps.engine)
    with pytest.raises(CampaignMismatch, match="recorded with topic prefix 'jobs'") as refused:
        run_day(opts(tmp_path, message_file, audience), deps)
    assert refused.value.exit_code == 2
    assert "topic-sync campaign update jobreco --topic-prefix jobreco --live" in str(refused.value)
    assert snapshot(deps.engine) == before
    assert len(emulator.publishes) == 1
    # The next day goes to the new pool, under the same campaign.
    later = run_day(
        opts(tmp_path, message_file, audience, DAY + dt.timedelta(1), prefix="jobs"), deps
    )
    assert later.status == "published" and later.topic.startswith("jobs-")
    assert last_recipients(emulator, later.topic) == frozenset(audience)
    with deps.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(DISTINCT campaign_id) FROM runs")) == 1


def test_configuration_files_name_the_campaign(tmp_path, message_file, deps, emulator) -> None:
    named = opts(tmp_path, message_file, toks(0, 5), campaign="daily")
    assert run_day(named, deps).campaign == "daily"
    # Old and new configuration of one campaign, mid-rollout: only the recorded one runs.
    moved = dataclasses.replace(named, prefix="daily-v2")
    with pytest.raises(CampaignMismatch, match="recorded with topic prefix 'jobreco'"):
        run_day(moved, deps)
    # Another campaign name over the same prefix is the same topics: refused.
    with pytest.raises(CampaignMismatch, match="belongs to campaign 'daily'") as taken:
        run_day(dataclasses.replace(named, campaign="other", day=DAY + dt.timedelta(1)), deps)
    assert "topic-sync campaign update daily --name other --live" in str(taken.value)
    assert len(emulator.publishes) == 1


def test_the_pool_size_is_remembered(tmp_path, message_file, deps, emulator) -> None:
    audience = toks(0, 5)
    run_day(opts(tmp_path, message_file, audience, pool_size=3), deps)
    later = DAY + dt.timedelta(days=1)
    # Not configured (the default): the recorded pool of 3 decides the topic.
    unconfigured = opts(tmp_path, message_file, audience, later, pool_size=7, pool_size_given=False)
    assert run_day(unconfigured, deps).topic == topic_for(PREFIX, 3, later)
    # Configured otherwise: refused, nothing done.
    with pytest.raises(CampaignMismatch, match="pool of 3 topics, but this configuration says 4"):
        run_day(opts(tmp_path, message_file, audience, later + dt.timedelta(1), pool_size=4), deps)
    assert len(emulator.publishes) == 2


def resolved_for(prefix: str, pool_size: int | None = None, day=None) -> Resolved:
    given = {"topic_prefix": prefix, **({"pool_size": pool_size} if pool_size else {})}
    settings = DEFAULTS.replace(**given)
    return Resolved(settings, {name: Source.FLAG for name in given}, day=day)


def test_reconcile_covers_the_recorded_pool_not_a_guess(tmp_path, message_file, deps) -> None:
    run_day(opts(tmp_path, message_file, toks(0, 5), pool_size=3), deps)
    io = Io(log=lambda _line: None, environ={})
    engine = deps.engine
    # No --pool-size: the recorded pool, not the default of 7 (four topics never used).
    assert repair_topics(engine, resolved_for(PREFIX), Scope(), io) == tuple(pool_topics(PREFIX, 3))
    assert repair_topics(engine, resolved_for(PREFIX, day=DAY), Scope(), io) == (
        topic_for(PREFIX, 3, DAY),
    )
    with pytest.raises(CampaignMismatch, match="pool of 3 topics"):
        repair_topics(engine, resolved_for(PREFIX, 5), Scope(), io)
    # A prefix no campaign has: the topics of it the database knows, said so.
    lines: list[str] = []
    assert repair_topics(engine, resolved_for("nobody"), Scope(), Io(lines.append, {})) == ()
    assert "no campaign is recorded" in lines[0]


def test_the_upgrade_makes_a_campaign_per_prefix_and_learns_its_pool(
    tmp_path, message_file, deps, database_url, emulator
) -> None:
    cfg = db.alembic_config(database_url)
    command.downgrade(cfg, "0008")
    with deps.engine.begin() as conn:
        for day, slot in ((DAY, DAY.toordinal() % 3), (DAY + dt.timedelta(1), None)):
            conn.execute(
                text(
                    "INSERT INTO runs (prefix, run_date, topic, transport, status, publish_state) "
                    "VALUES ('jobreco', :d, :t, 'v1', 'published', 'sent')"
                ),
                {"d": day, "t": f"jobreco-{slot if slot is not None else (day.toordinal() % 3)}"},
            )
    command.upgrade(cfg, "head")
    with deps.engine.connect() as conn:
        [campaign] = store.list_campaigns(conn)
        [change] = store.campaign_changes(conn, campaign.id)
    assert (campaign.name, campaign.prefix, campaign.pool_size) == ("jobreco", "jobreco", None)
    assert change.kind == "migrated"
    # The published dates stay published: the record moved to the campaign.
    again = run_day(opts(tmp_path, message_file, toks(0, 5), pool_size=3), deps)
    assert again.status == "already-published"
    # A pool size that disagrees with the topics the campaign used is refused...
    third = DAY + dt.timedelta(2)
    with pytest.raises(CampaignMismatch, match="does not agree with them"):
        run_day(opts(tmp_path, message_file, toks(0, 5), third, pool_size=4), deps)
    # ...one that agrees is recorded by the next live run, as a change.
    assert run_day(opts(tmp_path, message_file, toks(0, 5), third, pool_size=3), deps).topic == (
        topic_for(PREFIX, 3, third)
    )
    with deps.engine.connect() as conn:
        assert store.campaign_by_name(conn, "jobreco").pool_size == 3
        kinds = [c.kind for c in store.campaign_changes(conn, campaign.id)]
    assert kinds == ["migrated", "changed"]
    assert len(emulator.publishes) == 1


def test_a_dry_run_registers_nothing(tmp_path, message_file, deps) -> None:
    before = snapshot(deps.engine)
    result = run_day(opts(tmp_path, message_file, toks(0, 5), live=False), deps)
    assert "registers campaign 'jobreco'" in result.note
    assert snapshot(deps.engine) == before


def test_the_lock_is_the_campaigns(tmp_path, message_file, deps) -> None:
    from topic_sync.errors import Locked

    run_day(opts(tmp_path, message_file, toks(0, 5)), deps)
    rename(deps.engine, PREFIX, prefix="jobs")
    with db.advisory_lock(deps.engine, db.campaign_lock(PREFIX), what="test"):
        later = opts(tmp_path, message_file, toks(0, 5), DAY + dt.timedelta(POOL), prefix="jobs")
        with pytest.raises(Locked, match="campaign:jobreco"):
            run_day(later, deps)
