"""Fixtures for the end-to-end tests. `database_url`, `engine`, `emulator`, `transport` and
`message_file` come from tests/conftest.py; the helpers live in tests/support.py."""

from __future__ import annotations

import pytest

from tests.support import cli_env
from topic_sync.emulator import FcmEmulator


@pytest.fixture
def env(database_url: str, emulator: FcmEmulator) -> dict[str, str]:
    """The environment of a CLI run that uses this test's database and emulator."""
    return cli_env(database_url, emulator)
