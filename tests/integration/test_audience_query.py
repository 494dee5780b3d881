"""--audience-query against real PostgreSQL: exactly one statement, on a session that cannot
write. Each attack below was written to run a write if the query could leave its READ ONLY
transaction (a `; COMMIT; ...` through the simple query protocol runs every statement)."""

from __future__ import annotations

import contextlib

import pytest

from tests.support import ensure_campaign, execute, toks
from topic_sync import store
from topic_sync.errors import InputFileError

AUDIENCE = toks(0, 5)


@pytest.fixture
def reco(engine):
    execute(engine, "CREATE TABLE reco (token text, n int)")
    for n, token in enumerate(AUDIENCE):
        execute(engine, "INSERT INTO reco VALUES (:t, :n)", t=token, n=n)
    with engine.begin() as conn:
        campaign = ensure_campaign(conn, "jobreco")
    execute(
        engine,
        "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, status, "
        "publish_state) VALUES (:c, 'jobreco', '2026-11-22', 'jobreco-0', 'v1', 'published', "
        "'sent')",
        c=campaign,
    )
    execute(
        engine,
        "CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM runs RETURNING 1'",
    )
    return engine


def rows(engine, query: str, column: str | None = None) -> list[str | None]:
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(store.audience_query_connection(engine, None))
        return list(
            stack.enter_context(contextlib.closing(store.audience_query_rows(raw, query, column)))
        )


def published_runs(engine) -> int:
    return execute(engine, "SELECT 1 FROM runs WHERE publish_state = 'sent'")


ATTACKS = {
    "statements after the query": (
        "SELECT token FROM reco; COMMIT; DELETE FROM runs; SELECT 'x' AS token",
        "syntax error",
    ),
    "closing the wrapper's parenthesis": (
        "SELECT token FROM reco) AS audience; COMMIT; DELETE FROM runs; "
        "SELECT * FROM (SELECT token FROM reco",
        "more than one statement",
    ),
    "a comment hiding the rest": (
        "SELECT token FROM reco) AS a; COMMIT; DELETE FROM runs; --",
        "more than one statement",
    ),
    "a data-modifying WITH": (
        "WITH gone AS (DELETE FROM runs RETURNING 1) SELECT token FROM reco",
        "data-modifying statement",
    ),
    "a function that writes": (
        "SELECT token FROM reco WHERE wipe() IS NOT NULL",
        "cannot execute DELETE in a read-only transaction",
    ),
    "switching the transaction to read-write": (
        "SELECT token FROM reco WHERE (SELECT count(*) FROM runs) >= 0 "
        "AND set_config('transaction_read_only', 'off', true) IS NOT NULL",
        "read-write mode",
    ),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_query_cannot_write(reco, attack: str) -> None:
    query, reason = ATTACKS[attack]
    with pytest.raises(InputFileError) as info:
        rows(reco, query)
    assert info.value.path == "query"
    assert published_runs(reco) == 1
    assert reason in info.value.reason
    # The pooled connection comes back able to write: the read-only session was undone.
    assert execute(reco, "UPDATE reco SET n = n + 1") == len(AUDIENCE)


def test_the_session_itself_is_read_only(reco) -> None:
    # Even a session-level switch tried from inside the one statement changes nothing that
    # lasts: the transaction stays read only and is rolled back.
    query = (
        "SELECT token FROM reco "
        "WHERE set_config('default_transaction_read_only', 'off', false) = 'off'"
    )
    assert rows(reco, query) == AUDIENCE
    with store.audience_query_connection(reco, None) as raw:
        store.audience_query_column(raw, "reco", None)
        with raw.cursor() as cur:
            cur.execute("SHOW default_transaction_read_only")
            assert cur.fetchone() == ("off",)  # the pool's default, restored by the rollback
        raw.rollback()


def test_a_good_query_streams_its_token_column_as_text(reco) -> None:
    assert rows(reco, "SELECT n, token FROM reco ORDER BY n") == AUDIENCE
    assert rows(reco, "SELECT n FROM reco ORDER BY n", "n") == ["0", "1", "2", "3", "4"]
    assert rows(reco, "reco;") == AUDIENCE


def test_describing_a_query_runs_nothing(reco) -> None:
    execute(reco, "CREATE SEQUENCE counter")
    query = "SELECT token, nextval('counter') AS n FROM reco"
    with store.audience_query_connection(reco, None) as raw:
        assert store.audience_query_column(raw, query, None) == "token"
    assert execute(reco, "SELECT 1 FROM counter WHERE NOT is_called") == 1
