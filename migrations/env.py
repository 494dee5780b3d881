"""Alembic environment: migrations run against the URL topic-sync configured,
or, for plain `alembic upgrade head`, DATABASE_URL / the embedded server."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from topic_sync.store.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    from topic_sync.store.db import embedded_url, sqlalchemy_url
    from topic_sync.store.embedded import default_base

    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        return sqlalchemy_url(env_url)
    return sqlalchemy_url(embedded_url(default_base(os.environ, os.geteuid())))


def _ours(name, type_, parent_names) -> bool:
    """The scheduler's job table belongs to APScheduler, which creates it itself."""
    return not (type_ == "table" and name == "scheduler_jobs")


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, include_name=_ours)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
