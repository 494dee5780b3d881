"""Keeping secrets and device identifiers out of what is printed, logged and exported.

A database or Pushgateway URL is shown with its password and secret query parameters masked;
a driver's error that quotes the URL is scrubbed of them; a token is shortened to enough to
recognise it. Standard library only: every layer that prints or logs uses it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# libpq and SQLAlchemy URL parameters that carry a secret (or are one).
_SECRET_PARAMS = re.compile(r"pass|secret|token|key$|sslkey", re.IGNORECASE)
MASK = "***"


def mask_url(url: str | None) -> str | None:
    """A URL fit to print anywhere (config show, logs, errors, --json): every secret it can
    carry replaced by ***: the password in its userinfo, and query parameters such as
    password=, sslpassword= or any other whose name says pass, secret, token or key."""
    if not url or url.startswith("env:"):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, question, query = rest.partition("?")
    at = head.rfind("@")
    if at != -1:
        userinfo, hostpart = head[:at], head[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        head = f"{user}{':' + MASK if colon else ''}@{hostpart}"
    if question:
        parts = []
        for item in query.split("&"):
            name, eq, _value = item.partition("=")
            secret = eq and _SECRET_PARAMS.search(unquote(name))
            parts.append(f"{name}={MASK}" if secret else item)
        query = "&".join(parts)
    return f"{scheme}://{head}{question}{query}"


def scrub(message: str, url: str | None) -> str:
    """A message (a driver's error, say) with every secret of the URL in it masked."""
    if not url:
        return message
    masked = mask_url(url) or ""
    message = message.replace(url, masked)
    for secret in _secrets(url):
        message = message.replace(secret, MASK)
    return message


def _secrets(url: str) -> list[str]:
    """The secret values a URL carries, decoded and as written, longest first."""
    _scheme, _sep, rest = url.partition("://")
    head, _q, query = rest.partition("?")
    found = []
    at = head.rfind("@")
    if at != -1:
        _user, colon, password = head[:at].partition(":")
        if colon and password:
            found += [password, unquote(password)]
    for item in query.split("&") if query else ():
        name, eq, value = item.partition("=")
        if eq and value and _SECRET_PARAMS.search(unquote(name)):
            found += [value, unquote(value)]
    return sorted(set(found), key=len, reverse=True)


def shorten(token: str) -> str:
    """Enough of a token to recognise it, not enough to use it: first 8 + "…" + last 4;
    a token of 16 characters or fewer shows only its start (never the whole token).

    Tokens are device identifiers: output that ends up in cron mail and journals shows
    them shortened unless a --full-tokens flag asks otherwise.
    """
    if len(token) > 16:
        return f"{token[:8]}…{token[-4:]}"
    return f"{token[: min(4, len(token) // 2)]}…"
