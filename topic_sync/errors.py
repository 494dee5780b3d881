"""Errors a user can see, each with the exit code the CLI turns it into.

The core raises these; only the CLI prints them. Exit codes are part of the
interface (cron and monitoring read them), so they live here and nowhere else.
"""

from __future__ import annotations

import enum
import os


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    LOCKED = 3
    WITHHELD = 4
    REFUSED = 5
    CREDENTIALS = 6
    DEADLINE = 7
    INTERRUPTED = 8
    NOT_READY = 9
    NO_AUDIENCE = 10
    DATABASE_UNAVAILABLE = 11
    INCOMPLETE = 12
    MISSED_WINDOW = 13


class TopicSyncError(Exception):
    """Base class: a message for people and the exit code for machines."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(TopicSyncError):
    """Input (file, option, configuration) is wrong; nothing was changed."""

    exit_code = ExitCode.BAD_INPUT


class InputFileError(BadInput):
    """A problem at a known place in an input file."""

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {reason}")
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason


class Locked(TopicSyncError):
    """Another run holds the lock for this topic prefix."""

    exit_code = ExitCode.LOCKED


class Fenced(Locked):
    """Someone else planned this topic since this run did (its lock had been lost)."""


class TargetMismatch(BadInput):
    """The database's state belongs to another FCM target (project or endpoint)."""


class CampaignMismatch(BadInput):
    """The configuration disagrees with the campaign's record (prefix, pool size, name)."""


class PublishWithheld(TopicSyncError):
    """The day's message was deliberately not sent (unsafe or unconfirmed)."""

    exit_code = ExitCode.WITHHELD


class PublishUnrecorded(PublishWithheld):
    """FCM accepted the day's message, but the database could not record it: it went out.
    Its id is in the message, the log and (last resort) an evidence file."""


class RemovalsUnconfirmed(PublishWithheld):
    """Withheld because removals from the day's topic are unconfirmed: a rerun of the day
    retries them and then publishes."""


class Refused(TopicSyncError):
    """A safety guard (churn, empty audience) refused the run before any change."""

    exit_code = ExitCode.REFUSED


class DeadTokenGuard(Refused):
    """Too many "dead token" answers for one run: likelier a systemic fault than uninstalls."""


class CredentialsError(TopicSyncError):
    """FCM rejected our credentials: no token is at fault, so the run stops."""

    exit_code = ExitCode.CREDENTIALS


class DeadlineReached(TopicSyncError):
    """The run's deadline passed with work left; reconcile or a rerun continues it."""

    exit_code = ExitCode.DEADLINE


class Interrupted(TopicSyncError):
    """Asked to stop (SIGTERM/SIGINT): stopped at a safe point; a rerun resumes."""

    exit_code = ExitCode.INTERRUPTED


class AudienceNeverCame(TopicSyncError):
    """--wait-for timed out: the producer never delivered; nothing synced or published."""

    exit_code = ExitCode.NO_AUDIENCE


class DatabaseUnavailable(TopicSyncError):
    """PostgreSQL cannot be reached (down, refused, timed out, unknown database) or was lost:
    what was committed stands, and a rerun once it is back continues."""

    exit_code = ExitCode.DATABASE_UNAVAILABLE


class MissedWindow(TopicSyncError):
    """The day could not publish by its publish_by: it is not sent at all (a stale morning
    message is worse than none) unless an operator passes --publish-late."""

    exit_code = ExitCode.MISSED_WINDOW


class NotSynced(TopicSyncError):
    """--publish-only found no completed sync of the day still standing: nothing was sent."""

    exit_code = ExitCode.NOT_READY
