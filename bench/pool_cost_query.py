#!/usr/bin/env python3
"""What the cost policy's query costs: every pool topic's operations, at 1,000,000 tokens.

    .venv/bin/python bench/pool_cost_query.py --tokens 1000000 --pool 7 --runs 5

Starts a private PostgreSQL (EmbeddedServer, in a temporary folder), migrates a database and
writes, in SQL, the state a pool has after `--weeks` weeks of daily runs over an audience
that replaces a fifth of itself every day (day d's audience is the tokens d*N/5+1 ..
d*N/5+N): topic k holds the members of the latest day it synced, plus a confirmed removal
for every token an earlier week of it held. 160-character tokens, as FCM's. Then, `--runs`
times, in one transaction rolled back each time, as a run does it: COPY the next day's
audience (load_audience), stage it (stage_audience), time `store.pool_costs` over the pool
(the one statement the choice adds) and the diff of the topic it picks (plan_topic), then
settle the diff's first 200,000 rows in batches of 1000 as the drain records answers (what
an index costs every batch). Prints each step's median and range, and the query's EXPLAIN
(ANALYZE, BUFFERS). With `--without-live-index`, each run is paired with one made without
the index of live rows (migration 0012), dropped and made again in between.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from topic_sync import store  # noqa: E402
from topic_sync.engine.choice import choose  # noqa: E402
from topic_sync.pool import PoolPolicy, pool_topics  # noqa: E402
from topic_sync.store.db import make_engine, sqlalchemy_url, upgrade  # noqa: E402
from topic_sync.store.embedded import EmbeddedServer  # noqa: E402

PREFIX = "bench"
TOKEN_SQL = "'bench:' || lpad({id}::text, 12, '0') || repeat('x', 142)"  # 160 characters


def token(number: int) -> str:
    return f"bench:{number:012d}" + "x" * 142


def build_state(engine, size: int, pool: int, weeks: int) -> tuple[int, list[str]]:
    """The pool after `weeks` weeks of days; returns the next day's number and the topics."""
    step = size // 5
    days = weeks * pool
    today = days
    topics = pool_topics(PREFIX, pool)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO tokens (id, token) SELECT g, {TOKEN_SQL.format(id='g')} "
                "FROM generate_series(1, :last) g"
            ),
            {"last": today * step + size},
        )
        for slot, topic in enumerate(topics):
            synced = [d for d in range(days) if d % pool == slot]
            latest = synced[-1]
            # Its days' windows are pool*step apart, more than their size: disjoint.
            conn.execute(
                text(
                    "INSERT INTO subscriptions (topic, token_id, status) "
                    "SELECT :topic, g, CASE WHEN g > :low THEN 'subscribed' ELSE 'unsubscribed' "
                    "END FROM generate_series(:first, :high) g "
                    "WHERE (g - :first) % (:pool * :step) < :size"
                ),
                {
                    "topic": topic,
                    "first": synced[0] * step + 1,
                    "low": latest * step,
                    "high": latest * step + size,
                    "pool": pool,
                    "step": step,
                    "size": size,
                },
            )
            conn.execute(
                text(
                    "INSERT INTO runs (campaign_id, prefix, run_date, topic, transport, status, "
                    "publish_state, published_at) VALUES (:c, :p, :d, :t, 'v1', 'published', "
                    "'sent', now() - make_interval(days => :ago))"
                ),
                {
                    "c": campaign(conn),
                    "p": PREFIX,
                    "d": dt.date(2026, 1, 1) + dt.timedelta(days=latest),
                    "t": topic,
                    "ago": today - latest,
                },
            )
        conn.execute(text("SELECT setval('tokens_id_seq', (SELECT max(id) FROM tokens))"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tokens"))
        conn.execute(text("VACUUM ANALYZE subscriptions"))
    return today, topics


def campaign(conn) -> int:
    return int(
        conn.scalar(
            text(
                "INSERT INTO campaigns (name, prefix, pool_size) VALUES (:p, :p, 7) "
                "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id"
            ),
            {"p": PREFIX},
        )
    )


def one_run(engine, size: int, today: int, pool: int, *, explain: bool) -> dict[str, float]:
    step = size // 5
    audience = (token(n) for n in range(today * step + 1, today * step + size + 1))
    seconds: dict[str, float] = {}
    with engine.connect() as conn:
        try:
            start = time.perf_counter()
            lines = store.load_audience(conn, audience)
            seconds["load (COPY)"] = time.perf_counter() - start
            start = time.perf_counter()
            staged = store.stage_audience(conn, lines)
            seconds["stage_audience"] = time.perf_counter() - start
            start = time.perf_counter()
            costs = store.pool_costs(conn, pool_topics(PREFIX, pool))
            seconds["pool_costs"] = time.perf_counter() - start
            start = time.perf_counter()
            choice = choose(
                conn,
                prefix=PREFIX,
                pool_size=pool,
                day=dt.date(2026, 1, 1) + dt.timedelta(days=today),
                policy=PoolPolicy.COST,
                rest=dt.timedelta(hours=6),
                recorded=None,
            )
            seconds["choose (pool_costs + rule)"] = time.perf_counter() - start
            start = time.perf_counter()
            plan = store.plan_topic(conn, choice.topic, None, lines, staged=staged)
            seconds["plan_topic (chosen)"] = time.perf_counter() - start
            assert plan.to_add + plan.to_remove == choice.chosen_cost().operations
            seconds["settle up to 200,000 rows"] = settle(conn, choice.topic, 200_000)
            if explain:
                print(f"chosen: {choice.topic} ({choice.why}); per topic:")
                for c in costs:
                    print(f"  {c.topic}: +{c.to_add:,} -{c.to_remove:,} = {c.operations:,}")
                plan_rows = conn.execute(
                    text("EXPLAIN (ANALYZE, BUFFERS) " + store.subscriptions.POOL_COSTS_SQL),
                    {"topics": pool_topics(PREFIX, pool)},
                ).all()
                print("\nEXPLAIN (ANALYZE, BUFFERS) of pool_costs:\n")
                print("\n".join("    " + r[0] for r in plan_rows))
                print()
        finally:
            conn.rollback()
    return seconds


def settle(conn, topic: str, rows: int) -> float:
    """Seconds to record `rows` pending rows as done, 1000 a statement, as the drain does."""
    ids = list(
        conn.scalars(
            text(
                "SELECT token_id FROM subscriptions WHERE topic = :t "
                "AND status IN ('pending_subscribe', 'pending_unsubscribe') "
                "ORDER BY token_id LIMIT :n"
            ),
            {"t": topic, "n": rows},
        )
    )
    start = time.perf_counter()
    for at in range(0, len(ids), 1000):
        conn.execute(
            text(
                "UPDATE subscriptions s SET status = CASE s.status WHEN 'pending_subscribe' "
                "THEN 'subscribed' ELSE 'unsubscribed' END, attempts = s.attempts + 1, "
                "last_attempt_at = clock_timestamp() "
                "FROM unnest(CAST(:ids AS bigint[])) AS o(id) "
                "WHERE s.topic = :t AND s.token_id = o.id"
            ),
            {"t": topic, "ids": ids[at : at + 1000]},
        )
    return time.perf_counter() - start


def live_index(engine, *, drop: bool) -> None:
    """Drop migration 0012's index, or make it again; then VACUUM ANALYZE, as before a run."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if drop:
            conn.execute(text("DROP INDEX ix_subscriptions_live"))
        else:
            conn.execute(
                text(
                    "CREATE INDEX ix_subscriptions_live ON subscriptions (topic, status, "
                    "token_id) WHERE status <> 'unsubscribed'"
                )
            )
        conn.execute(text("VACUUM ANALYZE subscriptions"))


def report(title: str, runs: list[dict[str, float]]) -> None:
    print(f"{title}: {len(runs)} runs, median (min-max) seconds:")
    for step in runs[0]:
        xs = [r[step] for r in runs]
        print(f"- {step}: {statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=7)
    parser.add_argument("--weeks", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--without-live-index", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="topic-sync-poolcost-"))
    folder.chmod(0o755)  # the server's own user reads the data folder's parent when root
    server = EmbeddedServer(folder / "pg")
    try:
        url = server.url()
        admin = create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS poolcost"))
            conn.execute(text("CREATE DATABASE poolcost"))
        admin.dispose()
        db_url = url.replace("/postgres?", "/poolcost?")
        upgrade(db_url)
        engine = make_engine(db_url)
        start = time.perf_counter()
        today, topics = build_state(engine, args.tokens, args.pool, args.weeks)
        with engine.connect() as conn:
            rows = conn.scalar(text("SELECT count(*) FROM subscriptions"))
            members = conn.scalar(
                text("SELECT count(*) FROM subscriptions WHERE status = 'subscribed'")
            )
            tokens = conn.scalar(text("SELECT count(*) FROM tokens"))
        print(
            f"audience {args.tokens:,}, pool {args.pool}, {args.weeks} weeks of 20% daily "
            f"churn: {tokens:,} tokens, {rows:,} subscription rows ({members:,} members); "
            f"built in {time.perf_counter() - start:.0f} s"
        )
        if not args.without_live_index:
            runs = [
                one_run(engine, args.tokens, today, args.pool, explain=n == 0)
                for n in range(args.runs)
            ]
            report("with ix_subscriptions_live", runs)
        else:  # pairs, one with the index and one without, so both see the same machine
            with_index, without = [], []
            for n in range(args.runs):
                with_index.append(one_run(engine, args.tokens, today, args.pool, explain=n == 0))
                live_index(engine, drop=True)
                without.append(one_run(engine, args.tokens, today, args.pool, explain=n == 0))
                live_index(engine, drop=False)
            report("with ix_subscriptions_live", with_index)
            report("without it", without)
        engine.dispose()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
