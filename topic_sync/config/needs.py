"""What a run needs of its settings, checked once for `run`, `doctor` and `config show`.

The settings a run cannot do without are the table's `required` ones (the topic prefix, the
message, the audience), and the date; the audience may come instead from a query. The rule
of where the audience comes from lives here too, so that `doctor` looks where `run` reads.
`run` refuses the first problem; `doctor` reports each under the check it concerns;
`config show` lists them after the settings.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from pathlib import Path

from topic_sync.config.resolve import Resolved, Source
from topic_sync.config.table import flag_of, required
from topic_sync.errors import BadInput
from topic_sync.inputs.audience import STDIN
from topic_sync.store import db


class AudienceKind(enum.StrEnum):
    FILE = "file"
    STDIN = "stdin"
    QUERY = "query"


@dataclass(frozen=True)
class AudienceSource:
    """Where a run's audience comes from: a file, standard input, or a query. `run` reads
    it; `doctor` checks what it can of it without consuming it."""

    path: Path | None = None  # a file, or "-" (standard input); None for a query
    query: str | None = None
    database_url: str | None = None  # the query's database; None: the job's own
    token_column: str | None = None

    @property
    def kind(self) -> AudienceKind:
        if self.query is not None:
            return AudienceKind.QUERY
        return AudienceKind.STDIN if str(self.path) == STDIN else AudienceKind.FILE


@dataclass(frozen=True)
class RunNeeds:
    """What a run cannot do without, each present."""

    topic_prefix: str
    message: Path
    day: dt.date
    audience: AudienceSource


def audience_source(resolved: Resolved) -> AudienceSource:
    """The one rule of where the audience comes from, for `run` and `doctor` alike.

    --audience and --audience-query exclude each other; a campaign's audience template
    yields to a query given on the command line or in the environment (which rank higher).
    """
    s = resolved.settings
    if s.audience_query is None:
        if s.audience_database_url is not None:
            raise BadInput("--audience-database-url goes with --audience-query")
        if s.audience is None:
            raise BadInput(
                "--audience (or --audience-query) is required (or a --config campaign that "
                "sets the audience)"
            )
        return AudienceSource(path=s.audience, token_column=s.token_column)
    if s.audience is not None and resolved.sources.get("audience") in (Source.FLAG, Source.ENV):
        raise BadInput("--audience and --audience-query exclude each other: give one of them")
    if s.audience_database_url is not None:
        db.check_postgres_url(s.audience_database_url, "--audience-database-url")
    return AudienceSource(
        query=s.audience_query,
        database_url=s.audience_database_url,
        token_column=s.token_column,
    )


def run_problems(resolved: Resolved) -> dict[str, str]:
    """Why a run would refuse these settings, by the setting each problem concerns (the
    table's required ones, "date"), in the order a run checks them; empty when none."""
    problems: dict[str, str] = {}
    try:
        audience_source(resolved)
    except BadInput as error:
        problems["audience"] = error.message
    for name in required():
        if name != "audience" and getattr(resolved.settings, name) is None:
            problems[name] = f"{flag_of(name)} is required (or a --config campaign that sets it)"
    if resolved.day is None:
        problems["date"] = "--date is required"
    return problems


def run_needs(resolved: Resolved) -> RunNeeds:
    """What a run needs, or BadInput naming the first thing missing."""
    problems = run_problems(resolved)
    if problems:
        raise BadInput(next(iter(problems.values())))
    s = resolved.settings
    assert s.topic_prefix is not None and s.message is not None and resolved.day is not None
    return RunNeeds(s.topic_prefix, s.message, resolved.day, audience_source(resolved))
