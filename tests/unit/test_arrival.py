"""Waiting for a producer (--wait-for): on a virtual clock, so no test waits for real."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import VirtualClock
from topic_sync.errors import Interrupted
from topic_sync.inputs.arrival import Arrival, wait_for


class Clock(VirtualClock):
    """A virtual clock whose sleep advances time and lets the test act at given moments."""

    def __init__(self, events: dict[float, Callable[[], None]] | None = None) -> None:
        super().__init__()
        self.events = dict(events or {})

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        for at in sorted(t for t in self.events if t <= self.now):
            self.events.pop(at)()


def wait(path: Path, clock: Clock, *, audience: Path | None, timeout: float = 60) -> Arrival:
    return wait_for(
        path,
        audience=audience,
        timeout=timeout,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        interval=10,
    )


def test_a_marker_that_appears_later_ends_the_wait_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "_SUCCESS"
    clock = Clock({25: marker.touch})
    got = wait(marker, clock, audience=tmp_path / "audience.txt")
    assert got == Arrival(True, 30.0, "ready")
    assert clock.sleeps == [10, 10, 10]  # seen at the first check after it appeared


def test_the_audience_itself_must_stop_growing(tmp_path: Path) -> None:
    audience = tmp_path / "audience.txt"

    def append() -> None:
        with audience.open("a") as f:
            f.write("tok:1\n")

    clock = Clock({5: append, 15: append, 25: append})
    got = wait(audience, clock, audience=audience)
    # Seen at 10, 20 and 30 while growing; unchanged between 30 and 40: ready.
    assert got == Arrival(True, 40.0, "ready")


def test_timeout_reports_what_it_saw(tmp_path: Path) -> None:
    clock = Clock()
    got = wait(tmp_path / "never.txt", clock, audience=None, timeout=25)
    assert got == Arrival(False, 25.0, "missing")
    assert clock.sleeps == [10, 10, 5]  # never past the timeout

    audience = tmp_path / "audience.txt"
    audience.write_text("tok:1\n")
    grow = Clock({t: (lambda: audience.write_text(audience.read_text() + "x\n")) for t in (5, 15)})
    got = wait(audience, grow, audience=audience, timeout=20)
    assert got == Arrival(False, 20.0, "growing")


def test_zero_timeout_checks_once(tmp_path: Path) -> None:
    clock = Clock()
    (tmp_path / "m").touch()
    assert wait(tmp_path / "m", clock, audience=None, timeout=0).arrived
    assert not wait(tmp_path / "absent", clock, audience=None, timeout=0).arrived
    assert clock.sleeps == []


def test_a_directory_marker_is_enough(tmp_path: Path) -> None:
    assert wait(tmp_path, Clock(), audience=tmp_path).arrived


def test_a_stop_request_ends_the_wait(tmp_path: Path) -> None:
    clock = Clock()
    with pytest.raises(Interrupted):
        wait_for(
            tmp_path / "never",
            audience=None,
            timeout=3600,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
            should_stop=lambda: clock.now >= 20,
            interval=10,
        )
    assert clock.now == 20


@pytest.mark.parametrize("link", ["symbolic", "hard", "relative"])
def test_a_link_to_the_audience_is_the_audience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    # A link is not a marker: the audience behind it must stop growing before it is read.
    audience = tmp_path / "data" / "audience.txt"
    audience.parent.mkdir()
    audience.write_text("tok:1\n")
    waited = tmp_path / "latest.txt"
    if link == "symbolic":
        waited.symlink_to(audience)
    elif link == "hard":
        waited.hardlink_to(audience)
    else:  # the audience named relatively, the link absolutely
        waited.symlink_to(audience)
        monkeypatch.chdir(tmp_path)
        audience = Path("data/audience.txt")

    def append() -> None:
        with waited.open("a") as f:
            f.write("tok:2\n")

    clock = Clock({5: append, 15: append})
    got = wait(waited, clock, audience=audience)
    assert got == Arrival(True, 30.0, "ready")  # growing at 10 and 20, unchanged at 30


def test_a_link_made_while_waiting_is_the_audience_too(tmp_path: Path) -> None:
    audience = tmp_path / "audience.txt"
    audience.write_text("tok:1\n")
    waited = tmp_path / "latest.txt"
    clock = Clock({5: lambda: waited.symlink_to(audience)})
    assert wait(waited, clock, audience=audience) == Arrival(True, 20.0, "ready")


def test_a_long_wait_says_what_it_waits_for_every_five_minutes(tmp_path: Path) -> None:
    audience = tmp_path / "audience.txt"
    clock = Clock({11 * 60: lambda: audience.write_text("tok:1\n")})
    said: list[str] = []

    got = wait_for(
        audience,
        audience=audience,
        timeout=7200,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        interval=10,
        report=said.append,
    )

    assert got.arrived and got.waited == 11 * 60 + 10
    assert said == [
        f"still waiting for the audience file {audience} to be there and stop growing: not "
        "there yet; waited 5m, at most 1h55m more (--wait-timeout)",
        f"still waiting for the audience file {audience} to be there and stop growing: not "
        "there yet; waited 10m, at most 1h50m more (--wait-timeout)",
    ]


def test_a_marker_wait_names_the_marker(tmp_path: Path) -> None:
    marker, said = tmp_path / "_SUCCESS", []
    clock = Clock()
    wait_for(
        marker,
        audience=tmp_path / "a.txt",
        timeout=400,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        interval=10,
        report=said.append,
    )
    assert said == [
        f"still waiting for the marker {marker} (then the audience is read): not there yet; "
        "waited 5m, at most 1m40s more (--wait-timeout)"
    ]
