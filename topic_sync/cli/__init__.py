"""The `topic-sync` command line: parsing and rendering over the application layer."""

from topic_sync.cli.main import cli, entry, main

__all__ = ["cli", "entry", "main"]
