"""Resolving a command's settings: flag > environment > configuration file > default.

The one place defaults are applied: what comes out is a full `Settings` of plain values,
which the application layer hands down to the engine and the adapters field by field.

The CLI hands over what it parsed (each value with where it came from: a flag, a
TOPIC_SYNC_* variable, or the built-in default); a configuration file, when one is given,
fills in what the command line left at its default. Every command resolves the same way,
so a rehearsal's `--config` reaches `reconcile` and `report` as it reaches `run`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topic_sync.config.file import Campaign, Config, dated, load_config
from topic_sync.config.table import DATE_WINDOW_DAYS, DEFAULTS, SPECS, Settings
from topic_sync.errors import BadInput
from topic_sync.redact import mask_url


class Source(enum.StrEnum):
    FLAG = "flag"
    ENV = "env"
    FILE = "file"
    DEFAULT = "default"


@dataclass(frozen=True)
class Resolved:
    """A command's effective settings, where each came from, and its campaign if any."""

    settings: Settings
    sources: Mapping[str, Source]
    config: Config | None = None
    campaign: Campaign | None = None
    day: dt.date | None = None
    today: dt.date | None = None  # in the campaign's time zone (local time without one)

    def check_date_window(self, *, backfill: bool) -> None:
        """Refuse a --date far from today unless --backfill says it is meant: a typo'd year
        would otherwise publish "Jobs for 0001-01-01" to a real audience."""
        if self.day is None or self.today is None or backfill:
            return
        if abs((self.day - self.today).days) > DATE_WINDOW_DAYS:
            zone = self.campaign.timezone if self.campaign else "this machine's local time"
            low = self.today - dt.timedelta(days=DATE_WINDOW_DAYS)
            high = self.today + dt.timedelta(days=DATE_WINDOW_DAYS)
            raise BadInput(
                f"--date {self.day}: outside the window of {low} to {high} (today "
                f"{self.today} in {zone}, +/- {DATE_WINDOW_DAYS} days). Pass --backfill if "
                "a day that far is really meant"
            )

    def shown(self) -> dict[str, dict[str, Any]]:
        """Every setting for people and machines: value (secrets masked) and source."""
        out: dict[str, dict[str, Any]] = {}
        for name, value in self.settings.as_dict().items():
            if SPECS[name].secret and isinstance(value, str):
                value = mask_url(value)
            if isinstance(value, Path):
                value = str(value)
            out[name] = {"value": value, "source": str(self.sources.get(name, Source.DEFAULT))}
        if self.day is not None:
            out["date"] = {"value": self.day.isoformat(), "source": "flag"}
        return out


def resolve(
    given: Mapping[str, object],
    sources: Mapping[str, Source],
    *,
    config_path: Path | None = None,
    campaign_name: str | None = None,
    day: str | None = None,
    environ: Mapping[str, str],
    now: dt.datetime,
    need_campaign: bool = True,
) -> Resolved:
    """Merge what the command line gave with the configuration file and the defaults.

    `given` holds the values of the settings the command has options for; `sources` says
    where each came from (a missing name counts as the default). The date is read here,
    because 'today' means today in the campaign's time zone. Without `need_campaign`, a
    file with several campaigns and no --campaign gives only its top-level settings (for
    commands that look at every campaign, such as `status`).
    """
    values = DEFAULTS.as_dict()
    origin: dict[str, Source] = {name: Source.DEFAULT for name in values}
    for name, value in given.items():
        if name in values:
            values[name] = value
            origin[name] = sources.get(name, Source.DEFAULT)
    config = campaign = None
    if config_path is not None:
        config = load_config(config_path)
        if need_campaign or campaign_name is not None or len(config.campaigns) == 1:
            campaign = config.campaign(campaign_name)
        from_file = {
            **config.settings(environ),
            **(campaign.settings() if campaign else {}),
            "grace": config.grace,
        }
        if campaign is not None:
            from_file["run_at"] = campaign.run_at.isoformat(timespec="minutes")
            from_file["timezone"] = campaign.timezone
        for name, value in from_file.items():
            if origin[name] is Source.DEFAULT:
                values[name], origin[name] = value, Source.FILE
    elif campaign_name is not None:
        raise BadInput("--campaign needs --config (or TOPIC_SYNC_CONFIG)")
    the_day = None
    zone = campaign.zone if campaign else None
    today = now.astimezone(zone).date()
    if day is not None:
        the_day = parse_day(day, zone, now)
        if campaign is not None and origin["audience"] is Source.DEFAULT:
            values["audience"], origin["audience"] = campaign.audience_for(the_day), Source.FILE
        if campaign is not None and campaign.wait_for and origin["wait_for"] is Source.DEFAULT:
            values["wait_for"], origin["wait_for"] = campaign.wait_for_on(the_day), Source.FILE
        elif values["wait_for"] is not None:
            values["wait_for"] = dated(values["wait_for"], the_day)  # a flag's {date}
    return Resolved(Settings(**values), origin, config, campaign, the_day, today)


def parse_day(value: str, zone: dt.tzinfo | None, now: dt.datetime) -> dt.date:
    """YYYY-MM-DD, or today/yesterday in the zone (the machine's local time without one)."""
    today = now.astimezone(zone).date()
    if value == "today":
        return today
    if value == "yesterday":
        return today - dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadInput(f"--date {value!r}: expected YYYY-MM-DD, 'today' or 'yesterday'") from None
