"""Which FCM a client talks to: a Firebase project at production FCM or at an emulator.

The database's state is bound to one target (see engine.target), so the target must be
named the same way by every client.
"""

from __future__ import annotations

from dataclasses import dataclass

PRODUCTION_ENDPOINT = "fcm.googleapis.com"


@dataclass(frozen=True)
class FcmTarget:
    """A Firebase project at production FCM or at an emulator."""

    project_id: str
    endpoint: str  # PRODUCTION_ENDPOINT, or "emulator HOST:PORT"

    @classmethod
    def of(cls, project_id: str, emulator_host: str | None) -> FcmTarget:
        endpoint = f"emulator {emulator_host}" if emulator_host else PRODUCTION_ENDPOINT
        return cls(project_id, endpoint)

    @property
    def is_emulator(self) -> bool:
        return self.endpoint != PRODUCTION_ENDPOINT

    def __str__(self) -> str:
        where = self.endpoint if self.is_emulator else f"production FCM ({self.endpoint})"
        return f"project {self.project_id!r} at {where}"
