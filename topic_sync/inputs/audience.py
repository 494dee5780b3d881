"""Read and validate a day's audience file, one token at a time.

The audience decides who is subscribed to today's topic, so a bad file must stop the run
before anything changes: every malformed line is refused with its path and line number, and a
file without tokens is refused outright (an empty audience would unsubscribe everyone).

Tokens are streamed, never collected, so a file of tens of millions of lines costs constant
memory. Duplicates are passed through: the database merges and counts them.

Two formats are accepted: one token per line, or CSV whose header has a ``token`` column.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Literal, NamedTuple

from topic_sync.errors import InputFileError

MAX_TOKEN_LENGTH = 4096
"""Longest token accepted: real FCM tokens and installation IDs are far shorter."""

_TOKEN_CHARS = r"A-Za-z0-9_:.\-"
_ALLOWED_FOR_PEOPLE = "A-Z a-z 0-9 _ : . -"

TOKEN_RE = re.compile(f"(?=[_:.\\-]*[A-Za-z0-9])[{_TOKEN_CHARS}]{{1,{MAX_TOKEN_LENGTH}}}")
"""A plausible token, for ``fullmatch`` on a trimmed string: the FCM token alphabet, with at
least one letter or digit (a token ``.`` or ``..`` would be a dot segment in a URL path, which
HTTP stacks rewrite)."""

# The same pattern over raw bytes: the hot loop then skips decoding until a line looks wrong.
_TOKEN_RE_BYTES = re.compile(TOKEN_RE.pattern.encode("ascii"))
_DISALLOWED_RE = re.compile(f"[^{_TOKEN_CHARS}]")

NO_TOKENS = "no tokens: an empty audience would unsubscribe everyone"

AudienceFormat = Literal["lines", "csv"]

# A physical line longer than this is refused, so a file without newlines (corrupt, or not
# an audience at all) cannot make one read swallow it whole.
_MAX_LINE_BYTES = 1 << 20
_READ_BUFFER = 1 << 20


def shorten(token: str) -> str:
    """Enough of a token to recognise it, not enough to use it: first 8 + "…" + last 4;
    a token of 16 characters or fewer shows only its start (never the whole token).

    Tokens are device identifiers: output that ends up in cron mail and journals shows
    them shortened unless a --full-tokens flag asks otherwise.
    """
    if len(token) > 16:
        return f"{token[:8]}…{token[-4:]}"
    return f"{token[: min(4, len(token) // 2)]}…"


def validate_token(token: str) -> str | None:
    """Return why a trimmed token is not plausible, or None if it is.

    A cheap shape check, not proof the token is alive: it keeps garbage (a header, a comment,
    a truncated write) out of the subscription table before any FCM call is made.
    """
    if TOKEN_RE.fullmatch(token):
        return None
    if not token:
        return "empty token"
    bad = _DISALLOWED_RE.search(token)  # the first offending character is the one to name
    if bad is None:
        if len(token) > MAX_TOKEN_LENGTH:
            return f"token is {len(token)} characters; at most {MAX_TOKEN_LENGTH}"
        return "a token needs at least one letter or digit"
    if bad.group().isspace():
        edge = bad.start() == 0 or token[-1].isspace()
        return "whitespace around token" if edge else "whitespace inside token"
    return f"character {bad.group()!r} not allowed in a token (allowed: {_ALLOWED_FOR_PEOPLE})"


def iter_audience(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield each valid, trimmed token of an audience file in file order.

    Lazy: the file is opened on the first ``next()`` and an error is raised at the first bad
    line, after the tokens before it were yielded. Callers load inside a transaction and roll
    back on error, so a partial stream never takes effect. "No tokens" is raised at the end.
    """
    name = os.fspath(path)
    with _open(name) as f:
        lines = _physical_lines(f)
        try:
            start = _detect(lines, name)
            if start.text is None:
                raise InputFileError(name, NO_TOKENS)
            if start.format == "lines":
                yield from _iter_lines(lines, name, start.lineno, start.text)
            else:
                yield from _iter_csv(lines, name, start.lineno, start.column, start.columns)
        except OSError as exc:
            raise InputFileError(name, f"read error: {exc.strerror or exc}") from exc


def audience_format(path: str | os.PathLike[str]) -> AudienceFormat:
    """Say how the file would be read ("lines" or "csv"), checking only up to its header.

    For logs and dry runs; an empty file counts as "csv" if named ``*.csv``, else "lines".
    """
    name = os.fspath(path)
    with _open(name) as f:
        try:
            return _detect(_physical_lines(f), name).format
        except OSError as exc:
            raise InputFileError(name, f"read error: {exc.strerror or exc}") from exc


class _Start(NamedTuple):
    """What the first non-blank line told us about the file."""

    format: AudienceFormat
    lineno: int  # physical line of ``text``, or the number of lines read if there is none
    text: str | None  # the first non-blank line, decoded; None if the file has none
    column: int  # index of the token column (CSV only)
    columns: int  # number of header columns (CSV only)


def _open(name: str) -> BinaryIO:
    """Open for binary reading, turning the usual failures into messages for people."""
    try:
        return open(name, "rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        raise InputFileError(name, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(name, "is a directory, not an audience file") from None
    except PermissionError:
        raise InputFileError(name, "permission denied") from None
    except OSError as exc:
        raise InputFileError(name, f"cannot open: {exc.strerror or exc}") from None


def _physical_lines(f: BinaryIO) -> Iterator[bytes]:
    """Raw lines split on newline only (so numbers are physical), each with a bounded length."""
    return iter(functools.partial(f.readline, _MAX_LINE_BYTES + 1), b"")


def _decode(raw: bytes, name: str, lineno: int) -> str:
    """Decode one raw line, refusing what an audience file cannot contain."""
    if len(raw) > _MAX_LINE_BYTES:
        raise InputFileError(name, f"line is longer than {_MAX_LINE_BYTES} bytes", lineno)
    if b"\0" in raw:
        raise InputFileError(name, "NUL byte in line (a binary or UTF-16 file?)", lineno)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        raise InputFileError(name, reason, lineno) from None


def _detect(lines: Iterator[bytes], name: str) -> _Start:
    """Read up to the first non-blank line and decide between plain lines and CSV."""
    named_csv = name.lower().endswith(".csv")
    lineno = 0
    for raw in lines:
        lineno += 1
        text = _decode(raw, name, lineno)
        if lineno == 1:
            text = text.removeprefix("\ufeff")  # a byte order mark, as spreadsheets write
        if text.strip():
            break
    else:
        return _Start("csv" if named_csv else "lines", lineno, None, 0, 0)

    try:
        header = next(csv.reader([text], strict=True, skipinitialspace=True))
    except (csv.Error, StopIteration) as exc:
        if named_csv:
            raise InputFileError(name, f"malformed CSV header: {exc}", lineno) from None
        header = []
    names = [field.strip().lower() for field in header]
    found = names.count("token")
    if found > 1:
        raise InputFileError(name, "more than one 'token' column in the CSV header", lineno)
    if found == 1:
        return _Start("csv", lineno, text, names.index("token"), len(names))
    if named_csv:
        shown = ", ".join(repr(field.strip()) for field in header)
        reason = f"no 'token' column in the CSV header (found: {shown})"
        raise InputFileError(name, reason, lineno)
    return _Start("lines", lineno, text, 0, 0)


def _iter_lines(lines: Iterator[bytes], name: str, lineno: int, first: str) -> Iterator[str]:
    """One token per line. The common case stays on bytes: strip, one fullmatch, decode."""
    token = first.strip()
    reason = validate_token(token)
    if reason:
        raise InputFileError(name, reason, lineno)
    yield token

    match = _TOKEN_RE_BYTES.fullmatch
    for raw in lines:
        lineno += 1
        stripped = raw.strip()
        if match(stripped):
            yield stripped.decode("ascii")
        elif stripped:
            # Something unusual: decode properly to find the exact reason (or to accept a
            # token framed by non-ASCII whitespace, which str.strip() trims).
            token = _decode(raw, name, lineno).strip()
            if not token:
                continue
            reason = validate_token(token)
            if reason:
                raise InputFileError(name, reason, lineno)
            yield token


def _decoded_lines(lines: Iterable[bytes], name: str, lineno: int) -> Iterator[str]:
    """Feed the csv module decoded lines while keeping per-line checks and numbers."""
    for raw in lines:
        lineno += 1
        yield _decode(raw, name, lineno)


def _iter_csv(
    lines: Iterator[bytes], name: str, header_lineno: int, column: int, columns: int
) -> Iterator[str]:
    """Rows after the header; only the token column is read, but every row must fit the header.

    A row with a different number of columns than the header is refused, not only a shorter
    one: a stray unquoted comma shifts the cells, and the wrong cell must never become a token.
    """
    reader = csv.reader(
        _decoded_lines(lines, name, header_lineno), strict=True, skipinitialspace=True
    )
    end = header_lineno  # last physical line of the previous row
    seen = False
    try:
        for row in reader:
            lineno = end + 1  # a quoted field may span lines: name the row's first one
            end = header_lineno + reader.line_num
            if len(row) <= 1 and not (row and row[0].strip()):
                continue  # a blank line
            if len(row) != columns:
                reason = f"row has {len(row)} columns; the header has {columns}"
                raise InputFileError(name, reason, lineno)
            token = row[column].strip()
            if not TOKEN_RE.fullmatch(token):
                raise InputFileError(name, validate_token(token) or "invalid token", lineno)
            seen = True
            yield token
    except csv.Error as exc:
        raise InputFileError(name, f"malformed CSV: {exc}", end + 1) from None
    if not seen:
        raise InputFileError(name, NO_TOKENS)
