"""Talking to FCM: the client transports, the error table, pacing, the SDK bridge.

Importing this package imports nothing heavy; `topic_sync.fcm.wire` holds FCM's own limits and
wire constants, shared with the emulator (which must stay standard-library only).
"""
