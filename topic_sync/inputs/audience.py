"""Read and validate a day's audience file, one token at a time.

The audience decides who is subscribed to today's topic, so a bad file must stop the run
before anything changes: every malformed line is refused with its path and line number, and a
file without tokens is refused outright (an empty audience would unsubscribe everyone).

Tokens are streamed, never collected, so a file of tens of millions of lines costs constant
memory. Duplicates are passed through: the database merges and counts them.

Two formats are accepted, told by the content (never by the name): one token per line, or
CSV whose header has a ``token`` column (or the column a caller names). The file may be
standard input (``-``, named ``<stdin>`` in messages) and may be gzip- or zstd-compressed:
the compression is told by the content's first bytes, and line numbers count lines of the
decompressed text. A compressed stream that is corrupt or ends early is refused like a bad
line.

An audience must be complete before it is trusted: its last line must end with a newline
(a cut mid-line is refused), and the manifests its producer wrote (`inputs.manifest`: line
count, checksum) must match what was read.

A PostgreSQL query's rows (one token per row) are validated by the same rules
(`iter_rows`), their row numbers standing for line numbers.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO, Literal, NamedTuple

import zstandard

from topic_sync.errors import InputFileError
from topic_sync.inputs import manifest
from topic_sync.redact import shorten

if TYPE_CHECKING:
    from hashlib import _Hash

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
UNTERMINATED = (
    "the last line does not end with a newline: the audience may have been cut short (a "
    "write that did not finish, a pipe that broke). Have the producer end every line, the "
    "last one too, with a newline, and write the file under another name and rename it "
    "when it is complete"
)

# A first line of lower-case letters and underscores is a column name, not a token (random
# tokens and installation IDs mix cases and digits): "device_id" must not be subscribed.
_COLUMN_NAME = re.compile(r"[a-z_]{1,64}")

AudienceFormat = Literal["lines", "csv"]

# A physical line longer than this is refused, so a file without newlines (corrupt, or not
# an audience at all) cannot make one read swallow it whole.
_MAX_LINE_BYTES = 1 << 20
_READ_BUFFER = 1 << 20

STDIN = "-"
"""The audience path that means standard input."""
STDIN_NAME = "<stdin>"
"""How standard input is named in messages."""

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Compressed input is fed to the zstd decompressor in pieces this small, so what one piece
# expands to stays bounded for any sane file.
_ZSTD_INPUT = 1 << 14
# What a corrupt or truncated compressed stream raises while it is read.
_DECOMPRESSION_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


def for_people(text: str) -> str:
    """A value read from an input that may be a token (a field of a headerless file's first
    line), as messages show it: shortened when it could be a token (token-shaped, longer
    than a column name, not a lower-case name), else whole (at most 80 characters)."""
    if len(text) > 20 and TOKEN_RE.fullmatch(text) and not _COLUMN_NAME.fullmatch(text):
        return shorten(text)
    return text if len(text) <= 80 else text[:79] + "…"


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


def source_name(path: str | os.PathLike[str]) -> str:
    """How an audience path is named in messages: ``<stdin>`` for ``-``."""
    name = os.fspath(path)
    return STDIN_NAME if name == STDIN else name


def iter_audience(
    path: str | os.PathLike[str],
    *,
    token_column: str | None = None,
    stdin: BinaryIO | None = None,
    manifests: Sequence[manifest.Manifest] = (),
) -> Generator[str, None, None]:
    """Yield each valid, trimmed token of an audience file in file order.

    ``path`` ``-`` reads ``stdin`` (the caller's standard input, as bytes). With
    ``token_column`` the file must be CSV with that column (matched like ``token``: case and
    surrounding spaces ignored); without, a ``token`` column is detected. ``manifests`` are
    what the producer said about the file (line count, SHA-256), checked at its end.

    Lazy: the file is opened on the first ``next()`` and an error is raised at the first bad
    line, after the tokens before it were yielded. Callers load inside a transaction and roll
    back on error, so a partial stream never takes effect. What can only be known at the end
    (an unterminated last line, a manifest that does not match, no tokens at all) is raised
    after the last token.
    """
    name = source_name(path)
    digest = hashlib.sha256() if manifest.wants_sha256(list(manifests)) else None
    with _Opened(os.fspath(path), stdin, digest) as (f, compression):
        lines = _physical_lines(f, name, compression)
        try:
            start = _detect(lines, name, token_column)
            if start.text is None:
                end = _End(start.lineno, start.raw, tokens=False)
            elif start.format == "lines":
                end = yield from _iter_lines(lines, name, start)
            else:
                end = yield from _iter_csv(lines, name, start)
        except OSError as exc:
            raise InputFileError(name, f"read error: {exc.strerror or exc}") from exc
    if end.last and not end.last.endswith(b"\n"):
        raise InputFileError(name, UNTERMINATED, end.lines)
    manifest.verify(
        list(manifests), name, lines=end.lines, sha256=digest.hexdigest() if digest else None
    )
    if not end.tokens:
        raise InputFileError(name, NO_TOKENS)


def audience_format(
    path: str | os.PathLike[str],
    *,
    token_column: str | None = None,
    stdin: BinaryIO | None = None,
) -> AudienceFormat:
    """Say how the file would be read ("lines" or "csv"), checking only up to its header.

    For logs and dry runs; a file without a non-blank line counts as "lines".
    """
    name = source_name(path)
    with _Opened(os.fspath(path), stdin) as (f, compression):
        try:
            return _detect(_physical_lines(f, name, compression), name, token_column).format
        except OSError as exc:
            raise InputFileError(name, f"read error: {exc.strerror or exc}") from exc


def ends_with_newline(path: str | os.PathLike[str]) -> bool | None:
    """Whether a plain (uncompressed) file's last byte is a newline, looking only at that
    byte; None when that cannot be told so cheaply (compressed, empty, unreadable)."""
    try:
        with open(path, "rb") as f:
            first = f.read(4)
            if first.startswith(_GZIP_MAGIC) or first == _ZSTD_MAGIC:
                return None
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None
            f.seek(size - 1)
            return f.read(1) == b"\n"
    except OSError:
        return None


def iter_rows(
    rows: Iterable[str | None], name: str, manifests: Sequence[manifest.Manifest] = ()
) -> Generator[str, None, None]:
    """Yield the valid tokens of a query's rows (None for NULL), checked like the lines of
    a file; row numbers count from 1, and a manifest's line count counts rows.

    A NULL or blank row is refused (a row of a query is never a blank line by accident),
    and a result without rows is refused, as an empty file is.
    """
    rowno = 0
    match = TOKEN_RE.fullmatch
    for value in rows:
        rowno += 1
        if value is not None and match(value):
            yield value
            continue
        if value is None:
            raise InputFileError(name, "NULL token", rowno)
        raise InputFileError(name, validate_token(value) or "invalid token", rowno)
    manifest.verify(list(manifests), name, lines=rowno, sha256=None, unit="rows")
    if rowno == 0:
        raise InputFileError(name, NO_TOKENS)


class _End(NamedTuple):
    """What is known once a file was read to its end."""

    lines: int  # physical lines read
    last: bytes  # the last physical line, raw ("" when the file is empty)
    tokens: bool  # whether any token was read


class _Start(NamedTuple):
    """What the first non-blank line told us about the file."""

    format: AudienceFormat
    lineno: int  # physical line of ``text``, or the number of lines read if there is none
    text: str | None  # the first non-blank line, decoded; None if the file has none
    raw: bytes  # that line as read (or the last line read, if there is none)
    column: int = 0  # index of the token column (CSV only)
    columns: int = 0  # number of header columns (CSV only)


class _Opened:
    """An audience opened for reading, decompressed if its first bytes say so."""

    def __init__(self, name: str, stdin: BinaryIO | None, digest: _Hash | None = None) -> None:
        self.name, self.stdin, self.digest = name, stdin, digest
        self.closing: list[BinaryIO] = []

    def __enter__(self) -> tuple[BinaryIO, str | None]:
        if self.name == STDIN:
            if self.stdin is None:
                raise InputFileError(STDIN_NAME, "standard input is not available here")
            raw: BinaryIO = self.stdin
        else:
            raw = _open(self.name, buffered=self.digest is None)
            self.closing.append(raw)
        if self.digest is not None:  # every byte read from the source is hashed on its way
            raw = io.BufferedReader(_Unbuffered(raw, self.digest), buffer_size=_READ_BUFFER)
        try:
            magic = _first_bytes(raw)
            if magic is None:  # neither peek nor seek: buffer it to look ahead
                raw = io.BufferedReader(_Unbuffered(raw), buffer_size=_READ_BUFFER)
                magic = raw.peek(4)[:4]
        except OSError as exc:
            self.__exit__()
            raise InputFileError(
                source_name(self.name), f"read error: {exc.strerror or exc}"
            ) from exc
        if magic.startswith(_GZIP_MAGIC):
            unzipped = gzip.GzipFile(fileobj=raw, mode="rb")
            self.closing.append(unzipped)  # type: ignore[arg-type]
            return unzipped, "gzip"  # type: ignore[return-value]
        if magic == _ZSTD_MAGIC:
            stream = io.BufferedReader(_ZstdStream(raw), buffer_size=_READ_BUFFER)
            return stream, "zstd"
        return raw, None

    def __exit__(self, *_exc: object) -> None:
        for f in reversed(self.closing):
            f.close()


def _open(name: str, *, buffered: bool = True) -> BinaryIO:
    """Open for binary reading, turning the usual failures into messages for people."""
    try:
        return open(name, "rb", buffering=_READ_BUFFER if buffered else 0)
    except FileNotFoundError:
        raise InputFileError(name, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(name, "is a directory, not an audience file") from None
    except PermissionError:
        raise InputFileError(name, "permission denied") from None
    except OSError as exc:
        raise InputFileError(name, f"cannot open: {exc.strerror or exc}") from None


def _first_bytes(f: BinaryIO) -> bytes | None:
    """The first four bytes, leaving the stream where it was; None if it cannot tell."""
    peek = getattr(f, "peek", None)
    if peek is not None:
        first: bytes = peek(4)[:4]
        return first
    if f.seekable():
        position = f.tell()
        first = f.read(4)
        f.seek(position)
        return first
    return None


class _Unbuffered(io.RawIOBase):
    """A binary stream made bufferable (a caller's own stdin has no ``peek``), hashing what
    it reads when given a digest."""

    def __init__(self, source: BinaryIO, digest: _Hash | None = None) -> None:
        self.source, self.digest = source, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        if self.digest is not None:
            self.digest.update(data)
        return len(data)


class _ZstdStream(io.RawIOBase):
    """zstd frames decompressed as a stream that refuses to end inside a frame.

    (zstandard's own stream reader ends quietly at a truncated frame: a cut-off audience
    would pass for a shorter one.)
    """

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.decompressor = zstandard.ZstdDecompressor()
        self.frame = self.decompressor.decompressobj()
        self.fed = False  # the current frame has been given input
        self.out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.out:
            if self.frame.eof:
                rest = self.frame.unused_data
                self.frame, self.fed = self.decompressor.decompressobj(), False
                if rest:
                    self._feed(rest)
                continue
            data = self.source.read(_ZSTD_INPUT)
            if not data:
                if self.fed:
                    raise EOFError("the zstd stream ends inside a frame")
                return 0
            self._feed(data)
        n = min(len(buffer), len(self.out))
        buffer[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def _feed(self, data: bytes) -> None:
        self.fed = True
        self.out = memoryview(self.frame.decompress(data))


def _physical_lines(f: BinaryIO, name: str, compression: str | None) -> Iterator[bytes]:
    """Raw lines split on newline only (so numbers are physical), each with a bounded length."""
    if compression is None:
        return iter(functools.partial(f.readline, _MAX_LINE_BYTES + 1), b"")
    return _decompressed_lines(f, name, compression)


def _decompressed_lines(f: BinaryIO, name: str, compression: str) -> Iterator[bytes]:
    """The same from a decompressor: a corrupt or truncated stream names where it broke."""
    lineno = 0
    while True:
        try:
            raw = f.readline(_MAX_LINE_BYTES + 1)
        except _DECOMPRESSION_ERRORS as exc:
            where = f"after line {lineno}" if lineno else "before the first line"
            raise InputFileError(
                name, f"{compression} data is corrupt or truncated ({where}): {exc}"
            ) from None
        if not raw:
            return
        lineno += 1
        yield raw


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


def _detect(lines: Iterator[bytes], name: str, token_column: str | None = None) -> _Start:
    """Read up to the first non-blank line and decide, from it, between plain lines and CSV.

    A first line with a ``token`` column (or ``token_column``) is a CSV header. With
    ``token_column`` it must be one; without, a first line of several fields is a CSV header
    without the column, and a single field that is a column name is refused, so that a
    header is never subscribed as a token. Anything else is the first token of a plain file,
    whatever the file is called.
    """
    wanted = (token_column or "token").strip().lower()
    lineno = 0
    raw = b""
    for raw in lines:
        lineno += 1
        text = _decode(raw, name, lineno)
        if lineno == 1:
            text = text.removeprefix("\ufeff")  # a byte order mark, as spreadsheets write
        if text.strip():
            break
    else:
        return _Start("lines", lineno, None, raw)

    try:
        header = next(csv.reader([text], strict=True, skipinitialspace=True))
    except (csv.Error, StopIteration) as exc:
        if token_column is not None:
            raise InputFileError(name, f"malformed CSV header: {exc}", lineno) from None
        header = []
    names = [field.strip().lower() for field in header]
    found = names.count(wanted)
    if found > 1:
        raise InputFileError(name, f"more than one {wanted!r} column in the CSV header", lineno)
    if found == 1:
        return _Start("csv", lineno, text, raw, names.index(wanted), len(names))
    if token_column is not None or len(header) > 1:
        shown = ", ".join(repr(for_people(field.strip())) for field in header)
        reason = f"no {wanted!r} column in the CSV header (found: {shown})"
        if token_column is None:
            reason += "; name the tokens' column 'token', or choose it with --token-column"
        raise InputFileError(name, reason, lineno)
    first = text.strip()
    if _COLUMN_NAME.fullmatch(first):
        raise InputFileError(
            name,
            f"the first line {first!r} is a column name, not a token: name the tokens' "
            f"column 'token', or pass --token-column {first}",
            lineno,
        )
    return _Start("lines", lineno, text, raw)


def _iter_lines(lines: Iterator[bytes], name: str, start: _Start) -> Generator[str, None, _End]:
    """One token per line. The common case stays on bytes: strip, one fullmatch, decode."""
    assert start.text is not None
    lineno = start.lineno
    token = start.text.strip()
    reason = validate_token(token)
    if reason:
        raise InputFileError(name, reason, lineno)
    yield token

    match = _TOKEN_RE_BYTES.fullmatch
    raw = start.raw
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
    return _End(lineno, raw, tokens=True)


def _decoded_lines(lines: Iterable[bytes], name: str, lineno: int) -> Iterator[str]:
    """Feed the csv module decoded lines while keeping per-line checks and numbers; a last
    line without its newline is refused before its row is read."""
    for raw in lines:
        lineno += 1
        text = _decode(raw, name, lineno)
        if not raw.endswith(b"\n"):
            raise InputFileError(name, UNTERMINATED, lineno)
        yield text


def _iter_csv(lines: Iterator[bytes], name: str, start: _Start) -> Generator[str, None, _End]:
    """Rows after the header; only the token column is read, but every row must fit the header.

    A row with a different number of columns than the header is refused, not only a shorter
    one: a stray unquoted comma shifts the cells, and the wrong cell must never become a token.
    """
    header_lineno, column, columns = start.lineno, start.column, start.columns
    if not start.raw.endswith(b"\n"):
        raise InputFileError(name, UNTERMINATED, header_lineno)
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
    # Every line ended with a newline (checked as it was read).
    return _End(header_lineno + reader.line_num, b"\n", tokens=seen)
