"""A publish FCM accepted must never be lost to a database blip: its id is logged first, it
is recorded across a reconnect, and if the database stays out of reach the evidence left
behind lets the rerun and `status` say it went out, so nobody guesses."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import make_url, text

from tests.support import admin_engine, last_recipients, opts, toks
from topic_sync.app import report
from topic_sync.engine import evidence
from topic_sync.engine.run import run_day
from topic_sync.errors import ExitCode, PublishUnrecorded
from topic_sync.store import db


class AfterAccepted:
    """The real client; right after FCM accepted the day's message, `then()` runs."""

    def __init__(self, inner, then) -> None:
        self.inner, self.then = inner, then
        self.transport, self.target = inner.transport, inner.target
        self.subscribe, self.unsubscribe = inner.subscribe, inner.unsubscribe
        self.accepted: list[str] = []

    def publish(self, message, validate_only=False):
        message_id = self.inner.publish(message, validate_only=validate_only)
        if not validate_only:
            self.accepted.append(message_id)
            self.then()
        return message_id


def terminate_backends(database_url: str, pg_server_url: str) -> None:
    """End every session of the database, as a failover or a network blip would."""
    name = make_url(db.sqlalchemy_url(database_url)).database
    admin = admin_engine(pg_server_url)
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        )
    admin.dispose()


def allow_connections(database_url: str, pg_server_url: str, allowed: bool) -> None:
    name = make_url(db.sqlalchemy_url(database_url)).database
    admin = admin_engine(pg_server_url)
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
    admin.dispose()


def publish_record(engine) -> tuple[str, str | None, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(text("SELECT publish_state, message_id, attempt FROM runs")).one()
        )


@pytest.mark.parametrize("blip", ["sessions ended", "connections refused for a while"])
def test_a_blip_right_after_fcm_accepted_is_recorded_on_a_new_connection(
    tmp_path, message_file, deps, emulator, recorder, database_url, pg_server_url, blip
) -> None:
    refusing = blip == "connections refused for a while"

    def outage() -> None:
        if refusing:
            allow_connections(database_url, pg_server_url, False)
        terminate_backends(database_url, pg_server_url)

    def sleep(seconds: float) -> None:  # the database is back after the first wait
        recorder.sleep(seconds)
        allow_connections(database_url, pg_server_url, True)

    client = AfterAccepted(deps.client, outage)
    state = tmp_path / "state"
    options = opts(tmp_path, message_file, toks(0, 10), evidence_dir=state)
    try:
        result = run_day(options, dataclasses.replace(deps, client=client, sleep=sleep))
    finally:
        allow_connections(database_url, pg_server_url, True)
    assert result.status == "published" and result.message_id == client.accepted[0]
    # The id was logged before anything tried to record it.
    logged = [line for line in recorder.lines if client.accepted[0] in line]
    assert logged[0].startswith("FCM accepted the publish of 2026-11-22")
    retried = [line for line in recorder.lines if "trying again on a new connection" in line]
    assert len(retried) == (1 if refusing else 0)  # ended sessions: the pool reconnects
    assert publish_record(deps.engine) == ("sent", client.accepted[0], 1)
    assert len(emulator.publishes) == 1 and evidence.pending(state) == []
    assert last_recipients(emulator, result.topic) == frozenset(toks(0, 10))


def test_a_database_out_of_reach_leaves_evidence_the_rerun_and_status_use(
    tmp_path, message_file, deps, emulator, database_url, pg_server_url
) -> None:
    def outage() -> None:
        allow_connections(database_url, pg_server_url, False)
        terminate_backends(database_url, pg_server_url)

    client = AfterAccepted(deps.client, outage)
    state = tmp_path / "state"
    options = opts(tmp_path, message_file, toks(0, 10), evidence_dir=state)
    try:
        with pytest.raises(PublishUnrecorded) as unrecorded:
            run_day(options, dataclasses.replace(deps, client=client))
    finally:
        allow_connections(database_url, pg_server_url, True)
    [message_id] = client.accepted
    assert unrecorded.value.exit_code is ExitCode.WITHHELD
    assert message_id in unrecorded.value.message and "do NOT resend" in unrecorded.value.message
    [(path, proof)] = evidence.pending(state)
    assert (proof.message_id, proof.date, proof.campaign) == (message_id, "2026-11-22", "jobreco")
    assert str(path) in unrecorded.value.message
    # The database still says "intent": status reads the evidence and says it went out.
    assert publish_record(deps.engine)[:2] == ("intent", None)
    latest = report.with_evidence(report.latest_runs(deps.engine), [proof])
    assert latest[0].unrecorded == message_id
    assert report.status_exit_code_of(latest) is ExitCode.OK
    assert "PUBLISHED, NOT RECORDED" in report.render_status(latest)
    assert report.status_exit_code_of(report.latest_runs(deps.engine)) is ExitCode.WITHHELD
    # The rerun records it from the evidence, sends nothing, and removes the file.
    again = run_day(options, deps)
    assert again.status == "already-published" and again.message_id == message_id
    assert publish_record(deps.engine)[:2] == ("sent", message_id)
    assert evidence.pending(state) == [] and len(emulator.publishes) == 1


def test_evidence_of_another_intent_is_never_applied(
    tmp_path, message_file, deps, emulator
) -> None:
    state = tmp_path / "state"
    options = opts(tmp_path, message_file, toks(0, 5), evidence_dir=state)
    first = run_day(options, deps)
    with deps.engine.begin() as conn:  # an unconfirmed publish of another day
        conn.execute(
            text(
                "UPDATE runs SET publish_state = 'intent', message_id = NULL, "
                "publish_intent_at = now(), status = 'publishing'"
            )
        )
        run_id, intent_at = conn.execute(text("SELECT id, publish_intent_at FROM runs")).one()
    stale = evidence.PublishEvidence(
        project_id=deps.client.target.project_id,
        endpoint=deps.client.target.endpoint,
        campaign="jobreco",
        campaign_id=1,
        run_id=run_id,
        date="2026-11-22",
        topic=first.topic,
        message_id="projects/p/messages/1",
        intent_at=(intent_at.replace(microsecond=(intent_at.microsecond + 1) % 10**6)).isoformat(),
        accepted_at=intent_at.isoformat(),
    )
    evidence.write(state, stale)
    from topic_sync.errors import PublishWithheld

    with pytest.raises(PublishWithheld, match="never confirmed"):
        run_day(options, deps)  # not this intent's evidence: still nobody guesses for you
    assert publish_record(deps.engine)[:2] == ("intent", None)
    assert len(evidence.pending(state)) == 1
