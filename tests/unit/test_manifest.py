"""Manifests: what a producer says about the audience it finished, and the audience checked
against it. A cut that leaves whole lines (a gzip stream cut between members, a zstd stream
cut between frames, a pipe ending at a line) looks like a smaller audience: only the
producer's line count or checksum tells."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
from pathlib import Path

import pytest
import zstandard

from topic_sync.errors import InputFileError
from topic_sync.inputs import manifest
from topic_sync.inputs.audience import iter_audience

TOKENS = [f"cFid{n:04d}_abcdefghijKLMNOPQ:APA91b-{n}" for n in range(30)]
DAY = dt.date(2026, 11, 22)


def text_of(tokens: list[str]) -> bytes:
    return "".join(f"{t}\n" for t in tokens).encode()


def manifest_of(data: bytes, lines: int | None = None, source: str = "m") -> manifest.Manifest:
    return manifest.Manifest(source, lines=lines, sha256=hashlib.sha256(data).hexdigest())


# --- the format -----------------------------------------------------------------------------


def test_key_value_lines_comments_and_case() -> None:
    digest = "AB" * 32
    found = manifest.parse(
        f"# by the recommender\n\nlines = 30\nSHA256={digest}\ndate=2026-11-22\n", "m"
    )
    assert found == manifest.Manifest("m", lines=30, sha256=digest.lower(), day=DAY)


def test_a_sha256sum_line_names_its_file() -> None:
    digest = "0f" * 32
    found = manifest.parse(f"{digest}  /data/reco/2026-11-22.csv\n", "m")
    assert found == manifest.Manifest("m", sha256=digest, file_name="/data/reco/2026-11-22.csv")
    assert manifest.parse(f"{digest} *a.csv.gz\n", "m").file_name == "a.csv.gz"  # binary mode


@pytest.mark.parametrize("text", ["", "\n\n", '{"name": "job", "success": true}\n', "done\n"])
def test_a_marker_without_manifest_lines_is_only_a_marker(text: str) -> None:
    assert manifest.parse(text, "m") is None


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("lines=30\nrows=30\n", 2, "unknown manifest key 'rows'"),
        ("lines=thirty\n", 1, "expected a whole number"),
        ("lines=-1\n", 1, "expected a whole number"),
        ("date=22/11/2026\n", 1, "expected YYYY-MM-DD"),
        ("sha256=abc\n", 1, "64 hexadecimal digits"),
        ("lines=30\nlines=31\n", 2, "gives lines twice"),
        ("lines=30\nall good\n", 2, "neither key=value nor a sha256sum line"),
    ],
)
def test_a_broken_manifest_names_its_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(InputFileError) as info:
        manifest.parse(text, "marker")
    assert info.value.line == line
    assert reason in info.value.reason


# --- where manifests come from ----------------------------------------------------------------


def test_the_marker_and_the_sidecar_both_speak(tmp_path: Path) -> None:
    audience = tmp_path / "2026-11-22.csv"
    audience.write_bytes(text_of(TOKENS))
    marker = tmp_path / "_SUCCESS"
    marker.write_text("lines=30\n")
    manifest.sidecar(audience).write_text(f"{'ab' * 32}  2026-11-22.csv\n")
    found = manifest.manifests_for(audience, marker, marker_is_audience=False)
    assert [(m.source, m.lines, m.sha256) for m in found] == [
        (str(marker), 30, None),
        (str(tmp_path / "2026-11-22.csv.sha256"), None, "ab" * 32),
    ]


def test_an_empty_marker_and_no_sidecar_say_nothing(tmp_path: Path) -> None:
    audience = tmp_path / "a.txt"
    marker = tmp_path / "_SUCCESS"
    marker.touch()
    assert manifest.manifests_for(audience, marker, marker_is_audience=False) == []
    assert manifest.manifests_for(audience, audience, marker_is_audience=True) == []
    assert manifest.manifests_for(Path("-"), marker, marker_is_audience=False) == []


def test_waiting_for_the_sidecar_reads_it_once(tmp_path: Path) -> None:
    audience = tmp_path / "a.txt"
    side = manifest.sidecar(audience)
    side.write_text("lines=3\n")
    assert len(manifest.manifests_for(audience, side, marker_is_audience=False)) == 1


def test_a_sidecar_must_be_a_manifest(tmp_path: Path) -> None:
    audience = tmp_path / "a.txt"
    manifest.sidecar(audience).write_text("checked by Bob\n")
    with pytest.raises(InputFileError, match="no manifest line"):
        manifest.manifests_for(audience, None, marker_is_audience=False)


def test_a_checksum_of_another_file_is_refused(tmp_path: Path) -> None:
    manifests = [manifest.Manifest("m", sha256="ab" * 32, file_name="/data/2026-11-21.csv")]
    with pytest.raises(InputFileError, match="another day's manifest"):
        manifest.check_names(manifests, tmp_path / "2026-11-22.csv")
    assert manifest.check_names(manifests, tmp_path / "2026-11-21.csv") == manifests
    assert manifest.check_names(manifests, Path("-")) == manifests


def test_a_manifest_for_another_day_is_refused() -> None:
    manifest.check_day([manifest.Manifest("m", day=DAY)], DAY)
    with pytest.raises(InputFileError, match="is for 2026-11-21, but this run is for 2026-11-22"):
        manifest.check_day([manifest.Manifest("m", day=DAY - dt.timedelta(days=1))], DAY)


# --- the audience checked against them ----------------------------------------------------------


def read(
    path: Path | str, manifests: list[manifest.Manifest], stdin: bytes | None = None
) -> list[str]:
    source = io.BytesIO(stdin) if stdin is not None else None
    return list(iter_audience(path, manifests=manifests, stdin=source))


def test_a_matching_manifest_passes(tmp_path: Path) -> None:
    data = text_of(TOKENS)
    path = tmp_path / "a.txt"
    path.write_bytes(data)
    assert read(path, [manifest_of(data, lines=30)]) == TOKENS
    assert read("-", [manifest_of(data, lines=30)], stdin=data) == TOKENS


def test_the_checksum_is_of_the_bytes_as_stored(tmp_path: Path) -> None:
    stored = gzip.compress(text_of(TOKENS))
    path = tmp_path / "a.csv.gz"
    path.write_bytes(stored)
    assert read(path, [manifest_of(stored)]) == TOKENS  # what `sha256sum a.csv.gz` says
    with pytest.raises(InputFileError, match="its SHA-256 is"):
        read(path, [manifest_of(text_of(TOKENS))])


def test_a_gzip_stream_cut_between_members_is_caught_by_its_line_count(tmp_path: Path) -> None:
    members = [gzip.compress(text_of(TOKENS[i : i + 10])) for i in range(0, 30, 10)]
    path = tmp_path / "a.txt"
    path.write_bytes(b"".join(members[:2]))  # the bytes say nothing: two whole members
    assert len(read(path, [])) == 20
    with pytest.raises(InputFileError) as info:
        read(path, [manifest.Manifest("_SUCCESS", lines=30)])
    assert info.value.reason.startswith("20 lines, but its manifest _SUCCESS says 30")
    assert "incomplete" in info.value.reason


def test_a_zstd_stream_cut_between_frames_is_caught_by_its_checksum(tmp_path: Path) -> None:
    frames = [zstandard.ZstdCompressor().compress(text_of(TOKENS[i : i + 10])) for i in (0, 10)]
    whole = b"".join(frames)
    with pytest.raises(InputFileError, match="not the file its producer finished"):
        read("-", [manifest_of(whole)], stdin=frames[0])
    assert read("-", [manifest_of(whole, lines=20)], stdin=whole) == TOKENS[:20]


def test_a_plain_cut_at_a_line_boundary_is_caught(tmp_path: Path) -> None:
    data = text_of(TOKENS)
    path = tmp_path / "a.csv"
    path.write_bytes(b"token\n" + data[: data.index(b"\n", 100) + 1])
    with pytest.raises(InputFileError, match="lines, but its manifest"):
        read(path, [manifest.Manifest("m", lines=31)])


def test_a_query_is_held_to_the_markers_row_count(tmp_path: Path) -> None:
    from tests.support import run_options
    from topic_sync.engine.run import audience_manifests
    from topic_sync.inputs.audience import iter_rows

    marker = tmp_path / "_SUCCESS"
    marker.write_text("lines=3\n")
    options = run_options(
        day=DAY,
        prefix="p",
        pool_size=1,
        audience_path=None,
        audience_query="reco",
        message_path=tmp_path / "m.json",
        wait_for=marker,
    )
    manifests = audience_manifests(options)
    assert list(iter_rows(TOKENS[:3], "query", manifests)) == TOKENS[:3]
    with pytest.raises(InputFileError, match="^query: 2 rows, but its manifest"):
        list(iter_rows(TOKENS[:2], "query", manifests))
    marker.write_text(f"sha256={'ab' * 32}\n")
    with pytest.raises(InputFileError, match="a checksum cannot be checked on a query's rows"):
        audience_manifests(options)
