"""Talking to FCM: the client transports, the error table, pacing, the SDK bridge.

Importing this package imports nothing heavy; `topic_sync.fcm.wire` holds FCM's own limits and
wire constants, shared with the emulator (which must stay standard-library only).
"""

TRANSPORTS = ("v1", "v1-direct", "legacy-iid")
"""The transport names (`topic_sync.fcm.transports` maps each to its client)."""
