"""What a producer says about the audience it finished: its line count, checksum and date.

A cut audience can look whole: a pipe that ends at a line boundary, a gzip stream cut
between members, a zstd stream cut between frames. Nothing in such bytes tells; only the
producer knows what it wrote. A manifest lets it say so, and the run checks the audience
against it while loading, before anything changes.

A manifest is a small UTF-8 text file. Each line is blank, a ``#`` comment, ``key=value``
(``lines``: the number of lines, as ``wc -l`` counts them in the decompressed text;
``sha256``: the SHA-256 of the audience's bytes as stored, compressed or not; ``date``: the
day it is for, YYYY-MM-DD), or a line as ``sha256sum`` writes it (``<64 hex>  <file name>``).

Where manifests come from (`manifests_for`): the ``--wait-for`` marker, when it is a file
other than the audience and its content is a manifest (an empty ``_SUCCESS`` is only a
marker); and ``<audience>.sha256`` beside an audience file, when there is one.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from topic_sync.errors import InputFileError

SIDECAR_SUFFIX = ".sha256"
"""A file named like the audience plus this is read as its manifest."""

_MAX_BYTES = 64 * 1024  # a manifest is a few lines; anything larger is not one
_KEY_VALUE = re.compile(r"\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*")
_SHA256SUM = re.compile(r"([0-9A-Fa-f]{64}) [ *](.+)")
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
KEYS = ("lines", "sha256", "date")


@dataclass(frozen=True)
class Manifest:
    """What one manifest file expects of the audience (None: it does not say)."""

    source: str  # the manifest's path, for messages
    lines: int | None = None
    sha256: str | None = None  # lower-case hex
    day: dt.date | None = None
    file_name: str | None = None  # the name a sha256sum line gives

    @property
    def says_anything(self) -> bool:
        return any(v is not None for v in (self.lines, self.sha256, self.day))

    def describe(self) -> str:
        """What it says, for people: "lines 30, sha256 9f86d081…, date 2026-11-22"."""
        said = (
            ("lines", self.lines),
            ("sha256", f"{self.sha256[:16]}…" if self.sha256 else None),
            ("date", self.day),
        )
        return ", ".join(f"{key} {value}" for key, value in said if value is not None)


def parse(text: str, source: str) -> Manifest | None:
    """The manifest in `text`, or None when no line of it is one (e.g. JSON in _SUCCESS).

    A text that holds manifest lines must hold nothing else: a line that is neither, an
    unknown key, a bad value or a key given twice is an input error naming the line.
    """
    found: dict[str, object] = {}
    strangers: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        summed = _SHA256SUM.fullmatch(stripped)
        if summed:
            _put(found, "sha256", summed.group(1).lower(), source, lineno)
            found["file_name"] = summed.group(2).strip()
            continue
        pair = _KEY_VALUE.fullmatch(stripped)
        if pair is None:
            strangers.append(lineno)
            continue
        key, value = pair.group(1).lower(), pair.group(2)
        if key not in KEYS:
            raise InputFileError(
                source, f"unknown manifest key {key!r} (known: {', '.join(KEYS)})", lineno
            )
        _put(found, key, _value(key, value, source, lineno), source, lineno)
    if not found:
        return None
    if strangers:
        raise InputFileError(
            source, "neither key=value nor a sha256sum line in a manifest", strangers[0]
        )
    return Manifest(
        source=source,
        lines=found.get("lines"),  # type: ignore[arg-type]
        sha256=found.get("sha256"),  # type: ignore[arg-type]
        day=found.get("date"),  # type: ignore[arg-type]
        file_name=found.get("file_name"),  # type: ignore[arg-type]
    )


def _put(found: dict[str, object], key: str, value: object, source: str, lineno: int) -> None:
    if key in found:
        raise InputFileError(source, f"the manifest gives {key} twice", lineno)
    found[key] = value


def _value(key: str, value: str, source: str, lineno: int) -> object:
    if key == "lines":
        if not value.isdigit():
            raise InputFileError(source, f"lines={value!r}: expected a whole number", lineno)
        return int(value)
    if key == "sha256":
        if not _HEX64.fullmatch(value):
            raise InputFileError(source, "sha256: expected 64 hexadecimal digits", lineno)
        return value.lower()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputFileError(source, f"date={value!r}: expected YYYY-MM-DD", lineno) from None


def read(path: Path, *, required: bool) -> Manifest | None:
    """The manifest in a file. Not required (a marker): a file without manifest lines is
    None. Required (a sidecar named for the purpose): it must be one."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputFileError(source, "no such file (the audience's manifest)") from None
    except OSError as exc:
        raise InputFileError(source, f"cannot read the manifest: {exc.strerror or exc}") from None
    if len(data) > _MAX_BYTES:
        if required:
            raise InputFileError(source, f"larger than {_MAX_BYTES} bytes: not a manifest")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if required:
            raise InputFileError(source, "not UTF-8 text: not a manifest") from None
        return None
    found = parse(text, source)
    if found is None and required:
        raise InputFileError(source, "no manifest line in it (lines=N, sha256=HEX, date=DAY)")
    return found


def sidecar(audience: Path) -> Path:
    return audience.with_name(audience.name + SIDECAR_SUFFIX)


def manifests_for(
    audience: Path | None, marker: Path | None, *, marker_is_audience: bool
) -> list[Manifest]:
    """Every manifest that speaks for this audience: the --wait-for marker's content and the
    audience's `.sha256` sidecar. `audience` None (a query) or ``-`` (stdin) has no sidecar."""
    found: list[Manifest] = []
    if marker is not None and not marker_is_audience and marker.is_file():
        from_marker = read(marker, required=False)
        if from_marker is not None:
            found.append(from_marker)
    if audience is not None and os.fspath(audience) != "-":
        side = sidecar(audience)
        already = marker is not None and os.path.realpath(marker) == os.path.realpath(side)
        if not already and side.is_file():
            found.append(read(side, required=True))  # type: ignore[arg-type]
    return [m for m in found if m.says_anything]


def check_names(manifests: list[Manifest], audience: Path | None) -> list[Manifest]:
    """Refuse a sha256sum line that names another file than the audience (another day's
    checksum?); standard input may be named anything. Returns the manifests."""
    if audience is None or os.fspath(audience) == "-":
        return manifests
    for m in manifests:
        if m.file_name is not None and os.path.basename(m.file_name) != audience.name:
            raise InputFileError(
                m.source,
                f"its checksum is for {m.file_name!r}, not the audience {audience.name!r} "
                "(another day's manifest?)",
            )
    return manifests


def check_day(manifests: list[Manifest], day: dt.date) -> None:
    """Refuse an audience whose manifest says it is for another day."""
    for m in manifests:
        if m.day is not None and m.day != day:
            raise InputFileError(
                m.source,
                f"the audience is for {m.day}, but this run is for {day}: the wrong day's file",
            )


def verify(
    manifests: list[Manifest],
    name: str,
    *,
    lines: int,
    sha256: str | None,
    unit: str = "lines",
) -> None:
    """Refuse an audience that is not what its manifests say (read to its end); `lines`
    counts `unit` (a query's rows stand for lines)."""
    for m in manifests:
        if m.lines is not None and m.lines != lines:
            raise InputFileError(
                name,
                f"{lines} {unit}, but its manifest {m.source} says {m.lines}: the audience is "
                "incomplete, or not what the manifest describes",
            )
        if m.sha256 is not None and m.sha256 != sha256:
            raise InputFileError(
                name,
                f"its SHA-256 is {(sha256 or '')[:16]}…, but its manifest {m.source} says "
                f"{m.sha256[:16]}…: the audience is not the file its producer finished "
                "(cut short, still being written, or replaced)",
            )


def wants_sha256(manifests: list[Manifest]) -> bool:
    return any(m.sha256 is not None for m in manifests)
