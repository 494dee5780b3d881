"""Where topic-sync keeps its own files when no database URL is given."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """Per-user data directory (XDG), used for the embedded PostgreSQL."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "topic-sync"
