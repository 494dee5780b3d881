"""Audience files: what is accepted, and that every refusal names the file and the line.

A wrong audience changes who receives a message, so the refusals matter as much as the happy
paths: each bad case checks the exact physical line number a person would open.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import BinaryIO

import pytest

from topic_sync.errors import BadInput, ExitCode, InputFileError
from topic_sync.inputs import audience
from topic_sync.inputs.audience import (
    MAX_TOKEN_LENGTH,
    NO_TOKENS,
    TOKEN_RE,
    audience_format,
    iter_audience,
    validate_token,
)

# Shaped like real FCM registration tokens and installation IDs.
T1 = "dGhpcyBpcyBub3QgYSByZWFs:APA91bH-k9_xTqz0aVb.example1"
T2 = "cFid_0123456789abcdef-XY"
T3 = "eXAMPLE:APA91bG" + "x" * 140


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read(path: Path) -> list[str]:
    return list(iter_audience(path))


def refusal(path: Path) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        read(path)
    return info.value


def assert_refused(path: Path, line: int | None, reason_part: str) -> InputFileError:
    err = refusal(path)
    assert err.path == str(path)
    assert err.line == line
    assert reason_part in err.reason
    where = f"{path}:{line}" if line is not None else str(path)
    assert err.message.startswith(f"{where}: ")
    return err


# --- validate_token ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", [T1, T2, T3, "a", "A.b-c_d:e", "x" * MAX_TOKEN_LENGTH, "..a", "-_:.9"]
)
def test_validate_token_accepts_plausible_tokens(token: str) -> None:
    assert validate_token(token) is None
    assert TOKEN_RE.fullmatch(token)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "empty token"),
        ("abc def", "whitespace inside token"),
        ("abc\tdef", "whitespace inside token"),
        (" abc", "whitespace around token"),
        ("abc#def", "character '#' not allowed in a token (allowed: A-Z a-z 0-9 _ : . -)"),
        ("abc,def", "character ',' not allowed"),
        ("# a b", "character '#' not allowed"),
        ("ab c#", "whitespace inside token"),
        ("tok\u00e9n", "character 'é' not allowed"),
        ("tok\u200ben", "character '\\u200b' not allowed"),
        ("x" * 5000, "token is 5000 characters; at most 4096"),
        ("x" * (MAX_TOKEN_LENGTH + 1), "token is 4097 characters; at most 4096"),
        # A dot segment: an HTTP stack would rewrite /registrations/../ in the URL path.
        (".", "at least one letter or digit"),
        ("..", "at least one letter or digit"),
        ("-_:.", "at least one letter or digit"),
    ],
)
def test_validate_token_names_the_broken_rule(token: str, reason: str) -> None:
    got = validate_token(token)
    assert got is not None
    assert reason in got


# --- plain files: happy paths -----------------------------------------------------------


def test_plain_file_yields_trimmed_tokens_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"\n  {T1}  \n\t{T2}\n\n   \n{T3}\t\n")
    assert read(path) == [T1, T2, T3]
    assert audience_format(path) == "lines"


def test_plain_file_with_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\r\n\r\n{T2}\r\n{T3}\r\n")
    assert read(path) == [T1, T2, T3]


@pytest.mark.parametrize(
    ("name", "data", "line"),
    [
        ("audience.txt", f"{T1}\n{T2}\n{T3[:40]}", 3),  # cut inside the third token
        ("audience.txt", f"{T1}", 1),
        ("audience.txt", f"{T1}\r\n{T2}\r", 2),
        ("audience.txt", f"{T1}\n{T2}\n  ", 3),
        ("audience.csv", f"id,token\n1,{T1}\n2,{T2}", 3),
        ("audience.csv", "id,token", 1),
    ],
)
def test_an_unterminated_last_line_is_refused_as_a_cut(
    tmp_path: Path, name: str, data: str, line: int
) -> None:
    # A producer cut short mid-line must not have its partial last token subscribed.
    err = assert_refused(write(tmp_path, name, data), line, "does not end with a newline")
    assert "cut short" in err.reason and "rename" in err.reason


@pytest.mark.parametrize("kind", ["plain", "gzip", "zstd"])
def test_an_unterminated_last_line_is_refused_on_stdin_and_compressed(kind: str) -> None:
    data = f"{T1}\n{T2}\n{T3[:30]}".encode()
    if kind != "plain":
        data = COMPRESSORS[kind](data)
    with pytest.raises(InputFileError) as info:
        list(iter_audience("-", stdin=io.BytesIO(data)))
    assert info.value.message.startswith("<stdin>:3: the last line does not end with a newline")


def test_duplicates_are_preserved(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n{T2}\n{T1}\n{T1}\n")
    assert read(path) == [T1, T2, T1, T1]


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n")
    assert list(iter_audience(str(path))) == [T1]


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", b"\xef\xbb\xbf" + f"{T1}\n{T2}\n".encode())
    assert read(path) == [T1, T2]


def test_non_ascii_whitespace_around_a_token_is_trimmed(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n\u00a0{T2}\u3000\n")
    assert read(path) == [T1, T2]


def test_token_of_exactly_max_length_is_accepted(tmp_path: Path) -> None:
    token = "a" * MAX_TOKEN_LENGTH
    path = write(tmp_path, "audience.txt", f"{T1}\n{token}\n")
    assert read(path) == [T1, token]


# --- plain files: refusals --------------------------------------------------------------


def test_token_one_over_max_length_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n\n{'a' * (MAX_TOKEN_LENGTH + 1)}\n")
    assert_refused(path, 3, "token is 4097 characters; at most 4096")


def test_disallowed_character_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n{T2}\n\n# a comment\n{T3}\n")
    assert_refused(path, 4, "character '#' not allowed in a token (allowed: A-Z a-z 0-9 _ : . -)")


def test_disallowed_character_on_the_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"\n\n{T1}!\n")
    assert_refused(path, 3, "character '!' not allowed")


def test_whitespace_inside_a_token_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\r\n{T2} {T3}\r\n")
    assert_refused(path, 2, "whitespace inside token")


def test_long_token_reports_its_length(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n{'b' * 5000}\n")
    assert_refused(path, 2, "token is 5000 characters; at most 4096")


def test_non_utf8_bytes_are_refused_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n{T2}\n".encode() + b"abc\xff\xfedef\n")
    err = assert_refused(path, 3, "not valid UTF-8")
    assert "0xff" in err.reason
    assert "column 4" in err.reason


def test_valid_utf8_that_is_not_a_token_is_refused_as_a_character(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\ntok\u00e9n\n")
    assert_refused(path, 2, "character 'é' not allowed")


def test_nul_byte_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n".encode() + b"ab\x00cd\n")
    assert_refused(path, 2, "NUL byte")


def test_utf16_file_is_refused_on_line_one(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n{T2}\n".encode("utf-16"))
    assert_refused(path, 1, "NUL byte")


def test_endless_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n".encode() + b"a" * (3 << 20))
    assert_refused(path, 2, "line is longer than")


# --- CSV: happy paths -------------------------------------------------------------------


def test_csv_reads_only_the_token_column(tmp_path: Path) -> None:
    data = f"user_id,token,score\n1,{T1},0.9\n2,{T2},0.5\n"
    path = write(tmp_path, "audience.csv", data)
    assert read(path) == [T1, T2]
    assert audience_format(path) == "csv"


def test_csv_header_is_matched_case_insensitively_after_trimming(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"score, Token ,user\n0.9,{T1},1\n")
    assert read(path) == [T1]


def test_csv_token_column_may_come_last(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"a,b,TOKEN\nx,y,{T1}\nx,y,{T2}\n")
    assert read(path) == [T1, T2]


def test_csv_quoted_fields_crlf_blank_lines_and_whitespace(tmp_path: Path) -> None:
    data = (
        "\r\n"
        '"user","token","note"\r\n'
        f'7,"{T1}","says ""hi"", twice"\r\n'
        "\r\n"
        "   \r\n"
        f'8, "  {T2} ","multi\r\nline note"\r\n'
        f"9,  {T3}  ,plain\r\n"
    )
    path = write(tmp_path, "audience.csv", data)
    assert read(path) == [T1, T2, T3]


def test_csv_is_detected_without_the_csv_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"user,token\n1,{T1}\n2,{T2}\n")
    assert audience_format(path) == "csv"
    assert read(path) == [T1, T2]


def test_plain_file_starting_with_token_is_a_one_column_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "audience", f"token\n{T1}\n\n{T2}\n")
    assert audience_format(path) == "csv"
    assert read(path) == [T1, T2]


def test_csv_duplicates_are_preserved(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"token,n\n{T1},1\n{T1},2\n")
    assert read(path) == [T1, T1]


# --- CSV: refusals ----------------------------------------------------------------------


def test_csv_suffix_without_token_column_is_refused_on_line_1(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"user,registration\n1,{T1}\n")
    err = assert_refused(path, 1, "no 'token' column")
    assert "'registration'" in err.reason


def test_a_headerless_file_named_csv_is_read_as_lines(tmp_path: Path) -> None:
    # The name says CSV, the content says one token per line: the content decides.
    path = write(tmp_path, "audience.CSV", f"{T1}\n{T2}\n")
    assert audience_format(path) == "lines"
    assert read(path) == [T1, T2]


def test_a_header_without_token_column_never_shows_a_whole_token(tmp_path: Path) -> None:
    # A headerless two-column file: its first line's fields are a token and a score.
    path = write(tmp_path, "audience.csv", f"{T3},0.9\n{T1},0.5\n")
    err = assert_refused(path, 1, "no 'token' column in the CSV header")
    assert T3 not in err.message
    assert f"'{audience.shorten(T3)}', '0.9'" in err.reason
    assert "--token-column" in err.reason


@pytest.mark.parametrize("header", ["device_id", "tokens", "fcm_token"])
def test_a_single_column_name_is_never_read_as_a_token(tmp_path: Path, header: str) -> None:
    err = assert_refused(write(tmp_path, "audience.txt", f"{header}\n{T1}\n"), 1, header)
    assert "is a column name, not a token" in err.reason
    assert f"--token-column {header}" in err.reason


def test_for_people_shortens_what_could_be_a_token() -> None:
    assert audience.for_people(T1) == audience.shorten(T1)
    assert audience.for_people(T2) == audience.shorten(T2)  # an installation ID
    for name in ("user_id", "registration_token", "Token ID", "score"):
        assert audience.for_people(name) == name


def test_csv_with_two_token_columns_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"token,Token\n{T1},{T2}\n")
    assert_refused(path, 1, "more than one 'token' column")


def test_csv_empty_token_cell_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"user,token\n1,{T1}\n2,  \n")
    assert_refused(path, 3, "empty token")


def test_csv_empty_quoted_token_cell_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f'user,token\r\n1,{T1}\r\n2,""\r\n')
    assert_refused(path, 3, "empty token")


def test_csv_row_with_fewer_columns_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"user,token,score\n1,{T1},1\n\n2,{T2}\n")
    assert_refused(path, 4, "row has 2 columns; the header has 3")


def test_csv_row_with_more_columns_is_refused(tmp_path: Path) -> None:
    # An unquoted comma in an earlier cell would shift the token column.
    path = write(tmp_path, "audience.csv", f"name,token\nAnn,{T1}\nSmith, Bob,{T2}\n")
    assert_refused(path, 3, "row has 3 columns; the header has 2")


def test_csv_bad_token_names_the_first_line_of_a_multiline_row(tmp_path: Path) -> None:
    data = f'note,token\n"one\ntwo",{T1}\n"three\nfour",bad#token\n'
    path = write(tmp_path, "audience.csv", data)
    assert_refused(path, 4, "character '#' not allowed")


def test_csv_token_with_whitespace_inside_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f'token\n{T1}\n"{T2} {T3}"\n')
    assert_refused(path, 3, "whitespace inside token")


def test_csv_too_long_token_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"token,x\n{'a' * 4097},1\n")
    assert_refused(path, 2, "token is 4097 characters; at most 4096")


def test_csv_unterminated_quote_names_the_row_start(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f'token,note\n{T1},ok\n{T2},"open\nmore\n')
    assert_refused(path, 3, "malformed CSV")


def test_csv_non_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"token,name\n{T1},a\n".encode() + b"x,caf\xe9\n")
    assert_refused(path, 3, "not valid UTF-8")


def test_csv_nul_byte_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"token\n{T1}\n".encode() + b"\x00\n")
    assert_refused(path, 3, "NUL byte")


# --- no tokens at all ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("audience.txt", ""),
        ("audience.txt", "\n  \n\t\r\n"),
        ("audience.csv", ""),
        ("audience.csv", "user,token,score\n"),
        ("audience.csv", "user,token,score\r\n\r\n  \r\n"),
        ("audience.txt", "token\n"),
    ],
)
def test_file_without_tokens_is_refused(tmp_path: Path, name: str, data: str) -> None:
    path = write(tmp_path, name, data)
    err = assert_refused(path, None, NO_TOKENS)
    assert err.reason == "no tokens: an empty audience would unsubscribe everyone"


# --- the file itself ------------------------------------------------------------------------


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.txt", None, "no such file")
    with pytest.raises(InputFileError):
        audience_format(tmp_path / "nope.txt")


def test_directory_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path, None, "is a directory")


def test_permission_error_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, who can read anything: fake the refusal instead of chmod.
    def denied(*args: object, **kwargs: object) -> BinaryIO:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audience, "open", denied, raising=False)
    assert_refused(tmp_path / "audience.txt", None, "permission denied")


def test_read_error_mid_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FailingFile(io.BytesIO):
        def readline(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise OSError(errno.EIO, "Input/output error")
            return super().readline(size)

    monkeypatch.setattr(
        audience, "open", lambda *a, **k: FailingFile(f"{T1}\n{T2}\n".encode()), raising=False
    )
    tokens = iter_audience(tmp_path / "audience.txt")
    assert next(tokens) == T1
    with pytest.raises(InputFileError) as info:
        next(tokens)
    assert "read error: Input/output error" in info.value.reason


def test_refusal_is_bad_input_for_the_cli(tmp_path: Path) -> None:
    err = refusal(write(tmp_path, "audience.txt", ""))
    assert isinstance(err, BadInput)
    assert err.exit_code == ExitCode.BAD_INPUT


# --- streaming ----------------------------------------------------------------------------


def test_iter_audience_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.txt", f"{T1}\n{T2}\nnot a token\n{T3}\n")
    tokens = iter_audience(path)
    assert next(tokens) == T1
    assert next(tokens) == T2
    with pytest.raises(InputFileError) as info:
        next(tokens)
    assert info.value.line == 3


def test_iter_audience_is_lazy_for_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "audience.csv", f"token\n{T1}\n{T2}\nbad token\n")
    tokens = iter_audience(path)
    assert [next(tokens), next(tokens)] == [T1, T2]
    with pytest.raises(InputFileError) as info:
        next(tokens)
    assert info.value.line == 4


def test_nothing_is_read_before_iteration(tmp_path: Path) -> None:
    # The caller decides when the stream starts (inside its transaction).
    tokens = iter_audience(tmp_path / "written-later.txt")
    write(tmp_path, "written-later.txt", f"{T1}\n")
    assert list(tokens) == [T1]


def test_large_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "audience.txt"
    with path.open("w") as f:
        for i in range(200_000):
            f.write(f"{T2}{i}\n")
    count, last = 0, ""
    for token in iter_audience(path):
        count += 1
        last = token
    assert count == 200_000
    assert last == f"{T2}199999"


# --- sources pipelines produce: stdin, gzip, zstd, a chosen column, query rows ---------------


def gzipped(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def zstded(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {"gzip": gzipped, "zstd": zstded}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_file_is_read_by_its_content_not_its_name(tmp_path: Path, kind: str) -> None:
    # Named *.txt: only the magic bytes say it is compressed.
    path = write(tmp_path, "audience.txt", COMPRESSORS[kind](f"{T1}\n\n{T2}\n{T1}\n".encode()))
    assert read(path) == [T1, T2, T1]


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_bad_line_names_the_decompressed_line(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, "audience.bin", COMPRESSORS[kind](f"{T1}\n{T2}\nnot a token\n".encode()))
    assert_refused(path, 3, "whitespace inside token")


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_csv_keeps_its_name_rule(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path, "a.csv.gz", COMPRESSORS[kind](f"id,token\n1,{T1}\n2,{T2}\n".encode()))
    assert read(path) == [T1, T2]


def test_gzip_multi_member_is_read_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", gzipped(f"{T1}\n".encode()) + gzipped(f"{T2}\n".encode()))
    assert read(path) == [T1, T2]


def test_zstd_several_frames_are_read_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", zstded(f"{T1}\n".encode()) + zstded(f"{T2}\n".encode()))
    assert read(path) == [T1, T2]


def _big(n: int) -> bytes:
    return "".join(f"{T2}{i:07d}\n" for i in range(n)).encode()


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_truncated_compressed_file_is_refused(tmp_path: Path, kind: str) -> None:
    # A cut-off download must never pass for a shorter audience.
    whole = COMPRESSORS[kind](_big(200_000))
    path = write(tmp_path, "audience.txt", whole[: len(whole) // 2])
    err = refusal(path)
    assert err.path == str(path)
    assert f"{kind} data is corrupt or truncated" in err.reason
    assert err.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_corrupt_compressed_file_is_refused(tmp_path: Path, kind: str) -> None:
    whole = bytearray(COMPRESSORS[kind](_big(1000)))
    for i in range(12, len(whole) - 8):
        whole[i] ^= 0x5A
    err = refusal(write(tmp_path, "audience.txt", bytes(whole)))
    assert f"{kind} data is corrupt or truncated" in err.reason


def test_stdin_is_read_and_named(tmp_path: Path) -> None:
    assert list(iter_audience("-", stdin=io.BytesIO(f"{T1}\n{T2}\n".encode()))) == [T1, T2]
    with pytest.raises(InputFileError) as info:
        list(iter_audience("-", stdin=io.BytesIO(f"{T1}\nbad token\n".encode())))
    assert info.value.message.startswith("<stdin>:2: ")


def test_compressed_stdin_without_peek_or_seek(tmp_path: Path) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            chunk = self.data.read(min(len(buffer), 7))  # a pipe gives little at a time
            buffer[: len(chunk)] = chunk
            return len(chunk)

    data = zstded(f"{T1}\n{T2}\n".encode())
    assert list(iter_audience("-", stdin=Pipe(data))) == [T1, T2]  # type: ignore[arg-type]


def test_stdin_without_a_stream_is_refused() -> None:
    with pytest.raises(InputFileError) as info:
        list(iter_audience("-"))
    assert info.value.path == "<stdin>"


def test_token_column_chooses_the_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", f"token,fcm_id\nnot-this,{T1}\nnor-this,{T2}\n")
    assert list(iter_audience(path, token_column="FCM_ID")) == [T1, T2]


def test_token_column_missing_names_the_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", f"\nid,token\n1,{T1}\n")
    with pytest.raises(InputFileError) as info:
        list(iter_audience(path, token_column="fcm_id"))
    assert info.value.line == 2
    assert "no 'fcm_id' column in the CSV header (found: 'id', 'token')" in info.value.reason
    assert info.value.message.startswith(f"{path}:2: ")


def test_query_rows_are_validated_like_lines() -> None:
    assert list(audience.iter_rows([T1, T2], "query")) == [T1, T2]
    for bad, reason in (
        (None, "NULL token"),
        ("a b", "whitespace inside token"),
        ("", "empty token"),
    ):
        with pytest.raises(InputFileError) as info:
            list(audience.iter_rows([T1, bad], "query"))
        assert info.value.message == f"query:2: {reason}"
    with pytest.raises(InputFileError) as info:
        list(audience.iter_rows([], "query"))
    assert info.value.reason == NO_TOKENS
