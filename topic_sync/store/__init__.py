"""The store layer: every SQL statement topic-sync runs, the schema, connections and locks.

`from topic_sync import store` gives the statements (`store.plan_topic`, ...); the
schema is `topic_sync.store.models`, connections and locks `topic_sync.store.db`.
"""

from topic_sync.store.sql import *  # noqa: F403
from topic_sync.store.sql import __all__ as _sql_all

__all__ = list(_sql_all)
