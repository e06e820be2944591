"""A fix for kombu's Redis transport: a worker must survive losing the broker mid-task.

When the broker connection drops while a message is unacknowledged (being run, or prefetched),
Celery closes the old channel, and later acknowledges or restores that message through it.
kombu 5.7 then builds a Redis client from the closed connection (``_connparams`` reads
``connection.client``, now ``None``) and raises ``AttributeError``, which Celery treats as
unrecoverable: the whole worker exits (see docs/reliability.md; reproduced by
tests/test_faults.py). Raising a connection error instead is what Celery expects there: it logs
"couldn't ack" and carries on, the message stays in kombu's unacked set, and the broker delivers
it again after the visibility timeout, where applying it again is a no-op.

Remove this module when kombu handles a closed channel itself (the test above will tell).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_original_connparams = kombu_redis.Channel._connparams


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    if self.connection.client is None:
        raise redis.ConnectionError("the broker channel is closed (connection lost)")
    return _original_connparams(self, asynchronous=asynchronous)


def apply() -> None:
    """Install the fix (idempotent)."""
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
