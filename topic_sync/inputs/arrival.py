"""Waiting for a producer: the day's audience file, or the marker its job writes when done.

A recommender that is late must not make an empty day, and a file still being written must
not be read half: `wait_for` polls a path until it is there. When the path is the audience
file itself (by its real path: a symbolic link to the audience is the audience), it must also
have stopped growing (the same size and modification time at two consecutive checks). Any
other path is a marker (a `_SUCCESS` file as Spark and Hadoop write,
a directory): its presence is enough.

The clock and the sleep are the caller's, so tests wait no wall-clock time; a stop request
(SIGTERM) ends the wait at the next check.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from topic_sync.dates import format_duration
from topic_sync.errors import InputFileError, Interrupted

POLL_SECONDS = 10.0
"""How often the path is looked at."""
REPORT_SECONDS = 300.0
"""How often a wait says, while it goes on, what it is waiting for."""


@dataclass(frozen=True)
class Arrival:
    """How a wait ended: `arrived`, after `waited` seconds, and what was last seen."""

    arrived: bool
    waited: float
    seen: str  # "missing", "growing" or "ready", for messages


def is_same_path(a: Path, b: Path | None) -> bool:
    """Whether two paths name the same file: their real paths (symbolic links followed) are
    equal, or both exist and are the same file (a hard link)."""
    if b is None or os.fspath(b) == "-":
        return False
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def waiting_for(path: Path, audience: Path | None) -> str:
    """What a wait for `path` waits for, in words."""
    if is_same_path(path, audience):
        return f"the audience file {path} to be there and stop growing"
    return f"the marker {path} (then the audience is read)"


def wait_for(
    path: Path,
    *,
    audience: Path | None,
    timeout: float,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
    should_stop: Callable[[], bool] = lambda: False,
    interval: float = POLL_SECONDS,
    report: Callable[[str], None] | None = None,
    report_every: float = REPORT_SECONDS,
) -> Arrival:
    """Poll `path` until it is ready or `timeout` seconds passed; never raises on timeout.

    Ready: for the audience file itself (`path` is `audience`), present and unchanged in size
    and modification time since the previous check; for anything else, present. Every
    `report_every` seconds of waiting, `report` gets a line saying what is awaited, what was
    last seen and how long is left, so a log shows the job is alive and why.
    """
    if interval <= 0:
        raise ValueError("the polling interval must be positive")
    started = monotonic()
    next_report = started + report_every
    previous: tuple[int, int] | None = None
    while True:
        seen = "missing"
        st = _stat(path)
        if st is not None:
            # Looked at again each time: a link made later may point at the audience.
            if not is_same_path(path, audience) or stat.S_ISDIR(st.st_mode):
                return Arrival(True, monotonic() - started, "ready")
            current = (st.st_size, st.st_mtime_ns)
            if current == previous:
                return Arrival(True, monotonic() - started, "ready")
            previous, seen = current, "growing"
        else:
            previous = None
        now = monotonic()
        remaining = started + timeout - now
        if remaining <= 0:
            return Arrival(False, now - started, seen)
        if report is not None and now >= next_report:
            found = "not there yet" if st is None else f"growing ({st.st_size} bytes)"
            report(
                f"still waiting for {waiting_for(path, audience)}: {found}; waited "
                f"{format_duration(now - started)}, at most {format_duration(remaining)} more "
                "(--wait-timeout)"
            )
            next_report = now + report_every
        if should_stop():
            raise Interrupted(f"stopped on request while waiting for {path}; nothing was changed")
        sleep(min(interval, remaining))


def _stat(path: Path) -> os.stat_result | None:
    """The path's status, None while it is not there; a path that cannot be looked at is an
    input error (waiting would not make it readable)."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise InputFileError(path, "permission denied while waiting for it") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot look at it: {exc.strerror or exc}") from None
