"""`--json` on every command that ends with a result: exactly one JSON object on stdout, with
the document's `version` and `kind`, whatever the command (run's too, report's too)."""

from __future__ import annotations

from tests.support import DAY1, describe, make_tokens, run_args, run_cli, summary, write_lines
from topic_sync.store import db

PREFIX = "jsonreco"


def test_each_commands_json_is_one_versioned_document(env, emulator, tmp_path, message_file):
    audience = write_lines(tmp_path / "audience.txt", make_tokens("j", range(12)))
    documents = {}
    for name, args in (
        ("run", run_args(DAY1, audience, message_file, prefix=PREFIX, pool_size=2)),
        ("report", ["report", "--json", "--topic-prefix", PREFIX]),
        ("status", ["status", "--json", "--topic-prefix", PREFIX]),
        ("reconcile", ["reconcile", "--json", "--topic-prefix", PREFIX, "--pool-size", "2"]),
        ("purge", ["purge", "--json"]),
        ("db upgrade", ["db", "upgrade", "--json"]),
        ("target show", ["target", "show", "--json"]),
    ):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, describe(proc)
        documents[name] = summary(proc)  # exactly one line, one object
    kinds = {name: (doc["version"], doc["kind"]) for name, doc in documents.items()}
    assert kinds == {
        "run": (1, "run"),
        "report": (1, "runs"),
        "status": (1, "status"),
        "reconcile": (1, "reconcile"),
        "purge": (1, "purge"),
        "db upgrade": (1, "db-upgrade"),
        "target show": (1, "target"),
    }
    assert documents["run"]["status"] == "published"
    assert [run["prefix"] for run in documents["report"]["runs"]] == [PREFIX]
    assert documents["db upgrade"]["revision"] == db.head_revision()
    # --json is --format json: the same document.
    formatted = run_cli("report", "--format", "json", "--topic-prefix", PREFIX, env=env)
    assert summary(formatted) == documents["report"]
