"""What a failing Redis raises, on one Redis and on a Redis Cluster.

redis-py raises :class:`redis.RedisError` for a fault of one Redis, but a cluster's own faults
(no node with the slot map, a slot not covered, a cross-slot transaction) are
:class:`redis.exceptions.RedisClusterException`, which is not a ``RedisError``. Every boundary
that degrades on a Redis fault catches :data:`REDIS_ERRORS`, so a cluster fault degrades the
same way.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
