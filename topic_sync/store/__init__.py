"""The store layer: every SQL statement topic-sync runs, the schema, connections and locks.

`from topic_sync import store` gives the statements (`store.plan_topic`, ...), from
`store.subscriptions` (the subscription table: diff, claims, outcomes, repairs),
`store.runs` (runs, publish records, fences, the FCM target, report reads),
`store.campaigns` (campaigns and their recorded changes), `store.audiences` (the
campaigns' previous audiences, for the audience guard), `store.quota` (the quota
learned per FCM target) and `store.simulation` (the job's statements on temporary copies
of its tables, for `simulate`). The schema is `store.models`; connections, migrations and
locks are `store.db`.
"""

from topic_sync.store.audiences import *  # noqa: F403
from topic_sync.store.audiences import __all__ as _audiences
from topic_sync.store.campaigns import *  # noqa: F403
from topic_sync.store.campaigns import __all__ as _campaigns
from topic_sync.store.quota import *  # noqa: F403
from topic_sync.store.quota import __all__ as _quota
from topic_sync.store.runs import *  # noqa: F403
from topic_sync.store.runs import __all__ as _runs
from topic_sync.store.simulation import *  # noqa: F403
from topic_sync.store.simulation import __all__ as _simulation
from topic_sync.store.subscriptions import *  # noqa: F403
from topic_sync.store.subscriptions import __all__ as _subscriptions

__all__ = [*_subscriptions, *_runs, *_campaigns, *_audiences, *_quota, *_simulation]
