"""Choosing a transport: the one place that maps a transport name to its client."""

from __future__ import annotations

import firebase_admin

from topic_sync.fcm import TRANSPORTS
from topic_sync.fcm.client import SdkClient
from topic_sync.fcm.direct import DirectV1Client

__all__ = ["TRANSPORTS", "make_client"]


def make_client(app: firebase_admin.App, transport: str) -> SdkClient:
    """The client for a transport name (see TRANSPORTS)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; choose from {', '.join(TRANSPORTS)}")
    if transport == "v1-direct":
        return DirectV1Client(app)
    return SdkClient(app, transport)
