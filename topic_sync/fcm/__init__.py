"""Talking to FCM: the client transports, the error table, pacing, the SDK bridge.

Importing this package imports nothing heavy; `topic_sync.fcm.wire` holds FCM's own limits and
wire constants (the emulator keeps its own copy, to catch a wrong one here).
"""

from topic_sync.states import Transport

TRANSPORTS = tuple(t.value for t in Transport)
"""The transport names (`topic_sync.fcm.transports` maps each to its client)."""
