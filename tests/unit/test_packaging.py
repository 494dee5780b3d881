"""What an installed topic-sync carries: every package, and the migrations inside it.

`pip install .` builds a wheel from pyproject.toml; CI builds one and runs it outside the
checkout (.ci/install-check). Here, the cheap part: the package list is whole, and the
migrations are found as the package `topic_sync.migrations`, not beside the source."""

from __future__ import annotations

import tomllib
from pathlib import Path

from topic_sync.store import db

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_source_is_listed_for_the_wheel() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapped = setuptools["package-dir"]
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "topic_sync").rglob("__init__.py")
    }
    found |= {
        ".".join(("topic_sync.migrations", *path.parent.relative_to(ROOT / "migrations").parts))
        for path in (ROOT / "migrations").rglob("__init__.py")
    }
    assert listed == found
    assert mapped == {"topic_sync.migrations": "migrations"}


def test_the_migrations_are_found_as_a_package_with_every_revision() -> None:
    folder = db.migrations_dir()
    assert (folder / "env.py").is_file() and (folder / "script.py.mako").is_file()
    revisions = {p.name for p in (folder / "versions").glob("0*.py")}
    assert revisions == {p.name for p in (ROOT / "migrations" / "versions").glob("0*.py")}
    assert db.head_revision() == max(name.split("_", 1)[0] for name in revisions)
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["topic_sync.migrations"]
    assert "script.py.mako" in data
