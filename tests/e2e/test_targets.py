"""One database, two FCM targets: a rehearsal on the emulator never poisons production.

The "production" here is a second emulator at another address: to topic-sync it is another
target, exactly as production FCM would be.
"""

from __future__ import annotations

from tests.support import (
    DAY1,
    cli_env,
    db_snapshot,
    describe,
    latest_publish,
    make_tokens,
    run_args,
    run_cli,
    summary,
    topic,
    write_lines,
)
from topic_sync.emulator import FcmEmulator

PREFIX = "twin"
POOL = 1


def test_state_of_one_target_is_refused_for_another(
    tmp_path, env, emulator, engine, database_url, message_file
):
    audience = make_tokens("t", range(30))
    path = write_lines(tmp_path / "aud.txt", audience)
    args = run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=POOL)

    rehearsal = run_cli(*args, env=env)
    assert rehearsal.returncode == 0, describe(rehearsal)
    assert f"FCM emulator at {emulator.host_port}" in rehearsal.stderr

    with FcmEmulator() as other:
        env2 = cli_env(database_url, other)
        before = db_snapshot(engine)
        for command in (
            args,
            args[:-1],  # the dry run too: its plan would be read from the wrong state
            ("reconcile", "--topic-prefix", PREFIX, "--pool-size", POOL, "--live"),
            ("reconcile", "--topic-prefix", PREFIX, "--pool-size", POOL, "--audit"),
            ("forget", "some-token-1", "--live"),
        ):
            refused = run_cli(*command, env=env2)
            assert refused.returncode == 2, describe(refused)
            assert f"emulator {emulator.host_port}" in refused.stderr, describe(refused)
            assert f"emulator {other.host_port}" in refused.stderr, describe(refused)
            assert "target reset" in refused.stderr
        assert db_snapshot(engine) == before
        assert other.publishes == [] and other.stats.get(("subscribe", 200), 0) == 0

        shown = run_cli("target", "show", env=env2)
        assert f"emulator {emulator.host_port}" in shown.stdout, describe(shown)

        dry = run_cli("target", "reset", "--json", env=env2)
        assert dry.returncode == 0, describe(dry)
        assert summary(dry)["cleared"]["subscriptions"] == 30
        assert db_snapshot(engine) == before  # a dry run by default

        reset = run_cli("target", "reset", "--live", env=env2)
        assert reset.returncode == 0, describe(reset)

        fresh = run_cli(*args, env=env2)
        assert fresh.returncode == 0, describe(fresh)
        assert summary(fresh)["to_add"] == 30  # nothing taken from the rehearsal
        assert latest_publish(other, topic(PREFIX, POOL, DAY1)).recipients == set(audience)

        back = run_cli(*args, env=env)  # and now the rehearsal target is the stranger
        assert back.returncode == 2, describe(back)


def test_bind_keeps_the_state_for_the_same_project_at_a_new_address(
    tmp_path, env, emulator, engine, database_url, message_file
):
    audience = make_tokens("b", range(10))
    path = write_lines(tmp_path / "aud.txt", audience)
    args = run_args(DAY1, path, message_file, prefix=PREFIX, pool_size=POOL)
    assert run_cli(*args, env=env).returncode == 0
    with FcmEmulator() as moved:
        env2 = cli_env(database_url, moved)
        before = db_snapshot(engine)
        dry = run_cli("target", "bind", env=env2)
        assert dry.returncode == 0 and "dry run" in dry.stderr, describe(dry)
        bound = run_cli("target", "bind", "--live", env=env2)
        assert bound.returncode == 0, describe(bound)
        after = db_snapshot(engine)
        assert after == before  # the state itself is kept
        again = run_cli(*args, env=env2)
        assert again.returncode == 0 and summary(again)["status"] == "already-published"
