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
from zoneinfo import ZoneInfo

from topic_sync.config.table import (
    DEFAULTS,
    Place,
    check_file_value,
    file_key,
    from_file,
    in_file,
    required,
)
from topic_sync.dates import DATE_PLACEHOLDER, parse_duration, with_date
from topic_sync.errors import BadInput, InputFileError
from topic_sync.fcm.wire import MAX_TOPICS_PER_TOKEN
from topic_sync.pool import pool_topics

# The keys each place of the file may hold, from the settings table.
_TOP = {file_key(n) for n in in_file(Place.TOP, Place.ANYWHERE)} | {"defaults", "campaigns"}
_DEFAULTS = {file_key(n) for n in in_file(Place.SYNC, Place.ANYWHERE)}
_CAMPAIGN = {file_key(n) for n in in_file(Place.CAMPAIGN, Place.SYNC, Place.ANYWHERE)}
_NAME_OF = {file_key(n): n for n in in_file(*Place)}
_REQUIRED = required()


def dated(template: str | Path, day: dt.date) -> Path:
    """A path template with ``{date}`` made the day's path."""
    return Path(with_date(str(template), day))


@dataclass(frozen=True)
class Campaign:
    """One campaign: its own keys, merged over [defaults] and the top level."""

    name: str
    topic_prefix: str
    pool_size: int
    message: Path
    audience: str  # a template with {date}
    run_at: dt.time
    timezone: str
    sync: Mapping[str, Any] = field(default_factory=dict)  # sync settings the file sets (live too)
    wait_for: str | None = None  # a path template with {date}: the audience or its marker
    run_at_given: bool = True  # False: run_at is the default (the scheduler may choose)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def audience_for(self, day: dt.date) -> Path:
        return dated(self.audience, day)

    def wait_for_on(self, day: dt.date) -> Path | None:
        return None if self.wait_for is None else dated(self.wait_for, day)

    def today(self, now: dt.datetime) -> dt.date:
        return now.astimezone(self.zone).date()

    def settings(self) -> dict[str, Any]:
        """Every setting this campaign gives, as the settings' own types (no audience: it
        is a template, made a path once the date is known)."""
        return {
            "topic_prefix": self.topic_prefix,
            "pool_size": self.pool_size,
            "message": self.message,
            **self.sync,
        }


@dataclass(frozen=True)
class Config:
    path: Path
    database_url: str | None  # a URL or "env:NAME"
    project: str | None
    emulator_host: str | None  # rehearse against a local FCM emulator (host:port)
    grace: float  # seconds
    campaigns: Mapping[str, Campaign]
    top: Mapping[str, Any] = field(default_factory=dict)  # other top-level settings, typed

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

    def settings(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The top-level settings the file gives (the database URL resolved)."""
        given: dict[str, Any] = {}
        url = self.resolve_database_url(environ)
        if url:
            given["database_url"] = url
        if self.project:
            given["project"] = self.project
        if self.emulator_host:
            given["emulator_host"] = self.emulator_host
        return {**self.top, **given}


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


def _checked(path: Path, table: Mapping[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    """The table's settings, each checked against the table; unknown keys refused."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _fail(path, f"{where}{key}", f"unknown key (known: {known})")
        if key in ("defaults", "campaigns"):
            continue
        name = _NAME_OF[key]
        problem = check_file_value(name, value)
        if problem:
            raise _fail(path, f"{where}{key}", problem)
        out[name] = value
    return out


def _validate(path: Path, raw: dict[str, Any]) -> Config:
    top = _checked(path, raw, _TOP, "")
    defaults_table = raw.get("defaults", {})
    if not isinstance(defaults_table, dict):
        raise _fail(path, "defaults", "must be a table")
    defaults = {**top, **_checked(path, defaults_table, _DEFAULTS, "defaults.")}
    campaigns_table = raw.get("campaigns", {})
    if not isinstance(campaigns_table, dict) or not campaigns_table:
        raise _fail(path, "campaigns", "define at least one [campaigns.NAME] table")
    campaigns = {
        name: _campaign(path, name, table, defaults) for name, table in campaigns_table.items()
    }
    _check_pools(path, campaigns)
    base = path.resolve().parent
    others = {
        name: _relative_to(base, from_file(name, value))
        for name, value in top.items()
        if name not in ("database_url", "live", "project", "emulator_host", "grace")
    }
    return Config(
        path=path,
        database_url=top.get("database_url"),
        project=top.get("project"),
        emulator_host=top.get("emulator_host"),
        grace=parse_duration(top.get("grace", DEFAULTS.grace)),
        campaigns=campaigns,
        top=others,
    )


def _relative_to(base: Path, value: Any) -> Any:
    """A path the file gives is relative to the file, as the message's is."""
    return base / value if isinstance(value, Path) and not value.is_absolute() else value


def _campaign(path: Path, name: str, table: Any, inherited: dict[str, Any]) -> Campaign:
    where = f"campaigns.{name}."
    if not isinstance(table, dict):
        raise _fail(path, f"campaigns.{name}", "must be a table")
    own = _checked(path, table, _CAMPAIGN, where)
    for key in _REQUIRED:
        if key not in own:
            raise _fail(path, where + key, "required, a non-empty string")
    pool_size = own.get("pool_size", DEFAULTS.pool_size)
    try:
        pool_topics(own["topic_prefix"], pool_size)
    except BadInput as error:
        key = "pool_size" if "pool size" in error.message else "topic_prefix"
        raise _fail(path, where + key, error.message) from None
    if DATE_PLACEHOLDER not in own["audience"]:
        raise _fail(path, where + "audience", "must contain {date}, e.g. /data/reco/{date}.csv")
    merged = {**inherited, **own}
    base = path.resolve().parent
    message = Path(own["message"])
    audience = own["audience"]
    wait_for = own.get("wait_for")
    if wait_for is not None and not Path(wait_for).is_absolute():
        wait_for = str(base / wait_for)
    sync = {  # paths, like the message's, are relative to the file
        setting: _relative_to(base, from_file(setting, value))
        for setting, value in merged.items()
        if setting in in_file(Place.SYNC, Place.ANYWHERE)
    }
    return Campaign(
        name=name,
        topic_prefix=own["topic_prefix"],
        pool_size=pool_size,
        message=message if message.is_absolute() else base / message,
        audience=audience if Path(audience).is_absolute() else str(base / audience),
        run_at=dt.time.fromisoformat(own.get("run_at", DEFAULTS.run_at)),
        timezone=own.get("timezone", DEFAULTS.timezone),
        sync=sync,
        wait_for=wait_for,
        run_at_given="run_at" in own,
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
