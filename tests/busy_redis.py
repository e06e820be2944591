"""A real Redis kept busy by a script, past a client's timeout: what a client does when its
commands ran but their replies came too late."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.storage import Keys
from core.storage.experiment_counts import count_slate_call
from core.storage.records import SlateArm
from core.storage.scripts import Scripts, batch, run
from devtools.redis_cluster import wait_until

# Keeps its node busy for ARGV[1] microseconds: shorter than the cluster's node timeout (2 s),
# so that no failover starts, and than Redis's busy-script threshold (5 s).
BUSY = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1
"""


def busy(node: redis.Redis) -> redis.connection.Connection:
    """A connection on which ``node`` runs :data:`BUSY` for a second, returned once the node
    is busy (a PING on another connection times out); read its reply to wait for the end."""
    connection = node.connection_pool.get_connection()
    connection.send_command("EVAL", BUSY, 0, 1_000_000)
    port = node.connection_pool.connection_kwargs["port"]
    with redis.Redis(port=port, socket_timeout=0.1, retry=Retry(NoBackoff(), 0)) as probe:

        def is_busy() -> bool:
            try:
                probe.ping()
            except redis.TimeoutError:
                return True
            assert not connection.can_read(), "the busy script ended before it was seen"
            return False

        wait_until(is_busy, 30, "the node to run the busy script")
    return connection


def count_a_slate_late(client: redis.Redis, node: redis.Redis, scripts: Scripts) -> None:
    """Count a slate of experiment x1 through ``client``, then another while ``node`` (the
    Redis, decoding replies, that holds the counts) is busy past ``client``'s timeout: that
    batch raises TimeoutError, and the count, which the node runs once it is free, counts
    once (a client that sent it again would count it twice)."""
    keys, arm = Keys("pb"), SlateArm("x1", "a", 0)
    pipe = batch(client)
    run(scripts.count_slate, count_slate_call(keys, arm, "u0", 600, 1), pipe)
    assert pipe.execute() == [1]  # connected, and the script is loaded
    blocked = busy(node)
    try:
        pipe = batch(client)
        run(scripts.count_slate, count_slate_call(keys, arm, "u1", 600, 1), pipe)
        with pytest.raises(redis.TimeoutError):
            pipe.execute()
    finally:
        assert blocked.read_response() == 1
        node.connection_pool.release(blocked)
        client.close()
    counts = keys.experiment_counts("x1")
    wait_until(lambda: node.hget(counts, "a|0|m") == "2", 30, "the late slate count")
    assert node.hgetall(counts) == {"a|0|s": "2", "a|0|m": "2"}
