"""Redaction: every secret a URL can carry masked, drivers' messages scrubbed, tokens shortened."""

from __future__ import annotations

import pytest

from topic_sync.redact import mask_url, scrub, shorten


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://alice@h/db?password=S3cret", "postgresql://alice@h/db?password=***"),
        ("postgresql://u:p%40ss@h:5/db", "postgresql://u:***@h:5/db"),
        (
            "postgresql://u@h/db?sslmode=require&sslpassword=x&application_name=a",
            "postgresql://u@h/db?sslmode=require&sslpassword=***&application_name=a",
        ),
        ("postgresql+psycopg://u:secret@db/x", "postgresql+psycopg://u:***@db/x"),
        ("postgresql://h/db?PASSWORD=y", "postgresql://h/db?PASSWORD=***"),
        ("postgresql://a:b:c@h/d", "postgresql://a:***@h/d"),
        ("postgresql://h/db?sslmode=require", "postgresql://h/db?sslmode=require"),
        ("env:DATABASE_URL", "env:DATABASE_URL"),
    ],
)
def test_every_secret_a_url_can_carry_is_masked(url, masked) -> None:
    assert mask_url(url) == masked


def test_a_drivers_message_is_scrubbed_of_the_urls_secrets() -> None:
    url = "postgresql://u:p%40ss@h/db?sslpassword=k3y"
    message = f"bad conninfo {url}: password p@ss, p%40ss and k3y"
    cleaned = scrub(message, url)
    assert "p@ss" not in cleaned and "p%40ss" not in cleaned and "k3y" not in cleaned


def test_a_token_is_shortened_to_recognise_it_never_to_use_it() -> None:
    long = "d" * 30 + "WXYZ"
    assert shorten(long) == "dddddddd…WXYZ"
    assert shorten("abcdefgh12345678") == "abcd…"  # 16 characters or fewer: only the start
    assert "abcdefgh12345678" not in shorten("abcdefgh12345678")
