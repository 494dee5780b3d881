"""A self-contained rehearsal: a few days of churning audiences synced to the local
emulator, each day checked for exact recipients. It is what README's first
command runs, and a quick way to see the whole job work on one machine.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

from topic_sync.app import commands
from topic_sync.app.services import Io, database_url, reaching
from topic_sync.config.resolve import Resolved
from topic_sync.config.table import Settings
from topic_sync.emulator import FcmEmulator
from topic_sync.errors import ExitCode
from topic_sync.store.db import recreate_database, upgrade

DEMO_DATABASE = "topic_sync_demo"
DEMO_PROJECT = "demo-topic-sync"
DEMO_PREFIX = "demo-jobreco"
DEMO_POOL_SIZE = 2  # small, so the third day reuses a topic: the one closest to its audience
# The demo's days run seconds apart, so it lets a topic change right after its publish; a
# real pool lets it rest (--rest-period, 6 h) while FCM fans the message out.
DEMO_REST_SECONDS = 0.0


@dataclass(frozen=True)
class DemoDay:
    day: dt.date
    topic: str
    audience: int
    added: int
    removed: int
    invalid: int
    recipients: int
    exact: bool


def _token(rng: random.Random) -> str:
    return "demo:" + "".join(
        rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", k=40)
    )


def write_inputs(
    workdir: Path, start: dt.date, days: int, size: int, seed: int = 7
) -> tuple[Path, list[tuple[dt.date, Path, set[str]]]]:
    """Sample audiences with daily churn (20% leave, as many join) and a message."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    message = workdir / "message.json"
    message.write_text(
        json.dumps(
            {
                "notification": {"title": "Your jobs for {date}", "body": "New picks for you"},
                "data": {"type": "jobreco", "version": "1", "date": "{date}"},
            },
            indent=2,
        )
    )
    audience = {_token(rng) for _ in range(size)}
    out = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        if offset:
            leaving = set(rng.sample(sorted(audience), size // 5))
            audience = (audience - leaving) | {_token(rng) for _ in range(size // 5)}
        path = workdir / f"audience-{day.isoformat()}.txt"
        lines = sorted(audience)
        lines += lines[:3]  # the recommender sometimes repeats itself: merged, counted
        path.write_text("\n".join(lines) + "\n")
        out.append((day, path, set(audience)))
    return message, out


def run_days(
    settings: Settings,
    io: Io,
    emulator: FcmEmulator,
    workdir: Path,
    start: dt.date,
    days: int,
    size: int,
) -> list[DemoDay]:
    """Run the demo's days as `topic-sync run --live` runs a day, quickly: no propagation
    wait, short retries, at once. Nothing of the operator's own setup reaches it: no
    metrics export, no audience query, no publish time; evidence stays in `workdir`."""
    message, inputs = write_inputs(workdir, start, days, size)
    settings = settings.replace(
        topic_prefix=DEMO_PREFIX,
        pool_size=DEMO_POOL_SIZE,
        rest_period=DEMO_REST_SECONDS,
        message=message,
        audience_query=None,
        audience_database_url=None,
        wait_for=None,
        live=True,
        publish_at=None,
        publish_by=None,
        propagation_delay=0,
        retry_min_wait=0.1,
        retry_max_wait=1,
        max_retries=2,
        metrics_file=None,
        pushgateway=None,
        state_dir=workdir,
    )
    dead: set[str] = set()
    results = []
    for index, (day, audience_path, audience) in enumerate(inputs):
        if index == 1:
            # Some devices uninstalled the app overnight: FCM now answers NOT_FOUND.
            dead = set(sorted(audience)[:5])
            for token in dead:
                emulator.unregister(token)
        day_settings = settings.replace(audience=audience_path)
        # The demo's days run ahead of today's date on purpose.
        resolved = Resolved(day_settings, {}, day=day)
        result = commands.run_day(resolved, io, backfill=True)
        topic = result.topic  # the topic the day chose and recorded
        sent = [p for p in emulator.publishes if str(result.message_id).endswith(p.message_id)]
        recipients = sent[0].recipients if sent else frozenset()
        expected = audience - dead
        results.append(
            DemoDay(
                day=day,
                topic=topic,
                audience=result.plan.audience_size if result.plan else 0,
                added=result.counts.added,
                removed=result.counts.removed,
                invalid=(result.plan.skipped if result.plan else 0) + sum(result.failed.values()),
                recipients=len(recipients),
                exact=recipients == expected,
            )
        )
    return results


def render(results: list[DemoDay]) -> str:
    header = f"{'date':<10}  {'topic':<15} {'audience':>8} {'added':>6} {'removed':>7} "
    header += f"{'dead':>5} {'recipients':>10}  exact"
    lines = [header]
    for r in results:
        lines.append(
            f"{r.day.isoformat():<10}  {r.topic:<15} {r.audience:>8} {r.added:>6} {r.removed:>7} "
            f"{r.invalid:>5} {r.recipients:>10}  {'yes' if r.exact else 'NO'}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class DemoOutcome:
    days: list[DemoDay]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if all(d.exact for d in self.days) else ExitCode.FAILED


def rehearse(settings: Settings, io: Io, *, days: int, size: int, workdir: Path) -> DemoOutcome:
    """Rehearse `days` days on a fresh demo database and an in-process emulator."""
    server = database_url(settings, io)
    with reaching(server):
        url = recreate_database(server, DEMO_DATABASE)
        upgrade(url)
    with FcmEmulator() as emu:
        io.log(
            f"demo: database {DEMO_DATABASE}, FCM emulator on {emu.host_port}, inputs in {workdir}"
        )
        target = settings.replace(
            database_url=url, emulator_host=emu.host_port, project=DEMO_PROJECT
        )
        indented = replace(io, log=lambda line: io.log(f"  {line}"))
        return DemoOutcome(run_days(target, indented, emu, workdir, io.now().date(), days, size))
