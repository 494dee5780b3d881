"""The day's message file: parsing, defaults, refusals and the topic payload limit."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from firebase_admin import messaging

from topic_sync.errors import BadInput, InputFileError
from topic_sync.inputs.message import (
    DEFAULT_TTL,
    TOPIC_PAYLOAD_LIMIT_BYTES,
    MessageTemplate,
    convention_warnings,
    load_message,
)

DAY = datetime.date(2026, 3, 5)
NOW = datetime.datetime(2026, 3, 5, 6, 0, tzinfo=datetime.UTC)
EXPIRES = "1772776800"  # NOW + 24 h as Unix seconds: 2026-03-06T06:00:00Z
TOPIC = "jobreco-3"

EXAMPLE = {
    "notification": {"title": "Jobs for {date}", "body": "Your picks are ready"},
    "data": {"kind": "jobreco", "v": "1", "date": "{date}"},
    "android": {"priority": "high", "notification": {"channel_id": "reco"}},
    "apns": {"payload": {"aps": {"sound": "default"}}},
}


def write(tmp_path: Path, content: Any, name: str = "message.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return path


def load(path: Path, **overrides: Any) -> MessageTemplate:
    kwargs: dict[str, Any] = {"day": DAY, "collapse_key": "jobreco", "now": NOW}
    kwargs.update(overrides)
    return load_message(path, **kwargs)


def wire(template: MessageTemplate, topic: str = TOPIC) -> dict[str, Any]:
    return messaging._MessagingService.encode_message(template.to_sdk(topic))


def refused(path: Path, **overrides: Any) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        load(path, **overrides)
    assert str(info.value).startswith(f"{path}:")
    assert info.value.path == str(path)
    return info.value


# --- round trip ------------------------------------------------------------------------------


def test_example_round_trips_to_the_v1_wire_message(tmp_path: Path) -> None:
    template = load(write(tmp_path, EXAMPLE))

    assert wire(template) == {
        "topic": "jobreco-3",
        "notification": {"title": "Jobs for 2026-03-05", "body": "Your picks are ready"},
        "data": {"kind": "jobreco", "v": "1", "date": "2026-03-05"},
        "android": {
            "priority": "high",
            "ttl": "86400s",
            "collapse_key": "jobreco",
            "notification": {"channel_id": "reco"},
        },
        "apns": {
            "headers": {"apns-expiration": EXPIRES, "apns-collapse-id": "jobreco"},
            "payload": {"aps": {"sound": "default"}},
        },
        "webpush": {"headers": {"TTL": "86400"}},
    }


def test_default_ttl_is_one_day() -> None:
    assert DEFAULT_TTL.total_seconds() == 24 * 3600
    assert TOPIC_PAYLOAD_LIMIT_BYTES == 2048


def test_ttl_argument_sets_every_platforms_expiry(tmp_path: Path) -> None:
    template = load(write(tmp_path, EXAMPLE), ttl=datetime.timedelta(hours=2))

    encoded = wire(template)
    assert encoded["android"]["ttl"] == "7200s"
    assert encoded["apns"]["headers"]["apns-expiration"] == str(int(NOW.timestamp()) + 7200)
    assert encoded["webpush"]["headers"] == {"TTL": "7200"}


def test_files_own_ttl_collapse_key_and_headers_win(tmp_path: Path) -> None:
    content = {
        "data": {"kind": "jobreco"},
        "android": {"ttl": "3600s", "collapse_key": "mine"},
        "apns": {"headers": {"APNs-Expiration": "0", "apns-collapse-id": "their-id"}},
        "webpush": {"headers": {"ttl": "60", "Urgency": "high"}},
    }
    encoded = wire(load(write(tmp_path, content)))

    assert encoded["android"] == {"ttl": "3600s", "collapse_key": "mine"}
    # Header names ignore case: no second expiry header is added beside the file's own.
    assert encoded["apns"]["headers"] == {"APNs-Expiration": "0", "apns-collapse-id": "their-id"}
    assert encoded["webpush"]["headers"] == {"ttl": "60", "Urgency": "high"}


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(3600, "3600s"), (1.5, "1.500000000s"), ("86400s", "86400s"), ("0.25s", "0.250000000s")],
)
def test_android_ttl_accepts_seconds_and_duration_strings(
    tmp_path: Path, ttl: object, expected: str
) -> None:
    path = write(tmp_path, {"data": {"k": "v"}, "android": {"ttl": ttl}})
    assert wire(load(path))["android"]["ttl"] == expected


def test_camel_case_names_mean_the_same_as_snake_case(tmp_path: Path) -> None:
    snake = {
        "notification": {"title": "t"},
        "android": {
            "collapse_key": "c",
            "restricted_package_name": "com.example",
            "notification": {"channel_id": "reco", "click_action": "OPEN"},
            "fcm_options": {"analytics_label": "daily"},
        },
        "apns": {"payload": {"aps": {"thread_id": "t", "content_available": True}}},
        "webpush": {
            "notification": {"require_interaction": True},
            "fcm_options": {"link": "https://x"},
        },
        "fcm_options": {"analytics_label": "daily"},
    }
    camel = {
        "notification": {"title": "t"},
        "android": {
            "collapseKey": "c",
            "restrictedPackageName": "com.example",
            "notification": {"channelId": "reco", "clickAction": "OPEN"},
            "fcmOptions": {"analyticsLabel": "daily"},
        },
        "apns": {"payload": {"aps": {"threadId": "t", "contentAvailable": True}}},
        "webpush": {
            "notification": {"requireInteraction": True},
            "fcmOptions": {"link": "https://x"},
        },
        "fcmOptions": {"analyticsLabel": "daily"},
    }
    from_snake = load(write(tmp_path, snake, "snake.json"))
    from_camel = load(write(tmp_path, camel, "camel.json"))

    assert from_snake == from_camel
    assert wire(from_snake) == wire(from_camel)


def test_every_supported_field_reaches_the_wire(tmp_path: Path) -> None:
    content = {
        "notification": {"title": "T {date}", "body": "B", "image": "https://img/1.png"},
        "data": {"kind": "jobreco"},
        "android": {
            "priority": "NORMAL",
            "restricted_package_name": "com.example.app",
            "data": {"a": "1"},
            "direct_boot_ok": True,
            "fcm_options": {"analytics_label": "daily-{date}"},
            "notification": {
                "title": "AT",
                "body": "AB",
                "icon": "ic",
                "color": "#1a73e8",
                "sound": "ding",
                "tag": "reco",
                "click_action": "OPEN",
                "channel_id": "reco",
                "image": "https://img/2.png",
                "ticker": "tick",
                "body_loc_key": "bk",
                "body_loc_args": ["x"],
                "sticky": False,
                "event_time": "{date}T09:00:00Z",
                "local_only": True,
                "notification_priority": "PRIORITY_HIGH",
                "vibrate_timings": ["0.5s", 1],
                "default_sound": True,
                "visibility": "PUBLIC",
                "notification_count": 3,
                "proxy": "deny",
            },
        },
        "apns": {
            "headers": {"apns-priority": "5"},
            "fcm_options": {"analytics_label": "ios", "image": "https://img/3.png"},
            "payload": {
                "aps": {
                    "alert": {"title": "IT", "subtitle": "S", "body": "IB", "loc-key": "lk"},
                    "badge": 2,
                    "sound": {"name": "alarm", "critical": 1, "volume": 0.5},
                    "content-available": 1,
                    "mutable_content": True,
                    "category": "RECO",
                    "thread-id": "daily",
                },
                "deeplink": "app://jobs/{date}",
                "meta": {"ids": [1, 2], "day": "{date}"},
            },
        },
        "webpush": {
            "data": {"w": "1"},
            "fcm_options": {"link": "https://example.com/jobs"},
            "notification": {
                "title": "WT",
                "body": "WB",
                "icon": "https://img/i.png",
                "badge": "https://img/b.png",
                "tag": "reco",
                "dir": "ltr",
                "lang": "ja",
                "renotify": True,
                "silent": False,
                "timestamp": 1700000000000,
                "vibrate": [100, 50],
                "data": {"day": "{date}"},
                "actions": [{"action": "open", "title": "Open", "icon": "https://img/a.png"}],
            },
        },
        "fcm_options": {"analytics_label": "all"},
    }
    encoded = wire(load(write(tmp_path, content)))

    assert encoded["notification"]["title"] == "T 2026-03-05"
    android = encoded["android"]
    assert android["priority"] == "normal"
    assert android["fcm_options"] == {"analytics_label": "daily-2026-03-05"}
    assert android["direct_boot_ok"] is True
    assert android["notification"]["color"] == "#1a73e8"
    assert android["notification"]["notification_priority"] == "PRIORITY_HIGH"
    assert android["notification"]["visibility"] == "PUBLIC"
    assert android["notification"]["proxy"] == "DENY"
    assert android["notification"]["event_time"] == "2026-03-05T09:00:00.000000Z"
    assert android["notification"]["vibrate_timings"] == ["0.500000000s", "1s"]
    assert android["notification"]["notification_count"] == 3
    apns = encoded["apns"]
    assert apns["headers"]["apns-priority"] == "5"
    assert apns["fcm_options"] == {"analytics_label": "ios", "image": "https://img/3.png"}
    assert apns["payload"] == {
        "aps": {
            "alert": {"title": "IT", "subtitle": "S", "body": "IB", "loc-key": "lk"},
            "badge": 2,
            "sound": {"name": "alarm", "critical": 1, "volume": 0.5},
            "content-available": 1,
            "mutable-content": 1,
            "category": "RECO",
            "thread-id": "daily",
        },
        "deeplink": "app://jobs/2026-03-05",
        "meta": {"ids": [1, 2], "day": "2026-03-05"},
    }
    webpush = encoded["webpush"]
    assert webpush["fcm_options"] == {"link": "https://example.com/jobs"}
    assert webpush["notification"]["dir"] == "ltr"
    assert webpush["notification"]["lang"] == "ja"
    assert webpush["notification"]["timestamp"] == 1700000000000
    assert webpush["notification"]["data"] == {"day": "2026-03-05"}
    assert webpush["notification"]["actions"] == [
        {"action": "open", "title": "Open", "icon": "https://img/a.png"}
    ]
    assert encoded["fcm_options"] == {"analytics_label": "all"}


def test_aps_alert_may_be_a_plain_string(tmp_path: Path) -> None:
    path = write(tmp_path, {"apns": {"payload": {"aps": {"alert": "Jobs for {date}"}}}})
    assert wire(load(path))["apns"]["payload"] == {"aps": {"alert": "Jobs for 2026-03-05"}}


def test_braces_other_than_the_date_placeholder_survive(tmp_path: Path) -> None:
    content = {
        "notification": {"title": "{name}, {date} {{date}} {0} {} {date"},
        "data": {"{date}": 'json {"a": 1} on {date}'},
    }
    encoded = wire(load(write(tmp_path, content)))

    assert encoded["notification"]["title"] == "{name}, 2026-03-05 {2026-03-05} {0} {} {date"
    # Keys are field names, not text: they are left as written.
    assert encoded["data"] == {"{date}": 'json {"a": 1} on 2026-03-05'}


def test_template_is_immutable_and_each_sdk_message_is_a_copy(tmp_path: Path) -> None:
    template = load(write(tmp_path, EXAMPLE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        template.data = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        template.data["kind"] = "other"  # type: ignore[index]

    first = template.to_sdk(TOPIC)
    first.data["kind"] = "changed"
    first.android.notification.channel_id = "changed"

    assert wire(template)["data"]["kind"] == "jobreco"
    assert wire(template)["android"]["notification"] == {"channel_id": "reco"}


def test_only_a_platform_notification_is_enough_to_send(tmp_path: Path) -> None:
    path = write(tmp_path, {"android": {"notification": {"title": "Jobs"}}})
    assert wire(load(path))["android"]["notification"] == {"title": "Jobs"}


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(EXAMPLE).encode())
    assert load(path).data == {"kind": "jobreco", "v": "1", "date": "2026-03-05"}


# --- refusals --------------------------------------------------------------------------------


def test_missing_file_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path / "absent.json")
    assert "cannot read the message file" in error.reason
    assert isinstance(error, BadInput)


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "cannot read the message file" in refused(tmp_path).reason


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"data": {"k": "café"}}'.encode("latin-1"))
    assert "not UTF-8" in refused(path).reason


def test_json_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "notification": {"title": "x"},\n  "data": {"k": "v",}\n}\n')
    error = refused(path)

    assert error.line == 3
    assert str(error).startswith(f"{path}:3: invalid JSON: ")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"data": {"k": "a", "k": "b"}}', 'invalid JSON: key "k" appears twice in one object'),
        ('{"apns": {"payload": {"n": NaN}}, "data": {"k": "v"}}', "NaN is not a JSON value"),
    ],
)
def test_json_the_parser_would_let_through_is_refused(
    tmp_path: Path, content: str, reason: str
) -> None:
    assert reason in refused(write(tmp_path, content)).reason


@pytest.mark.parametrize("content", ["[]", '"text"', "1", "null"])
def test_top_level_must_be_an_object(tmp_path: Path, content: str) -> None:
    assert "must hold a JSON object" in refused(write(tmp_path, content)).reason


@pytest.mark.parametrize("target", ["topic", "token", "condition", "fid"])
def test_a_target_field_is_refused(tmp_path: Path, target: str) -> None:
    error = refused(write(tmp_path, {**EXAMPLE, target: "jobreco-3"}))
    assert error.reason.startswith(f"{target}: remove this field")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"notification": {"title": "t"}, "priority": "high"}, "priority: unknown field"),
        (
            {"android": {"notification": {"title": "t", "colour": "#ffffff"}}},
            "android.notification.colour: unknown field",
        ),
        (
            {"apns": {"payload": {"aps": {"alert": {"title": "t", "sub": "x"}}}}},
            "apns.payload.aps.alert.sub: unknown field",
        ),
        (
            {"apns": {"payload": {"aps": {"alert": "t", "interruption_level": "x"}}}},
            "apns.payload.aps.interruption_level: unknown field",
        ),
        (
            {"webpush": {"notification": {"title": "t", "actions": [{"action": "a", "x": 1}]}}},
            "webpush.notification.actions[0].x: unknown field",
        ),
        (
            {"data": {"k": "v"}, "webpush": {"fcm_options": {"url": "x"}}},
            "webpush.fcm_options.url: unknown field",
        ),
        (
            {"data": {"k": "v"}, "android": {"notification": {"light_settings": {}}}},
            "android.notification.light_settings: unknown field",
        ),
    ],
)
def test_unknown_field_is_named_by_its_dotted_path(
    tmp_path: Path, content: dict[str, Any], reason: str
) -> None:
    error = refused(write(tmp_path, content))
    assert error.reason.startswith(reason)
    assert error.line is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"data": {"kind": "jobreco", "v": 1}}, "data.v: must be a string"),
        ({"data": ["k", "v"]}, "data: must be an object"),
        ({"notification": "hello"}, "notification: must be an object"),
        ({"notification": {"title": 5}}, "notification.title: must be a string"),
        ({"data": {"k": "v"}, "android": []}, "android: must be an object"),
        ({"data": {"k": "v"}, "android": {"priority": "urgent"}}, "android.priority: must be one"),
        ({"data": {"k": "v"}, "android": {"ttl": "1 day"}}, "android.ttl: must be seconds"),
        ({"data": {"k": "v"}, "android": {"ttl": -1}}, "android.ttl: must be seconds"),
        ({"data": {"k": "v"}, "android": {"ttl": True}}, "android.ttl: must be seconds"),
        ({"data": {"k": "v"}, "android": {"ttl": 2419201}}, "android.ttl: must be at most"),
        (
            {"data": {"k": "v"}, "android": {"data": {"n": None}}},
            "android.data.n: must be a string",
        ),
        (
            {"android": {"notification": {"color": "red"}}},
            "android.notification.color: must be a colour",
        ),
        (
            {"android": {"notification": {"title": "t", "sticky": "yes"}}},
            "android.notification.sticky: must be true or false",
        ),
        (
            {"android": {"notification": {"title": "t", "body_loc_args": ["a", 1]}}},
            "android.notification.body_loc_args[1]: must be a string",
        ),
        (
            {"android": {"notification": {"title": "t", "notification_count": 1.5}}},
            "android.notification.notification_count: must be an integer",
        ),
        (
            {"android": {"notification": {"title": "t", "event_time": "tomorrow"}}},
            "android.notification.event_time: must be an RFC 3339 time",
        ),
        ({"apns": {"payload": {"aps": {"badge": "1"}}}}, "apns.payload.aps.badge: must be an"),
        ({"apns": {"payload": {"aps": {"alert": 3}}}}, "apns.payload.aps.alert: must be a string"),
        (
            {"apns": {"payload": {"aps": {"alert": "t", "content-available": 2}}}},
            "apns.payload.aps.content-available: must be true, false, 1 or 0",
        ),
        (
            {"apns": {"payload": {"aps": {"alert": "t", "sound": {"critical": 1}}}}},
            "apns.payload.aps.sound.name: required",
        ),
        (
            {"apns": {"payload": {"aps": {"alert": "t", "sound": {"name": "s", "volume": 2}}}}},
            "apns.payload.aps.sound.volume: must be between 0 and 1",
        ),
        ({"data": {"k": "v"}, "apns": {"headers": {"x": 1}}}, "apns.headers.x: must be a string"),
        (
            {"data": {"k": "v"}, "webpush": {"fcm_options": {"link": "http://x"}}},
            "webpush.fcm_options.link: must be an https:// URL",
        ),
        (
            {"webpush": {"notification": {"title": "t", "dir": "up"}}},
            "webpush.notification.dir: must be one of auto, ltr, rtl",
        ),
        (
            {"data": {"k": "v"}, "fcm_options": {"analytics_label": "has space"}},
            "fcm_options.analytics_label: must be 1-50 characters",
        ),
        ({"data": {"from": "me"}}, "data.from: reserved by FCM"),
        ({"data": {"google.x": "1"}}, "data.google.x: reserved by FCM"),
        (
            {"data": {"k": "v"}, "android": {"collapse_key": "a", "collapseKey": "b"}},
            "android.collapseKey: the same field as android.collapse_key",
        ),
    ],
)
def test_wrong_value_is_named_by_its_dotted_path(
    tmp_path: Path, content: dict[str, Any], reason: str
) -> None:
    error = refused(write(tmp_path, content))
    assert error.reason.startswith(reason), error.reason


def test_rules_only_the_sdk_checks_are_still_refused_before_sending(tmp_path: Path) -> None:
    content = {"android": {"notification": {"title": "t", "title_loc_args": ["x"]}}}
    error = refused(write(tmp_path, content))
    assert error.reason.startswith("firebase-admin refuses the message: ")
    assert "title_loc_key" in error.reason


@pytest.mark.parametrize(
    "content",
    [
        {},
        {"notification": {}, "data": {}},
        {"android": {"priority": "high", "ttl": 60}},
        {"apns": {"headers": {"apns-priority": "10"}}},
        {"fcm_options": {"analytics_label": "x"}},
    ],
)
def test_a_message_with_nothing_to_show_is_refused(tmp_path: Path, content: dict[str, Any]) -> None:
    assert refused(write(tmp_path, content)).reason.startswith("nothing to show")


# --- payload size ----------------------------------------------------------------------------


def data_of_size(size: int) -> dict[str, str]:
    """A data object whose compact JSON is exactly ``size`` bytes: ``{"k":"xx..."}``."""
    return {"k": "x" * (size - len('{"k":""}'))}


def test_payload_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    template = load(write(tmp_path, {"data": data_of_size(2048)}))
    assert template.payload_bytes() == 2048


def test_payload_one_byte_over_the_limit_is_refused(tmp_path: Path) -> None:
    error = refused(write(tmp_path, {"data": data_of_size(2049)}))
    assert error.reason == "payload is 2049 bytes; FCM topic messages allow at most 2048"


def test_size_counts_after_date_substitution(tmp_path: Path) -> None:
    # "{date}" is 6 characters and the day 10, so 2044 bytes as written become 2048.
    data = data_of_size(2044)
    data["k"] = "{date}" + data["k"][6:]
    assert load(write(tmp_path, {"data": data})).payload_bytes() == 2048


def test_size_counts_utf8_bytes_not_characters(tmp_path: Path) -> None:
    # Each of these characters is 3 bytes in UTF-8: 682 of them plus {"k":""} make 2054 bytes.
    content = {"data": {"k": "求" * 682}}
    assert refused(write(tmp_path, content)).reason.startswith("payload is 2054 bytes")


def test_top_level_parts_and_one_platforms_parts_add_up(tmp_path: Path) -> None:
    notification = {"title": "Jobs"}  # {"title":"Jobs"} is 16 bytes
    content = {
        "notification": notification,
        "data": data_of_size(1000),
        "android": {
            "data": data_of_size(1000),
            "notification": {"tag": "x" * (32 - len('{"tag":""}'))},
        },
    }
    # 16 + 1000 + 1000 + 32 = 2048: android.notification and android.data both count.
    assert load(write(tmp_path, content)).payload_bytes() == 2048

    content["android"]["notification"]["tag"] += "x"
    assert refused(write(tmp_path, content)).reason.startswith("payload is 2049 bytes")


def test_platforms_are_measured_separately_not_summed(tmp_path: Path) -> None:
    content = {
        "data": data_of_size(1000),
        "android": {"data": data_of_size(1000)},
        "apns": {"payload": {"aps": {"alert": "x" * 900}}},
        "webpush": {"notification": {"body": "y" * 1000}},
    }
    template = load(write(tmp_path, content))
    # Largest: web, 1000 + {"body":"yyy..."} (1011) = 2011; all parts together would be far more.
    assert template.payload_bytes() == 2011


def test_apns_payload_counts_for_ios(tmp_path: Path) -> None:
    alert = "x" * (2048 - len('{"aps":{"alert":""}}') - len('{"k":"v"}') + 1)
    content = {"data": {"k": "v"}, "apns": {"payload": {"aps": {"alert": alert}}}}
    assert refused(write(tmp_path, content)).reason.startswith("payload is 2049 bytes")


def test_headers_and_options_are_not_payload(tmp_path: Path) -> None:
    content = {
        "data": data_of_size(2048),
        "apns": {"headers": {"x-note": "n" * 3000}},
        "android": {"restricted_package_name": "p" * 3000},
    }
    assert load(write(tmp_path, content)).payload_bytes() == 2048


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            '{\n  "notification": {"title": "t", "body": "b"},\n  "android": {"ttl": NaN}\n}',
            3,
            "NaN",
        ),
        ('{\n  "data": {"a": "x\\"y"},\n  "data": {"b": "c"}\n}', 3, 'key "data" appears twice'),
        ('{"data": {"k": "1", "k": "2"}}', 1, 'key "k" appears twice'),
        (
            '{\n "data": {"s": "a \\"NaN\\" in a string"},\n "android": {"ttl": -Infinity}}',
            3,
            "Infinity",
        ),
    ],
)
def test_json_the_parser_accepts_but_a_message_refuses_names_its_line(
    tmp_path, text, line, reason
) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(InputFileError) as error:
        load_message(path, day=DAY, collapse_key="c", now=NOW)
    assert error.value.line == line
    assert reason in error.value.message


# --- the data convention: type and version ----------------------------------------------------

KEYS = ("type", "version")


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({"type": "jobreco", "version": "1"}, None),
        ({"type": "jobreco"}, "'version'"),
        ({"version": "2"}, "'type'"),
        ({"type": " ", "version": "1"}, "'type'"),  # blank says nothing
        ({"kind": "jobreco"}, "'type' and 'version'"),
        (None, "'type' and 'version'"),
    ],
)
def test_missing_type_or_version_is_a_warning(tmp_path, data, missing) -> None:
    content = {"notification": {"title": "t"}, **({"data": data} if data else {})}
    path = write(tmp_path, content)
    warnings = convention_warnings(load(path), path, KEYS)
    if missing is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert warning.startswith(f"{path}: data has no {missing} key")
        assert "message_type_key" in warning


def test_the_convention_keys_are_configurable(tmp_path) -> None:
    path = write(tmp_path, EXAMPLE)  # says "kind" and "v"
    assert convention_warnings(load(path), path, ("kind", "v")) == []
    assert "'type' and 'version'" in convention_warnings(load(path), path, KEYS)[0]
