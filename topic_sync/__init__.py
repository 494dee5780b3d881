"""topic-sync: keep FCM topic membership equal to a daily audience, then publish once."""

from __future__ import annotations

__version__ = "0.1.0"
