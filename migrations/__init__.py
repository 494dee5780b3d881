"""Alembic's migrations, shipped inside the package as `topic_sync.migrations`."""
