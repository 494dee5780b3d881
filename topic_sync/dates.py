"""Days and durations as people write them: the `{date}` placeholder and durations such as 3h.

One implementation of each, for the configuration's path templates, the message's strings,
the options and every message that quotes a duration. Standard library only: every layer
uses it.
"""

from __future__ import annotations

import datetime as dt
import math
import re

DATE_PLACEHOLDER = "{date}"


def with_date(template: str, day: dt.date) -> str:
    """A template with every ``{date}`` made the day, as YYYY-MM-DD."""
    return template.replace(DATE_PLACEHOLDER, day.isoformat())


_DURATION = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?"
    r"\s*(?:(\d+(?:\.\d+)?)s?)?\s*"
)


def format_duration(seconds: float) -> str:
    """Seconds the way a duration is typed: 10800 is 3h, 5400 is 1h30m, 90 days 90d, 15.0003
    is 15s (to the second from 10 s up, to a tenth below); parse_duration reads it back."""
    if seconds < 10 and round(seconds, 1) != round(seconds):
        return f"{seconds:.1f}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"))
    return "".join(f"{n}{unit}" for n, unit in units if n) or "0s"


def parse_duration(value: str | float) -> float:
    """Seconds from '90d', '3h', '90m', '1h30m', '45s' or a plain number; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration is not true or false")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("a duration is a finite number of seconds, not negative")
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if not str(value).strip() or not match or not any(match.groups()):
        raise ValueError(f"{value!r}: expected a duration such as 3h, 90m, 45s")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds
