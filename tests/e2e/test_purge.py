"""purge through the real CLI: a dry run counts, --live deletes, bad retention is refused."""

from __future__ import annotations

import json

from sqlalchemy import text

from tests.support import DAY1, describe, make_tokens, run_args, run_cli, write_lines

PREFIX = "purge"


def test_purge_counts_then_deletes_old_failures_and_keeps_runs(
    tmp_path, env, emulator, engine, message_file
):
    tokens = make_tokens("p", range(6))
    emulator.unregister(tokens[0])
    for offset, name in enumerate(("a", "b")):
        day = DAY1.fromordinal(DAY1.toordinal() + offset)
        audience = write_lines(tmp_path / f"{name}.txt", tokens)
        done = run_cli(*run_args(day, audience, message_file, prefix=PREFIX, pool_size=2), env=env)
        assert done.returncode == 0, describe(done)
    with engine.begin() as conn:  # make the history old: 100 days
        conn.execute(text("UPDATE token_failures SET last_seen = now() - interval '100 days'"))
        before = conn.scalar(text("SELECT count(*) FROM token_failures"))
    assert before == 2  # day one's dead token, and its one retry on day two

    dry = run_cli("purge", "--json", env=env)
    assert dry.returncode == 0, describe(dry)
    # Day two's row belongs to the campaign's latest run: kept.
    assert json.loads(dry.stdout)["failures"] == 1 and not json.loads(dry.stdout)["live"]
    assert "dry run" in dry.stderr

    kept = run_cli("purge", "--older-than", "200d", "--live", "--json", env=env)
    assert kept.returncode == 0 and json.loads(kept.stdout)["failures"] == 0, describe(kept)

    live = run_cli("purge", "--older-than", "90d", "--live", "--json", env=env)
    assert live.returncode == 0 and json.loads(live.stdout)["failures"] == 1, describe(live)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM token_failures")) == 1
        assert conn.scalar(text("SELECT count(*) FROM runs")) == 2

    bad = run_cli("purge", "--older-than", "1h", "--live", env=env)
    assert bad.returncode == 2 and "--older-than" in bad.stderr, describe(bad)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM token_failures")) == 1
