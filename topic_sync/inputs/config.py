"""The configuration file: everything a daily run needs, so cron just says
`topic-sync run --date today`.

```toml
database_url = "env:DATABASE_URL"     # a URL, or env:NAME to read it from a variable
mode = "dry-run"                      # or "live"

[defaults]                            # sync settings for every campaign
rate_limit = 3000

[campaigns.jobreco]
topic_prefix = "jobreco"
pool_size = 7
message = "jobreco-message.json"      # relative paths are relative to this file
audience = "/data/reco/{date}.csv"
run_at = "06:30"
timezone = "Asia/Tokyo"
max_churn = 0.3                       # any sync setting, for this campaign only
```

Precedence, highest first: command-line flag, TOPIC_SYNC_* variable, this file,
built-in default. Every problem is reported with the file and the dotted key.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from topic_sync.errors import BadInput, InputFileError
from topic_sync.fcm.client import TRANSPORTS
from topic_sync.pool import MAX_TOPICS_PER_TOKEN, pool_topics

MODES = ("dry-run", "live")
DEFAULT_GRACE = "2h"

_DURATION = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*"
)


def parse_duration(value: str | float) -> float:
    """Seconds from '3h', '90m', '1h30m', '45s' or a plain number; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if not str(value).strip() or not match or not any(match.groups()):
        raise ValueError(f"{value!r}: expected a duration such as 3h, 90m, 45s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


# Sync settings a file may set, with a check each (the CLI option of the same name wins).


def _number(low: float, high: float | None = None, integer: bool = False):
    def check(value: Any) -> str | None:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return "must be a whole number" if integer else "must be a number"
        if value < low or (high is not None and value > high):
            return f"must be between {low} and {high}" if high is not None else f"must be >= {low}"
        return None

    return check


def _duration(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return 'must be a duration such as "3h", "90m" or seconds'
    if isinstance(value, str) and (not value.strip() or not _DURATION.fullmatch(value)):
        return 'must be a duration such as "3h", "90m" or seconds'
    return None


def _choice(*choices: str):
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


SYNC_KEYS = {
    "max_churn": _number(0, 1),
    "allow_large_churn": _flag,
    "propagation_delay": _number(0),
    "retry_min_wait": _number(0),
    "retry_max_wait": _number(0),
    "max_retries": _number(0, integer=True),
    "deadline": _duration,
    "concurrency": _number(1, 64, integer=True),
    "max_dead": _number(0, 1),
    "rate_limit": _number(0.001),
    "transport": _choice(*TRANSPORTS),
}
TOP_KEYS = {"database_url", "mode", "project", "emulator_host", "grace", "defaults", "campaigns"}
CAMPAIGN_KEYS = {
    "topic_prefix",
    "pool_size",
    "message",
    "audience",
    "run_at",
    "timezone",
    "mode",
    *SYNC_KEYS,
}


@dataclass(frozen=True)
class Campaign:
    name: str
    topic_prefix: str
    pool_size: int
    message: Path
    audience: str  # a template with {date}
    run_at: dt.time
    timezone: str
    mode: str
    sync: Mapping[str, Any] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def audience_for(self, day: dt.date) -> Path:
        return Path(self.audience.replace("{date}", day.isoformat()))

    def today(self, now: dt.datetime) -> dt.date:
        return now.astimezone(self.zone).date()


@dataclass(frozen=True)
class Config:
    path: Path
    database_url: str | None  # a URL or "env:NAME"
    mode: str
    project: str | None
    emulator_host: str | None  # rehearse against a local FCM emulator (host:port)
    grace: str
    campaigns: Mapping[str, Campaign]

    def campaign(self, name: str | None) -> Campaign:
        if name is None:
            if len(self.campaigns) == 1:
                return next(iter(self.campaigns.values()))
            names = ", ".join(sorted(self.campaigns)) or "none"
            raise BadInput(f"{self.path}: several campaigns ({names}): choose one with --campaign")
        try:
            return self.campaigns[name]
        except KeyError:
            names = ", ".join(sorted(self.campaigns)) or "none"
            raise BadInput(f"{self.path}: no campaign {name!r} (campaigns: {names})") from None

    def resolve_database_url(self, environ: Mapping[str, str]) -> str | None:
        """The URL itself; an `env:NAME` reference is read from environ."""
        if self.database_url and self.database_url.startswith("env:"):
            name = self.database_url[4:]
            if name not in environ:
                raise InputFileError(
                    self.path, f"database_url: refers to ${name}, which is not set"
                )
            return environ[name]
        return self.database_url


def mask_url(url: str | None) -> str | None:
    """A URL fit to print: the password replaced by ***."""
    if not url or url.startswith("env:"):
        return url
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "no such configuration file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"\(at line (\d+)", str(error))
        line = int(match.group(1)) if match else None
        raise InputFileError(path, f"invalid TOML: {error}", line) from None
    return _validate(path, raw)


def _fail(path: Path, key: str, problem: str) -> InputFileError:
    return InputFileError(path, f"{key}: {problem}")


def _unknown(path: Path, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(path, f"{where}{key}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _sync(path: Path, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, check in SYNC_KEYS.items():
        if key in table:
            problem = check(table[key])
            if problem:
                raise _fail(path, f"{where}{key}", problem)
            out[key] = table[key]
    return out


def _validate(path: Path, raw: dict[str, Any]) -> Config:
    _unknown(path, raw, TOP_KEYS, "")
    mode = raw.get("mode", "dry-run")
    if mode not in MODES:
        raise _fail(path, "mode", f"must be one of {', '.join(MODES)}")
    db_url = raw.get("database_url")
    if db_url is not None and (not isinstance(db_url, str) or not db_url):
        raise _fail(path, "database_url", "must be a URL or env:NAME")
    grace = raw.get("grace", DEFAULT_GRACE)
    if _duration(grace):
        raise _fail(path, "grace", _duration(grace) or "")
    defaults_table = raw.get("defaults", {})
    if not isinstance(defaults_table, dict):
        raise _fail(path, "defaults", "must be a table")
    _unknown(path, defaults_table, set(SYNC_KEYS), "defaults.")
    defaults = _sync(path, defaults_table, "defaults.")
    campaigns_table = raw.get("campaigns", {})
    if not isinstance(campaigns_table, dict) or not campaigns_table:
        raise _fail(path, "campaigns", "define at least one [campaigns.NAME] table")
    campaigns = {
        name: _campaign(path, name, table, mode, defaults)
        for name, table in campaigns_table.items()
    }
    _check_pools(path, campaigns)
    return Config(
        path=path,
        database_url=db_url,
        mode=mode,
        project=raw.get("project"),
        emulator_host=raw.get("emulator_host"),
        grace=str(grace),
        campaigns=campaigns,
    )


def _campaign(path: Path, name: str, table: Any, mode: str, defaults: dict[str, Any]) -> Campaign:
    where = f"campaigns.{name}."
    if not isinstance(table, dict):
        raise _fail(path, f"campaigns.{name}", "must be a table")
    _unknown(path, table, CAMPAIGN_KEYS, where)
    for key in ("topic_prefix", "message", "audience"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise _fail(path, where + key, "required, a non-empty string")
    pool_size = table.get("pool_size", 7)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int):
        raise _fail(path, where + "pool_size", "must be a whole number")
    try:
        pool_topics(table["topic_prefix"], pool_size)
    except BadInput as error:
        key = "pool_size" if "pool size" in error.message else "topic_prefix"
        raise _fail(path, where + key, error.message) from None
    if "{date}" not in table["audience"]:
        raise _fail(path, where + "audience", "must contain {date}, e.g. /data/reco/{date}.csv")
    run_at_text = table.get("run_at", "06:00")
    try:
        run_at = dt.time.fromisoformat(run_at_text)
    except (TypeError, ValueError):
        raise _fail(path, where + "run_at", "must be a time of day, HH:MM") from None
    zone = table.get("timezone", "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise _fail(path, where + "timezone", f"unknown time zone {zone!r}") from None
    campaign_mode = table.get("mode", mode)
    if campaign_mode not in MODES:
        raise _fail(path, where + "mode", f"must be one of {', '.join(MODES)}")
    base = path.resolve().parent
    message = Path(table["message"])
    audience = table["audience"]
    return Campaign(
        name=name,
        topic_prefix=table["topic_prefix"],
        pool_size=pool_size,
        message=message if message.is_absolute() else base / message,
        audience=audience if Path(audience).is_absolute() else str(base / audience),
        run_at=run_at,
        timezone=zone,
        mode=campaign_mode,
        sync={**defaults, **_sync(path, table, where)},
    )


def _check_pools(path: Path, campaigns: Mapping[str, Campaign]) -> None:
    """Two campaigns must not share a topic; all pools together must fit one token."""
    owner: dict[str, str] = {}
    for name, campaign in campaigns.items():
        for topic in pool_topics(campaign.topic_prefix, campaign.pool_size):
            if topic in owner:
                raise _fail(
                    path,
                    f"campaigns.{name}.topic_prefix",
                    f"pool overlaps campaign {owner[topic]!r} (both use topic {topic})",
                )
            owner[topic] = name
    total = sum(c.pool_size for c in campaigns.values())
    if total > MAX_TOPICS_PER_TOKEN:
        raise _fail(
            path,
            "campaigns",
            f"pools add up to {total} topics; a token can be in at most {MAX_TOPICS_PER_TOKEN}",
        )
