"""`python -m topic_sync.cli`: the cron wrapper's fallback when no script is on PATH."""

from topic_sync.cli.main import entry

entry()
