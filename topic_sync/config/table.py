"""Every setting topic-sync has, defined once: name, type, default, help, where it may come from.

`Settings` is that table. Each field's metadata (a `Spec`) says how the setting is checked,
whether a configuration file may hold it (and where: top level, `[defaults]` or a campaign),
which environment variables set it besides `TOPIC_SYNC_<NAME>`, whether it is secret,
whether a run cannot do without it, and whether `run` takes it as an option. The
command-line options, the configuration file's validation, `config show` and
docs/configuration.md are all generated from it. Defaults are applied once, when settings
are resolved (topic_sync.config.resolve): the engine and the adapters get plain values and
never import this table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from topic_sync.dates import parse_duration
from topic_sync.fcm import TRANSPORTS
from topic_sync.pool import PoolPolicy
from topic_sync.states import Transport

LOG_FORMATS = ("text", "json")
ENV_PREFIX = "TOPIC_SYNC_"
POOL_POLICIES = tuple(policy.value for policy in PoolPolicy)
DATE_WINDOW_DAYS = 2
"""How far from today (in the campaign's time zone) a --date may be without --backfill."""


class Place(enum.Enum):
    """Where a configuration file may set a setting."""

    NOWHERE = "command line and environment only"
    TOP = "the file's top level"
    ANYWHERE = "the top level, [defaults] or a campaign"
    CAMPAIGN = "a campaign"
    SYNC = "[defaults] or a campaign"


class Kind(enum.Enum):
    TEXT = "text"
    PATH = "path"
    INT = "int"
    FLOAT = "float"
    FLAG = "flag"
    DURATION = "duration"
    CHOICE = "choice"


@dataclass(frozen=True)
class Spec:
    """How one setting is read and checked (a field's metadata in `Settings`)."""

    kind: Kind
    help: str
    place: Place = Place.NOWHERE
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # variables read besides TOPIC_SYNC_<NAME>
    file_key: str | None = None  # the key in the file, when not the setting's name
    secret: bool = False
    flag: str | None = None  # the option, when not --<name>
    shown_default: str | None = None  # how --help shows the default, when not the value
    cli: bool = True  # False: a configuration file setting only (no option)
    run: bool = True  # run (and doctor and config show, which take run's options) take it
    required: bool = False  # a run cannot do without it; a file's campaign must give it
    words: tuple[str, str] | None = None  # a flag a file writes as a word: (off, on)
    extra_check: Callable[[object], str | None] | None = None

    def check(self, value: object) -> str | None:
        """Why a value (from a file, or parsed from a flag) is wrong, or None."""
        problem = self._check_kind(value)
        if problem is None and self.extra_check is not None:
            problem = self.extra_check(value)
        return problem

    def _check_kind(self, value: object) -> str | None:
        kind = self.kind
        if kind is Kind.FLAG:
            return None if isinstance(value, bool) else "must be true or false"
        if kind is Kind.CHOICE:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}"
        if kind in (Kind.TEXT, Kind.PATH):
            ok = isinstance(value, str | Path) and str(value) != ""
            return None if ok else "must be a non-empty string"
        if kind is Kind.DURATION:
            try:
                parse_duration(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return 'must be a duration such as "3h", "90m", "45s" or seconds'
            return None
        whole = kind is Kind.INT
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a whole number" if whole else "must be a number"
        if whole and not isinstance(value, int):
            return "must be a whole number"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            if self.high is None:
                return f"must be >= {self.low:g}"
            return f"must be between {self.low:g} and {self.high:g}"
        return None


def _s(default: Any, spec: Spec) -> Any:
    return field(default=default, metadata={"spec": spec})


def _time_of_day(value: object) -> str | None:
    try:
        dt.time.fromisoformat(str(value))
    except ValueError:
        return "must be a time of day, HH:MM"
    return None


def _zone(value: object) -> str | None:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r}"
    return None


def _http_url(value: object) -> str | None:
    scheme, sep, rest = str(value).partition("://")
    if not sep or scheme not in ("http", "https") or not rest.strip("/"):
        return "must be an http:// or https:// URL, e.g. http://pushgateway:9091"
    return None


@dataclass(frozen=True)
class Settings:
    """The settings of every command, with their defaults. Read by the engine as `DEFAULTS`."""

    # --- the campaign: what to send, and to which pool
    topic_prefix: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "Topic pool prefix: topics are PREFIX-<slot>.",
            Place.CAMPAIGN,
            required=True,
        ),
    )
    pool_size: int = _s(7, Spec(Kind.INT, "Topics in the pool.", Place.CAMPAIGN, low=1, high=2000))
    pool_policy: str = _s(
        "cost",
        Spec(
            Kind.CHOICE,
            "How a date's topic is picked from the pool: cost (the resting topic whose members "
            "are closest to the audience: fewest operations) or ordinal (the date's ordinal "
            "modulo the pool size, whatever it costs). Picked once per date and recorded.",
            Place.SYNC,
            choices=POOL_POLICIES,
        ),
    )
    rest_period: float = _s(
        6 * 3600.0,
        Spec(
            Kind.DURATION,
            "cost policy: a topic that had a message less than this long ago is not changed "
            "(FCM may still be fanning it out); must be shorter than the time between runs "
            "for yesterday's topic to be reused.",
            Place.SYNC,
            shown_default="6h",
        ),
    )
    audience: Path | None = _s(
        None,
        Spec(
            Kind.PATH,
            "Audience file, - for standard input; gzip or zstd read as such (a file's "
            "campaign gives a template with {date}).",
            Place.CAMPAIGN,
            required=True,
        ),
    )
    token_column: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "The audience CSV's token column (default: a column named 'token', if any).",
            Place.SYNC,
        ),
    )
    audience_query: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "Read the audience from PostgreSQL instead of a file: a SELECT, or a table name "
            "(schema.table), streamed with COPY in a read-only transaction.",
            extra_check=lambda v: None if str(v).strip() else "must not be blank",
        ),
    )
    audience_database_url: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "PostgreSQL URL --audience-query reads from (default: the job's own database).",
            secret=True,
        ),
    )
    wait_for: Path | None = _s(
        None,
        Spec(
            Kind.PATH,
            "Before anything else, wait for this path ({date} is the run's date): the audience "
            "file itself (until it stops growing) or a marker such as _SUCCESS.",
            Place.CAMPAIGN,
        ),
    )
    wait_timeout: float = _s(
        2 * 3600.0,
        Spec(
            Kind.DURATION,
            "How long --wait-for waits before the day ends as 'audience never came'.",
            Place.SYNC,
            shown_default="2h",
        ),
    )
    message: Path | None = _s(
        None, Spec(Kind.PATH, "Message JSON file.", Place.CAMPAIGN, required=True)
    )
    message_type_key: str = _s(
        "type",
        Spec(
            Kind.TEXT,
            "The message's data key naming its kind (run warns when it is missing).",
            Place.SYNC,
        ),
    )
    message_version_key: str = _s(
        "version",
        Spec(
            Kind.TEXT,
            "The message's data key naming its version (run warns when it is missing).",
            Place.SYNC,
        ),
    )
    live: bool = _s(
        False,
        Spec(
            Kind.FLAG,
            "Change FCM (and publish). Without it: only report what would be done.",
            Place.ANYWHERE,
            file_key="mode",
            words=("dry-run", "live"),
        ),
    )
    # --- when the message goes out
    publish_at: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "Local time (HH:MM, the campaign's time zone) the day's message goes out: run "
            "syncs as early as started, then waits for it (default: publish once synced).",
            Place.SYNC,
            extra_check=_time_of_day,
        ),
    )
    publish_by: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "The latest local time (HH:MM) the message may still go out; a day that cannot "
            "publish by then is not sent (exit 13) unless --publish-late (default: "
            "publish_at + 2h).",
            Place.SYNC,
            extra_check=_time_of_day,
        ),
    )
    sync_margin: float = _s(
        30 * 60.0,
        Spec(
            Kind.DURATION,
            "Slack between the sync's estimated end and publish_at: the scheduler starts the "
            "sync this much before it must (publish_at - estimate - margin).",
            Place.SYNC,
            shown_default="30m",
        ),
    )
    # --- guards
    max_churn: float = _s(
        0.5,
        Spec(
            Kind.FLOAT,
            "Refuse an audience of which more than this share is new, or that lost more than "
            "this share of the campaign's previous audience (per day between the two).",
            Place.SYNC,
            low=0,
            high=1,
        ),
    )
    max_size_change: float = _s(
        0.5,
        Spec(
            Kind.FLOAT,
            "Refuse an audience whose size differs from the campaign's previous audience by "
            "more than this share of it (per day between the two).",
            Place.SYNC,
            low=0,
        ),
    )
    max_operations: int | None = _s(
        None,
        Spec(
            Kind.INT,
            "Refuse a day whose plan needs more than this many FCM subscribe and unsubscribe "
            "operations (default: no limit).",
            Place.SYNC,
            low=1,
        ),
    )
    allow_large_churn: bool = _s(
        False,
        Spec(
            Kind.FLAG,
            "Skip the audience guard (churn, size change, operations, empty audience).",
            Place.SYNC,
        ),
    )
    max_dead: float = _s(
        0.05,
        Spec(
            Kind.FLOAT,
            "Stop, believing no more, once more than this share of the work (at least 100 "
            "tokens) is answered 'dead token': likelier a systemic fault.",
            Place.SYNC,
            low=0,
            high=1,
        ),
    )
    propagation_delay: float = _s(
        5.0,
        Spec(
            Kind.FLOAT,
            "Seconds to let new subscriptions propagate before publishing.",
            Place.SYNC,
            low=0,
        ),
    )
    # --- retries, pacing, concurrency (see the policy table in docs/errors.md for the sources)
    retry_min_wait: float = _s(
        60.0,
        Spec(Kind.FLOAT, "First retry wait in seconds (FCM's guidance).", Place.SYNC, low=0),
    )
    retry_max_wait: float = _s(
        3600.0, Spec(Kind.FLOAT, "Longest retry wait in seconds.", Place.SYNC, low=0)
    )
    max_retries: int = _s(
        4, Spec(Kind.INT, "Retry rounds for retryable tokens.", Place.SYNC, low=0)
    )
    deadline: float = _s(
        3 * 3600.0,
        Spec(
            Kind.DURATION,
            "Stop retrying after this long (e.g. 3h, 90m); a rerun continues.",
            Place.SYNC,
            shown_default="3h",
        ),
    )
    concurrency: int = _s(
        4,
        Spec(
            Kind.INT,
            "FCM batches in flight at once, each in its own transaction.",
            Place.SYNC,
            low=1,
            high=64,
        ),
    )
    rate_limit: float = _s(
        3000.0,
        Spec(
            Kind.FLOAT,
            "FCM topic requests per second (one per token on v1), for all workers.",
            Place.SYNC,
            low=0.001,
        ),
    )
    transport: str = _s(
        Transport.V1_DIRECT.value,
        Spec(
            Kind.CHOICE,
            "v1-direct: FCM topic subscription API, firebase-admin's own requests byte for byte "
            "over persistent connections. v1: the same API through firebase-admin's calls "
            "(slower). legacy-iid: Instance ID batch API (until 2027-09-29).",
            Place.SYNC,
            choices=TRANSPORTS,
        ),
    )
    # --- what a run tells monitoring
    metrics_file: Path | None = _s(
        None,
        Spec(
            Kind.PATH,
            "Write the run's Prometheus metrics to this file (for node_exporter's textfile "
            "collector), atomically.",
            Place.SYNC,
        ),
    )
    pushgateway: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "Push the run's Prometheus metrics to this Pushgateway URL (job topic-sync, "
            "grouped by campaign and command).",
            Place.SYNC,
            secret=True,
            extra_check=_http_url,
        ),
    )
    log_format: str = _s(
        "text",
        Spec(
            Kind.CHOICE,
            "stderr as text for people, or json: one JSON object per event and line.",
            Place.SYNC,
            choices=LOG_FORMATS,
        ),
    )
    # --- where things are
    database_url: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "PostgreSQL URL (a file may say env:NAME). Unset: an embedded PostgreSQL.",
            Place.TOP,
            env=("DATABASE_URL",),
            secret=True,
        ),
    )
    embedded_dir: Path | None = _s(
        None,
        Spec(
            Kind.PATH,
            "Folder of the embedded PostgreSQL used when no database URL is given (default: "
            "~/.local/share/topic-sync/embedded; as root /var/lib/topic-sync/embedded).",
            Place.TOP,
        ),
    )
    allow_embedded_database: bool = _s(
        False,
        Spec(
            Kind.FLAG,
            "Allow --live against production FCM with the embedded PostgreSQL (refused "
            "otherwise: a folder on one machine is no place for the only record of who is "
            "on each topic).",
            Place.TOP,
        ),
    )
    project: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "Firebase project id (default: from the credentials).",
            Place.TOP,
            env=("GOOGLE_CLOUD_PROJECT",),
        ),
    )
    emulator_host: str | None = _s(
        None,
        Spec(
            Kind.TEXT,
            "host:port of a local FCM emulator; no credentials needed.",
            Place.TOP,
            env=("FCM_EMULATOR_HOST",),
        ),
    )
    state_dir: Path | None = _s(
        None,
        Spec(
            Kind.PATH,
            "Folder for this host's last-resort evidence of a publish FCM accepted that the "
            "database could not record (default: topic-sync's per-user data folder; "
            "/var/lib/topic-sync as root).",
            run=False,
        ),
    )
    retention: float = _s(
        90 * 86400.0,
        Spec(
            Kind.DURATION,
            "purge: delete per-token failure rows last seen longer ago than this (e.g. 90d); "
            "run summaries are kept.",
            Place.TOP,
            shown_default="90d",
            flag="--older-than",
            run=False,
            extra_check=lambda v: (
                None
                if parse_duration(v) >= 86400  # type: ignore[arg-type]
                else "must be at least a day (1d)"
            ),
        ),
    )
    grace: float = _s(
        2 * 3600.0,
        Spec(
            Kind.DURATION,
            "The scheduler runs a missed day at most this late.",
            Place.TOP,
            shown_default="2h",
            cli=False,
        ),
    )
    run_at: str = _s(
        "06:00",
        Spec(
            Kind.TEXT,
            "Time of day the scheduler runs the campaign (HH:MM, in its time zone).",
            Place.CAMPAIGN,
            cli=False,
            extra_check=_time_of_day,
        ),
    )
    timezone: str = _s(
        "UTC",
        Spec(
            Kind.TEXT,
            "The campaign's time zone: 'today' and run_at are read in it.",
            Place.CAMPAIGN,
            cli=False,
            extra_check=_zone,
        ),
    )

    @classmethod
    def specs(cls) -> dict[str, Spec]:
        """The table: every setting's name and spec, in definition order."""
        return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls)}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


DEFAULTS = Settings()
SPECS = Settings.specs()


def flag_of(name: str) -> str:
    """A setting's long option: --<name> unless the table names another."""
    return SPECS[name].flag or "--" + name.replace("_", "-")


def env_name(flag: str) -> str:
    """The variable an option can also be given as: --older-than is TOPIC_SYNC_OLDER_THAN."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def env_names(name: str) -> tuple[str, ...]:
    """The environment variables that set a setting, in the order they are read: the option's
    TOPIC_SYNC_<OPTION>, then TOPIC_SYNC_<SETTING> where the option has another name, then
    the conventional ones (DATABASE_URL, ...)."""
    names = [env_name(flag_of(name)), ENV_PREFIX + name.upper(), *SPECS[name].env]
    return tuple(dict.fromkeys(names))


def file_key(name: str) -> str:
    return SPECS[name].file_key or name


def in_file(*places: Place) -> list[str]:
    """Settings a configuration file may hold at those places."""
    return [name for name, spec in SPECS.items() if spec.place in places]


def from_file(name: str, value: object) -> Any:
    """A file value as the setting's own type (the file's `mode = "live"` sets `live`)."""
    spec = SPECS[name]
    if spec.words is not None:
        return value == spec.words[1]
    if spec.kind is Kind.DURATION:
        return parse_duration(value)  # type: ignore[arg-type]
    if spec.kind is Kind.FLOAT:
        return float(value)  # type: ignore[arg-type]
    if spec.kind is Kind.PATH:
        return Path(str(value))
    return value


def check_file_value(name: str, value: object) -> str | None:
    """Why a file value is wrong for the setting, or None (a flag written as a word must be
    one of its two words)."""
    spec = SPECS[name]
    if spec.words is not None:
        return None if value in spec.words else f"must be one of {', '.join(spec.words)}"
    return spec.check(value)


def required() -> list[str]:
    """The settings a run cannot do without (a campaign of a file must give each)."""
    return [name for name, spec in SPECS.items() if spec.required]


def run_takes() -> tuple[str, ...]:
    """The settings `run` (and `doctor`, `config show`) has options for, in table order."""
    return tuple(name for name, spec in SPECS.items() if spec.cli and spec.run)
