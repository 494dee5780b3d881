"""simulate's inputs: audience files dated by their names, from files, folders and globs."""

from __future__ import annotations

import datetime as dt

import pytest

from topic_sync.engine.simulate import audience_history, date_in_name
from topic_sync.errors import BadInput, InputFileError


@pytest.mark.parametrize(
    ("name", "day"),
    [
        ("reco-2026-11-22.csv", dt.date(2026, 11, 22)),
        ("20261122.txt.gz", dt.date(2026, 11, 22)),
        ("audience_2026-02-30_then_2026-03-01.txt", dt.date(2026, 3, 1)),  # no Feb 30
        ("v2-batch-12345678.txt", None),  # digits, but not a date
        ("README", None),
        ("2026-11-221.txt", None),  # a longer number is not a date
    ],
)
def test_a_files_date_is_the_first_date_its_name_holds(name, day):
    assert date_in_name(name) == day


def test_folders_globs_and_files_give_the_days_in_order(tmp_path):
    folder = tmp_path / "reco"
    folder.mkdir()
    for name in ("2026-11-03.txt", "2026-11-01.txt", "_SUCCESS", "notes.md"):
        (folder / name).write_text("x\n")
    other = tmp_path / "late-20261105.csv"
    other.write_text("token\nx\n")
    files, passed_over = audience_history([str(folder), str(tmp_path / "late-*.csv")])
    assert [(f.day.isoformat(), f.path.name) for f in files] == [
        ("2026-11-01", "2026-11-01.txt"),
        ("2026-11-03", "2026-11-03.txt"),
        ("2026-11-05", "late-20261105.csv"),
    ]
    assert sorted(p.name for p in passed_over) == ["_SUCCESS", "notes.md"]


def test_what_cannot_be_a_day_is_refused_by_name(tmp_path):
    undated = tmp_path / "audience.txt"
    undated.write_text("x\n")
    with pytest.raises(InputFileError, match=r"audience\.txt: no date in its name"):
        audience_history([str(undated)])
    with pytest.raises(InputFileError, match="no such file or folder"):
        audience_history([str(tmp_path / "gone")])
    with pytest.raises(BadInput, match="no file matches"):
        audience_history([str(tmp_path / "*.gz")])
    (tmp_path / "a-2026-11-01.txt").write_text("x\n")
    (tmp_path / "b-20261101.txt").write_text("x\n")
    with pytest.raises(BadInput, match="are both audiences of 2026-11-01"):
        audience_history([str(tmp_path)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput, match="no audience file with a date in its name"):
        audience_history([str(empty)])
