"""The day's message: a JSON file of FCM HTTP v1 ``message`` fields, checked before publishing.

The message goes to a whole topic at once and cannot be recalled, so every mistake a file can
hold is refused here, with the file and the field named, before anything is sent.

The file holds the fields of an FCM HTTP v1 ``message`` except its target (topic-sync chooses
the day's topic, so ``topic``, ``token``, ``condition`` and ``fid`` are refused)::

    {"notification": {"title": "Jobs for {date}", "body": "Your picks are ready"},
     "data": {"kind": "jobreco", "v": "1", "date": "{date}"},
     "android": {"priority": "high", "notification": {"channel_id": "reco"}},
     "apns": {"payload": {"aps": {"sound": "default"}}}}

Field names are documented in snake_case, as the v1 API's proto fields are named. The camelCase
spellings of its JSON wire form (``collapseKey``, ``channelId``, ``fcmOptions``, ...) are
accepted too, and inside ``apns.payload.aps`` so are Apple's hyphenated keys (``thread-id``).
An unknown field is an error rather than ignored: a misspelt field would silently drop part of
a message sent to millions of devices.

Supported fields:

- ``notification``: title, body, image.
- ``data``: an object of strings.
- ``android``: collapse_key, priority (high/normal), ttl (seconds as a number, or a string
  like ``"86400s"``; at most 4 weeks), restricted_package_name, data, direct_boot_ok,
  bandwidth_constrained_ok, restricted_satellite_ok, fcm_options.analytics_label, and
  notification: title, body, icon, color (``#rrggbb``), sound, tag, click_action, channel_id,
  image, ticker, body_loc_key, body_loc_args, title_loc_key, title_loc_args, sticky,
  event_time (RFC 3339), local_only, notification_priority (``PRIORITY_HIGH`` or ``high``,
  ...), vibrate_timings (durations), default_vibrate_timings, default_sound,
  default_light_settings, visibility, notification_count, proxy.
- ``apns``: headers, live_activity_token, fcm_options (analytics_label, image), payload: ``aps``
  (alert as a string or an object of title, subtitle, body, loc_key, loc_args, title_loc_key,
  title_loc_args, action_loc_key, launch_image; badge; sound as a string or an object of name,
  critical, volume; content_available; mutable_content; category; thread_id) and any custom
  keys beside ``aps``, passed to the app as they are.
- ``webpush``: headers, data, fcm_options.link (https), notification: title, body, icon, image,
  badge, tag, dir, lang, renotify, require_interaction, silent, timestamp, vibrate, data,
  actions (objects of action, title, icon).
- ``fcm_options``: analytics_label.

Every ``{date}`` in a string value (not in a key) becomes the day as ``YYYY-MM-DD``. It is a
plain text replacement, so other braces in the text stay as they are.

A message to a topic lives four weeks by default, and the audience changes daily, so unless
the file says otherwise each platform gets an expiry of ``ttl`` (Android ``ttl``, APNs
``apns-expiration``, Webpush ``TTL``) and one collapse key (Android ``collapse_key``, APNs
``apns-collapse-id``), so a device that was offline sees at most the latest day's message.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from firebase_admin import messaging

from topic_sync.dates import with_date
from topic_sync.errors import InputFileError

TOPIC_PAYLOAD_LIMIT_BYTES = 2048
"""Largest payload a topic message may carry: topic messages carry less than token messages
(2 KB is the figure usually given), so the size is checked before anything is sent."""

DEFAULT_TTL = datetime.timedelta(hours=24)
"""How long the day's message may wait for an offline device: it must not arrive tomorrow."""

MAX_TTL = datetime.timedelta(weeks=4)
"""FCM keeps a message at most four weeks; a longer ``android.ttl`` is refused."""

_TARGET_FIELDS = ("topic", "token", "condition", "fid")

# The wire payload does not depend on the topic; this name only lets the SDK encode a message.
_PLACEHOLDER_TOPIC = "topic-sync-check"

# What each platform's devices receive besides the top-level notification and data.
_PLATFORM_PAYLOADS: Mapping[str, tuple[str, ...]] = {
    "android": ("notification", "data"),
    "apns": ("payload",),
    "webpush": ("notification", "data"),
}


@dataclasses.dataclass(frozen=True)
class MessageTemplate:
    """The day's message, validated, with ``{date}`` replaced and defaults applied.

    Each field holds the keyword arguments of the matching firebase-admin class (read-only
    mappings; nested mappings for nested classes), so a template can be checked and stored
    once and turned into a fresh SDK message whenever one is needed.
    """

    notification: Mapping[str, Any] | None
    data: Mapping[str, str] | None
    android: Mapping[str, Any]
    apns: Mapping[str, Any]
    webpush: Mapping[str, Any]
    fcm_options: Mapping[str, Any] | None

    def to_sdk(self, topic: str) -> messaging.Message:
        """Return a new firebase-admin ``Message`` for ``topic``; the template is not shared."""
        return messaging.Message(
            topic=topic,
            notification=_build(messaging.Notification, self.notification),
            data=_thaw(self.data),
            android=_android(self.android),
            apns=_apns(self.apns),
            webpush=_webpush(self.webpush),
            fcm_options=_build(messaging.FCMOptions, self.fcm_options),
        )

    def payload_bytes(self) -> int:
        """Return the size ``TOPIC_PAYLOAD_LIMIT_BYTES`` limits; ``load_message`` has the rule."""
        return max(_payload_sizes(_wire(self.to_sdk(_PLACEHOLDER_TOPIC))).values())


def convention_warnings(
    template: MessageTemplate, path: str | os.PathLike[str], keys: tuple[str, ...]
) -> list[str]:
    """What the message lacks of the convention that its ``data`` names its kind and version
    (``keys``, e.g. ``("type", "version")``), so apps can ignore kinds they do not know.
    A missing key is a warning, never an error: the message is still valid for FCM."""
    data = template.data or {}
    missing = [key for key in keys if not str(data.get(key, "")).strip()]
    if not missing:
        return []
    names = " and ".join(f"{key!r}" for key in missing)
    return [
        f"{os.fspath(path)}: data has no {names} key: apps cannot tell this kind of message "
        f"(or its version) from others and ignore it if they do not know it. Add "
        f'"data": {{"{keys[0]}": "...", "{keys[-1]}": "1"}} (the key names are the '
        "message_type_key and message_version_key settings)"
    ]


def load_message(
    path: str | os.PathLike[str],
    *,
    day: datetime.date,
    collapse_key: str,
    ttl: datetime.timedelta = DEFAULT_TTL,
    now: datetime.datetime,
) -> MessageTemplate:
    """Read the message file for ``day`` and return it validated, or raise ``InputFileError``.

    Defaults the file may override: Android ``ttl`` = ``ttl`` and ``collapse_key`` =
    ``collapse_key``; APNs headers ``apns-expiration`` = ``now + ttl`` (Unix seconds) and
    ``apns-collapse-id`` = ``collapse_key``; Webpush header ``TTL`` = ``ttl`` in seconds.
    ``now`` should be timezone-aware (a naive one is read as local time).

    Payload size rule: each payload part is measured as compact UTF-8 JSON (separators ``,``
    and ``:``, characters not escaped), as encoded for the FCM v1 API. A device on one
    platform receives the top-level ``notification`` and ``data`` plus its platform's parts:
    Android ``android.notification`` and ``android.data``, iOS ``apns.payload``, web
    ``webpush.notification`` and ``webpush.data``. The largest of these three totals must be
    at most ``TOPIC_PAYLOAD_LIMIT_BYTES``. Counting a platform's overrides on top of the
    top-level parts overestimates a little, which errs on the side of delivery.

    A file whose message has nothing to show (no notification and no data, at the top level
    or for any platform) is refused too.
    """
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise InputFileError(path, "the message file must hold a JSON object of message fields")
    for target in _TARGET_FIELDS:
        if target in raw:
            raise InputFileError(
                path, f"{target}: remove this field; topic-sync sends to the day's topic"
            )
    raw = _substitute(raw, day)
    try:
        fields = _MESSAGE(raw, "")
    except _Invalid as e:
        raise InputFileError(path, str(e)) from None
    _apply_defaults(fields, collapse_key=collapse_key, ttl=ttl, now=now)
    template = MessageTemplate(
        notification=_freeze(fields.get("notification")),
        data=_freeze(fields.get("data")),
        android=_freeze(fields["android"]),
        apns=_freeze(fields["apns"]),
        webpush=_freeze(fields["webpush"]),
        fcm_options=_freeze(fields.get("fcm_options")),
    )
    try:
        wire = _wire(template.to_sdk(_PLACEHOLDER_TOPIC))
    except (ValueError, OverflowError) as e:  # a rule this module does not check itself
        raise InputFileError(path, f"firebase-admin refuses the message: {e}") from None
    sizes = _payload_sizes(wire)
    if not any(sizes.values()):
        raise InputFileError(path, "nothing to show: the message has no notification and no data")
    size = max(sizes.values())
    if size > TOPIC_PAYLOAD_LIMIT_BYTES:
        raise InputFileError(
            path,
            f"payload is {size} bytes; FCM topic messages allow at most "
            f"{TOPIC_PAYLOAD_LIMIT_BYTES}",
        )
    return template


# --- reading --------------------------------------------------------------------------------


class _BadJson(ValueError):
    """JSON the standard parser accepts but a message must not hold."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key  # the repeated key, for a duplicate; None for a non-JSON constant


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InputFileError(path, f"cannot read the message file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputFileError(path, "the message file is not UTF-8 text") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputFileError(path, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    except _BadJson as e:
        raise InputFileError(path, f"invalid JSON: {e}", _line_of(text, e)) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse a repeated key: the parser would otherwise keep the last one without a word."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _BadJson(f'key "{key}" appears twice in one object', key=key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not a JSON value")


_CONSTANTS = ("NaN", "Infinity", "-Infinity")


def _line_of(text: str, problem: _BadJson) -> int | None:
    """The line of the first repeated key (or non-JSON constant) in text the parser read.

    The standard parser's hooks do not know where they are; a short scan that follows
    strings and nesting finds the spot, so the message can name file and line.
    """
    line, i, size = 1, 0, len(text)
    objects: list[set[str] | None] = []  # per open container: keys seen, or None (array)
    while i < size:
        char = text[i]
        if char == "\n":
            line += 1
        elif char == '"':
            end = i + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            after = end + 1
            while after < size and text[after] in " \t\r\n":
                after += 1
            if after < size and text[after] == ":" and objects and objects[-1] is not None:
                key = json.loads(text[i : end + 1])
                if problem.key is not None and key == problem.key and key in objects[-1]:
                    return line
                objects[-1].add(key)
            i = end
        elif char == "{":
            objects.append(set())
        elif char == "[":
            objects.append(None)
        elif char in "}]" and objects:
            objects.pop()
        elif problem.key is None and text.startswith(_CONSTANTS, i):
            return line
        i += 1
    return None


def _substitute(value: Any, day: datetime.date) -> Any:
    """Replace the placeholder in string values only; keys name fields and stay as written."""
    if isinstance(value, str):
        return with_date(value, day)
    if isinstance(value, dict):
        return {key: _substitute(item, day) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, day) for item in value]
    return value


# --- validation: each check takes (value, dotted path) and returns the SDK's value -----------


class _Invalid(Exception):
    """A field is wrong; the message names it by its dotted path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


_Check = Callable[[Any, str], Any]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(path, "must be a string")
    return value


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(path, "must be true or false")
    return value


def _flag(value: Any, path: str) -> bool:
    """An APNs flag: Apple writes 1, the SDK takes a boolean; both are accepted."""
    if isinstance(value, bool):
        return value
    if _is_number(value) and value in (0, 1):
        return bool(value)
    raise _Invalid(path, "must be true, false, 1 or 0")


def _integer(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(path, "must be an integer")
    return value


def _number(value: Any, path: str) -> float | int:
    if not _is_number(value) or not math.isfinite(value):
        raise _Invalid(path, "must be a number")
    number: float | int = value
    return number


def _volume(value: Any, path: str) -> float | int:
    volume = _number(value, path)
    if not 0 <= volume <= 1:
        raise _Invalid(path, "must be between 0 and 1")
    return volume


def _any_json(value: Any, path: str) -> Any:
    return value


def _object_value(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(path, "must be an object")
    return value


def _string_map(value: Any, path: str) -> dict[str, str]:
    return {
        key: _string(item, _join(path, key)) for key, item in _object_value(value, path).items()
    }


def _list_of(check: _Check) -> _Check:
    def parse(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise _Invalid(path, "must be a list")
        return [check(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return parse


def _pattern(regex: str, expected: str) -> _Check:
    compiled = re.compile(regex)

    def parse(value: Any, path: str) -> str:
        text = _string(value, path)
        if not compiled.fullmatch(text):
            raise _Invalid(path, f"must be {expected}")
        return text

    return parse


def _enum(*choices: str, prefix: str = "") -> _Check:
    """An enum, in the wire's upper case (with its prefix) or the SDK's lower case."""

    def parse(value: Any, path: str) -> str:
        choice = _string(value, path).lower().removeprefix(prefix)
        if choice not in choices:
            raise _Invalid(path, f"must be one of {', '.join(choices)}")
        return choice

    return parse


_DURATION_RE = re.compile(r"\d+(\.\d{1,9})?s")


def _seconds(value: Any, path: str) -> float:
    """A protobuf Duration: seconds as a number, or as a string like ``"3.5s"``."""
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    if isinstance(value, str) and _DURATION_RE.fullmatch(value):
        return float(value[:-1])
    raise _Invalid(path, 'must be seconds, as a number or a string like "86400s"')


def _ttl(value: Any, path: str) -> datetime.timedelta:
    seconds = _seconds(value, path)
    if seconds > MAX_TTL.total_seconds():
        raise _Invalid(path, f"must be at most {int(MAX_TTL.total_seconds())} seconds (4 weeks)")
    return datetime.timedelta(seconds=seconds)


def _durations_millis(value: Any, path: str) -> list[float]:
    return [seconds * 1000 for seconds in _list_of(_seconds)(value, path)]


def _timestamp(value: Any, path: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(_string(value, path))
    except ValueError:
        raise _Invalid(path, "must be an RFC 3339 time like 2026-01-02T09:00:00Z") from None


def _non_empty(value: Any, path: str) -> str:
    text = _string(value, path)
    if not text:
        raise _Invalid(path, "must not be empty")
    return text


_RESERVED_DATA_KEYS = ("from", "message_type")


def _data(value: Any, path: str) -> dict[str, str]:
    """Data fields: strings only, and none of the keys FCM keeps for itself."""
    data = _string_map(value, path)
    for key in data:
        if key in _RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
            raise _Invalid(_join(path, key), "reserved by FCM; choose another key")
    return data


_strings = _list_of(_string)
_color = _pattern(r"#[0-9a-fA-F]{6}", "a colour like #1a73e8")
_analytics_label = _pattern(r"[a-zA-Z0-9\-_.~%]{1,50}", "1-50 characters of A-Z a-z 0-9 - _ . ~ %")
_https_url = _pattern(r"https://.+", "an https:// URL")


@dataclasses.dataclass(frozen=True)
class _Field:
    check: _Check
    kwarg: str | None = None  # the SDK's keyword, where it differs from the field's name


class _Object:
    """A JSON object of known fields; calling it returns the SDK class's keyword arguments."""

    def __init__(
        self,
        fields: Mapping[str, _Field | _Check],
        *,
        custom: _Check | None = None,
        hyphens: bool = False,
        required: tuple[str, ...] = (),
    ) -> None:
        self.fields = {
            name: f if isinstance(f, _Field) else _Field(f) for name, f in fields.items()
        }
        self.custom = custom  # checks keys not in fields, kept as custom_data; None: refused
        self.required = required
        self.spellings: dict[str, str] = {}
        for name in self.fields:
            self.spellings[name] = self.spellings[_camel(name)] = name
            if hyphens:
                self.spellings[name.replace("_", "-")] = name

    def __call__(self, value: Any, path: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, item in _object_value(value, path).items():
            where = _join(path, key)
            name = self.spellings.get(key)
            if name is None:
                if self.custom is None:
                    raise _Invalid(where, "unknown field")
                custom[key] = self.custom(item, where)
                continue
            if name in given:
                raise _Invalid(where, f"the same field as {_join(path, given[name])}")
            given[name] = key
            field = self.fields[name]
            result[field.kwarg or name] = field.check(item, where)
        for name in self.required:
            if name not in given:
                raise _Invalid(_join(path, name), "required")
        if custom:
            result["custom_data"] = custom
        return result


def _string_or(obj: _Object) -> _Check:
    def parse(value: Any, path: str) -> str | dict[str, Any]:
        if isinstance(value, str):
            return _non_empty(value, path)
        if isinstance(value, dict):
            return obj(value, path)
        raise _Invalid(path, "must be a string or an object")

    return parse


_ANALYTICS = _Object({"analytics_label": _analytics_label})

_ANDROID_NOTIFICATION = _Object(
    {
        "title": _string,
        "body": _string,
        "icon": _string,
        "color": _color,
        "sound": _string,
        "tag": _string,
        "click_action": _string,
        "body_loc_key": _string,
        "body_loc_args": _strings,
        "title_loc_key": _string,
        "title_loc_args": _strings,
        "channel_id": _string,
        "image": _string,
        "ticker": _string,
        "sticky": _boolean,
        "event_time": _Field(_timestamp, kwarg="event_timestamp"),
        "local_only": _boolean,
        "notification_priority": _Field(
            _enum("min", "low", "default", "high", "max", prefix="priority_"), kwarg="priority"
        ),
        "vibrate_timings": _Field(_durations_millis, kwarg="vibrate_timings_millis"),
        "default_vibrate_timings": _boolean,
        "default_sound": _boolean,
        "default_light_settings": _boolean,
        "visibility": _enum("private", "public", "secret"),
        "notification_count": _integer,
        "proxy": _enum("allow", "deny", "if_priority_lowered"),
    }
)

_ANDROID = _Object(
    {
        "collapse_key": _string,
        "priority": _enum("normal", "high"),
        "ttl": _ttl,
        "restricted_package_name": _string,
        "data": _data,
        "notification": _ANDROID_NOTIFICATION,
        "fcm_options": _ANALYTICS,
        "direct_boot_ok": _boolean,
        "bandwidth_constrained_ok": _boolean,
        "restricted_satellite_ok": _boolean,
    }
)

_APS_ALERT = _Object(
    {
        "title": _string,
        "subtitle": _string,
        "body": _string,
        "loc_key": _string,
        "loc_args": _strings,
        "title_loc_key": _string,
        "title_loc_args": _strings,
        "action_loc_key": _string,
        "launch_image": _string,
    },
    hyphens=True,
)

_CRITICAL_SOUND = _Object(
    {"name": _non_empty, "critical": _flag, "volume": _volume}, required=("name",)
)

_APS = _Object(
    {
        "alert": _string_or(_APS_ALERT),
        "badge": _integer,
        "sound": _string_or(_CRITICAL_SOUND),
        "content_available": _flag,
        "mutable_content": _flag,
        "category": _string,
        "thread_id": _string,
    },
    hyphens=True,
)

_APNS = _Object(
    {
        "headers": _string_map,
        "payload": _Object({"aps": _APS}, custom=_any_json),
        "fcm_options": _Object({"analytics_label": _analytics_label, "image": _string}),
        "live_activity_token": _string,
    }
)

_WEBPUSH_NOTIFICATION = _Object(
    {
        "title": _string,
        "body": _string,
        "icon": _string,
        "image": _string,
        "badge": _string,
        "tag": _string,
        "dir": _Field(_enum("auto", "ltr", "rtl"), kwarg="direction"),
        "lang": _Field(_string, kwarg="language"),
        "renotify": _boolean,
        "require_interaction": _boolean,
        "silent": _boolean,
        "timestamp": _Field(_number, kwarg="timestamp_millis"),
        "vibrate": _list_of(_integer),
        "data": _any_json,
        "actions": _list_of(
            _Object(
                {"action": _string, "title": _string, "icon": _string},
                required=("action", "title"),
            )
        ),
    }
)

_WEBPUSH = _Object(
    {
        "headers": _string_map,
        "data": _data,
        "notification": _WEBPUSH_NOTIFICATION,
        "fcm_options": _Object({"link": _https_url}),
    }
)

_MESSAGE = _Object(
    {
        "notification": _Object({"title": _string, "body": _string, "image": _string}),
        "data": _data,
        "android": _ANDROID,
        "apns": _APNS,
        "webpush": _WEBPUSH,
        "fcm_options": _ANALYTICS,
    }
)


# --- defaults --------------------------------------------------------------------------------


def _apply_defaults(
    fields: dict[str, Any],
    *,
    collapse_key: str,
    ttl: datetime.timedelta,
    now: datetime.datetime,
) -> None:
    """Give every platform the day's expiry and collapse key, unless the file set its own."""
    android = fields.setdefault("android", {})
    android.setdefault("ttl", ttl)
    android.setdefault("collapse_key", collapse_key)
    apns_headers = fields.setdefault("apns", {}).setdefault("headers", {})
    _default_header(apns_headers, "apns-expiration", str(int((now + ttl).timestamp())))
    _default_header(apns_headers, "apns-collapse-id", collapse_key)
    webpush_headers = fields.setdefault("webpush", {}).setdefault("headers", {})
    _default_header(webpush_headers, "TTL", str(int(ttl.total_seconds())))


def _default_header(headers: dict[str, str], name: str, value: str) -> None:
    """HTTP header names ignore case: a file's ``apns-Expiration`` is the same header."""
    if not any(key.lower() == name.lower() for key in headers):
        headers[name] = value


# --- building SDK objects --------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """A mutable deep copy, as the SDK expects (its validators want dicts and lists)."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value


def _build(cls: Callable[..., Any], kwargs: Mapping[str, Any] | None) -> Any:
    return None if kwargs is None else cls(**_thaw(kwargs))


def _android(fields: Mapping[str, Any]) -> messaging.AndroidConfig:
    kwargs = _thaw(fields)
    kwargs["notification"] = _build(messaging.AndroidNotification, kwargs.get("notification"))
    kwargs["fcm_options"] = _build(messaging.AndroidFCMOptions, kwargs.get("fcm_options"))
    return messaging.AndroidConfig(**kwargs)


def _apns(fields: Mapping[str, Any]) -> messaging.APNSConfig:
    kwargs = _thaw(fields)
    kwargs["payload"] = _apns_payload(kwargs.get("payload"))
    kwargs["fcm_options"] = _build(messaging.APNSFCMOptions, kwargs.get("fcm_options"))
    return messaging.APNSConfig(**kwargs)


def _apns_payload(fields: dict[str, Any] | None) -> messaging.APNSPayload | None:
    if fields is None:
        return None
    aps = fields.get("aps", {})
    if isinstance(aps.get("alert"), dict):
        aps["alert"] = messaging.ApsAlert(**aps["alert"])
    if isinstance(aps.get("sound"), dict):
        aps["sound"] = messaging.CriticalSound(**aps["sound"])
    return messaging.APNSPayload(messaging.Aps(**aps), **fields.get("custom_data", {}))


def _webpush(fields: Mapping[str, Any]) -> messaging.WebpushConfig:
    kwargs = _thaw(fields)
    notification = kwargs.get("notification")
    if notification is not None:
        if "actions" in notification:
            notification["actions"] = [
                messaging.WebpushNotificationAction(**action) for action in notification["actions"]
            ]
        kwargs["notification"] = messaging.WebpushNotification(**notification)
    kwargs["fcm_options"] = _build(messaging.WebpushFCMOptions, kwargs.get("fcm_options"))
    return messaging.WebpushConfig(**kwargs)


# --- payload size ----------------------------------------------------------------------------


def _wire(message: messaging.Message) -> dict[str, Any]:
    """The v1 JSON the SDK would send (``str`` runs its public encoder and validators)."""
    wire: dict[str, Any] = json.loads(str(message))
    return wire


def _json_size(value: Any) -> int:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8"))


def _payload_sizes(wire: Mapping[str, Any]) -> dict[str, int]:
    """Bytes a device of each platform receives; see ``load_message`` for the rule."""
    shared = sum(_json_size(wire[part]) for part in ("notification", "data") if part in wire)
    sizes = {}
    for platform, parts in _PLATFORM_PAYLOADS.items():
        section = wire.get(platform, {})
        sizes[platform] = shared + sum(_json_size(section[p]) for p in parts if p in section)
    return sizes
