"""Command-line options, generated from the settings table (topic_sync.config.table).

A setting's flag, type, bounds, default, help and environment variables all come from its
entry in `Settings`; a command lists the settings it takes and gets their options. What
the command line gave is handed to the application layer with where each value came from.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from topic_sync.config.resolve import Resolved, Source, resolve
from topic_sync.config.table import (
    DATE_WINDOW_DAYS,
    DEFAULTS,
    SPECS,
    Kind,
    env_name,
    env_names,
    flag_of,
)
from topic_sync.dates import parse_duration

F = TypeVar("F", bound=Callable[..., Any])

# The settings a command that talks to FCM in batches takes besides its own.
WORK = (
    "retry_min_wait",
    "retry_max_wait",
    "max_retries",
    "deadline",
    "concurrency",
    "max_dead",
    "rate_limit",
    "transport",
    "emulator_host",
    "project",
    "database_url",
    "embedded_dir",
    "allow_embedded_database",
)
FCM = ("transport", "emulator_host", "project")
# Where the database is: a URL, else the embedded PostgreSQL's folder.
DATABASE = ("database_url", "embedded_dir")
# What a command that runs for monitoring reports takes: where its metrics and logs go.
MONITORING = ("metrics_file", "pushgateway", "log_format")


class Duration(click.ParamType):  # type: ignore[type-arg]
    """90d, 3h, 90m, 1h30m, 45s or seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError:
            self.fail(f"{value!r}: expected a duration such as 90d, 3h, 90m, 45s", param, ctx)


def _type(name: str) -> click.ParamType | None:  # type: ignore[type-arg]
    spec = SPECS[name]
    kind = spec.kind
    if kind is Kind.PATH:
        return click.Path(path_type=Path)
    if kind is Kind.INT:
        low = None if spec.low is None else int(spec.low)
        high = None if spec.high is None else int(spec.high)
        return click.IntRange(low, high)
    if kind is Kind.FLOAT:
        return click.FloatRange(spec.low, spec.high)
    if kind is Kind.DURATION:
        return Duration()
    if kind is Kind.CHOICE:
        return click.Choice(spec.choices)
    return None


def env_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that can also come from TOPIC_SYNC_<OPTION> (and any `envvar` given)."""
    long = next(d for d in decls if d.startswith("--")).split("/", 1)[0]
    extra = kwargs.pop("envvar", None)
    envs = [env_name(long), *([extra] if extra else [])]
    return click.option(*decls, envvar=envs, show_envvar=True, **kwargs)


def setting(name: str, **overrides: Any) -> Callable[[F], F]:
    """The option of one setting, exactly as the table describes it."""
    spec = SPECS[name]
    flag = flag_of(name)
    decls = [f"{flag}/--dry-run" if name == "live" else flag, name]
    kwargs: dict[str, Any] = {
        "default": getattr(DEFAULTS, name),
        "help": spec.help,
        "show_default": spec.shown_default
        or (getattr(DEFAULTS, name) is not None and not spec.secret),
    }
    if spec.kind is Kind.FLAG:
        if name != "live":
            kwargs["is_flag"] = True
    else:
        kwargs["type"] = _type(name)
    if spec.extra_check is not None:
        kwargs["callback"] = _checked_by(spec.extra_check)
    kwargs.update(overrides)
    return click.option(*decls, envvar=list(env_names(name)), show_envvar=True, **kwargs)


def _checked_by(check: Callable[[object], str | None]) -> Callable[..., Any]:
    """A click callback running the table's own check on a given value."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        problem = None if value is None else check(value)
        if problem:
            raise click.BadParameter(problem, ctx, param)
        return value

    return callback


# What --live (and --dry-run, its opposite) means to each command that takes it.
LIVE_HELP = {
    "run": SPECS["live"].help,
    "doctor": "Accepted so that a live run's command line can be checked as it is; doctor "
    "changes nothing either way.",
    "reconcile": "Send the repairs to FCM (it never publishes). Without it: only report what "
    "is owed.",
    "forget": "Also remove the tokens from FCM now. Without it: mark them and queue their "
    "removal for the next 'reconcile --live'.",
    "purge": "Delete the rows. Without it: only count what would be deleted.",
    "target": "Change the binding (reset: and clear the state's FCM facts). Without it: only "
    "say what would change.",
}


def settings(*names: str, live: str = "run") -> Callable[[F], F]:
    """The options of several settings, in the order given; `live` names the command whose
    meaning of --live the option's help gives."""

    def decorate(func: F) -> F:
        for name in reversed(names):
            func = setting(name, **({"help": LIVE_HELP[live]} if name == "live" else {}))(func)
        return func

    return decorate


config_option = env_option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML configuration file (campaigns, database, mode, sync settings).",
)
campaign_option = env_option(
    "--campaign", default=None, help="Campaign of the configuration file (optional if only one)."
)
json_option = env_option(
    "--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout."
)


full_tokens_option = env_option(
    "--full-tokens", is_flag=True, help="Show tokens whole (they are device identifiers)."
)
backfill_option = env_option(
    "--backfill",
    is_flag=True,
    help=f"Allow a --date more than {DATE_WINDOW_DAYS} days from today (in the campaign's time "
    "zone).",
)


def with_config(func: F) -> F:
    return config_option(campaign_option(func))


_SOURCES = {ParameterSource.COMMANDLINE: Source.FLAG, ParameterSource.ENVIRONMENT: Source.ENV}


def resolved(
    ctx: click.Context,
    params: dict[str, Any],
    *,
    day: str | None = None,
    need_campaign: bool = True,
) -> Resolved:
    """The command's settings: what its options gave, over the config file, over defaults."""
    return resolver(ctx, params, day=day, need_campaign=need_campaign)()


def resolver(
    ctx: click.Context,
    params: dict[str, Any],
    *,
    day: str | None = None,
    need_campaign: bool = True,
) -> Callable[[], Resolved]:
    """Resolving the command's settings, to be done later (by `doctor`, as its first check)."""
    given = {name: value for name, value in params.items() if name in SPECS}
    sources = {
        name: _SOURCES.get(
            ctx.get_parameter_source(name) or ParameterSource.DEFAULT, Source.DEFAULT
        )
        for name in given
    }
    return functools.partial(
        resolve,
        given,
        sources,
        config_path=params.get("config"),
        campaign_name=params.get("campaign"),
        day=day,
        environ=os.environ,
        now=dt.datetime.now(dt.UTC),
        need_campaign=need_campaign,
    )
