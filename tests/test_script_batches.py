"""Batches of commands and script calls on one real Redis: one round trip, script calls as
EVALSHA with no SCRIPT EXISTS before them, and a batch that finds its scripts gone (Redis
restarted, or SCRIPT FLUSH) loads them and runs the calls that missed them, once each."""

from __future__ import annotations

import pytest
import redis

from core.storage import Keys
from core.storage.catalogue import claim_post_id_call
from core.storage.experiment_counts import count_slate_call
from core.storage.records import SlateArm
from core.storage.scripts import Scripts, batch, load_on_connect, run
from tests.busy_redis import count_a_slate_late

KEYS = Keys("pb")
ARM = SlateArm("x1", "a", 0)


def calls(client: redis.Redis, command: str) -> int:
    """How many times Redis ran ``command`` (``INFO commandstats``; 0 when never)."""
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def errors_replied(client: redis.Redis, code: str) -> int:
    stats = client.info("errorstats").get(f"errorstat_{code}")
    return int(stats["count"]) if stats else 0


def mixed_batch(client: redis.Redis, scripts: Scripts, forum: str) -> list[object]:
    """Commands and script calls, interleaved: a claim, a count, a read of the claim."""
    pipe = batch(client)
    pipe.set("before", forum)
    run(scripts.claim_post_id, claim_post_id_call(KEYS, "p1", forum, 60), pipe)
    run(scripts.count_slate, count_slate_call(KEYS, ARM, "u1", 600, 1), pipe)
    pipe.get(KEYS.post_forum("p1"))
    return pipe.execute()


def test_script_calls_go_as_evalsha_with_no_script_exists(rclient: redis.Redis) -> None:
    scripts = Scripts(rclient)
    mixed_batch(rclient, scripts, "f1")  # the scripts are loaded by now
    exists, evalsha = calls(rclient, "script|exists"), calls(rclient, "evalsha")
    assert mixed_batch(rclient, scripts, "f2") == [True, b"f1", 0, b"f1"]
    assert calls(rclient, "script|exists") == exists
    assert calls(rclient, "evalsha") == evalsha + 2


def test_a_batch_that_finds_its_scripts_gone_loads_them_and_runs_each_call_once(
    rclient: redis.Redis,
) -> None:
    scripts = Scripts(rclient)
    rclient.script_flush()
    missed = errors_replied(rclient, "NOSCRIPT")
    # (The read of the claim ran before the claim ran again: only a flush while the
    # connection lives reorders a batch.)
    assert mixed_batch(rclient, scripts, "f1") == [True, b"f1", 1, None]
    assert errors_replied(rclient, "NOSCRIPT") == missed + 2
    assert rclient.get(KEYS.post_forum("p1")) == b"f1"
    assert rclient.script_exists(scripts.claim_post_id.sha, scripts.count_slate.sha) == [True] * 2
    assert rclient.hgetall(KEYS.experiment_counts("x1")) == {b"a|0|s": b"1", b"a|0|m": b"1"}


def test_a_failing_script_call_raises_its_error_after_the_batch_ran(rclient: redis.Redis) -> None:
    scripts = Scripts(rclient)
    rclient.set(KEYS.post_forum("p1"), "f1")
    rclient.script_flush()
    pipe = batch(rclient)
    bad = claim_post_id_call(KEYS, "p1", "f1", 60)
    run(scripts.count_slate, count_slate_call(KEYS, ARM, "u1", 600, 1), pipe)
    run(scripts.claim_post_id, bad._replace(args=["f1", "not a number", 1]), pipe)
    pipe.set("after", 1)
    with pytest.raises(redis.ResponseError):
        pipe.execute()
    assert rclient.get("after") == b"1"
    assert rclient.hget(KEYS.experiment_counts("x1"), "a|0|s") == b"1"


def test_a_new_connection_loads_every_script_before_its_first_batch(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, redis_connect_func=load_on_connect)
    try:
        scripts = Scripts(client)
        client.script_flush()  # as a restart would; the next connection is a new one
        client.connection_pool.disconnect()
        missed = errors_replied(client, "NOSCRIPT")
        assert mixed_batch(client, scripts, "f1") == [True, b"f1", 1, b"f1"]
        assert errors_replied(client, "NOSCRIPT") == missed
    finally:
        client.close()


def test_a_batch_whose_replies_came_too_late_is_not_sent_again(redis_url: str) -> None:
    """Redis is busy past the client's timeout: the slate count, which it runs once it is
    free, fails its batch at the first timeout and is not sent again (counted once), as on a
    cluster (tests/test_cluster_batch.py): a client that retried on timeouts would count it
    twice."""
    client = redis.Redis.from_url(redis_url, socket_timeout=0.3)
    with redis.Redis.from_url(redis_url, socket_timeout=5, decode_responses=True) as node:
        count_a_slate_late(client, node, Scripts(client))
