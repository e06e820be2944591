"""The storage layer on a real Redis Cluster (3 masters): the operations that already work
there, through the real :class:`~core.storage.Storage` on a ``RedisCluster`` client.

What they need in Redis is written through the key builders of ``core.storage.keys`` (the
operations that would write it do not run on a cluster yet). Left out, until the storage layer
is changed for the cluster (follow-up of the issue "Scale out: statistics, attribution and the
journal on a real Redis Cluster"), with what redis-py 8.1 raises on the cluster:

- every step that runs a Lua script on a pipeline: ``catalogue.put_post``, ``delete_post`` of a
  known post, ``serving.serve`` (with and without ``hide_since``), ``counting.apply_events``,
  ``counting.prune_expired`` once a forum exists: RedisClusterException "Calling pipelined
  function evalsha is blocked when running redis in cluster mode";
- ``snapshots.read_forums`` and ``read_changes`` (TIME on a pipeline): RedisClusterException
  "Calling pipelined function time is blocked";
- ``journal.add`` and ``journal.forget`` (MULTI over ``P:pending`` and ``P:pending:since``,
  two slots): CrossSlotTransactionError "All keys involved in a cluster transaction must map to
  the same slot".
"""

from __future__ import annotations

import time

import pytest
from redis.cluster import RedisCluster

from core.storage import Served, Storage, new_request_id
from core.storage.keys import POST_FIELD, SERVED_POLICY, SERVED_USER

pytestmark = pytest.mark.cluster
NOW = time.time()


@pytest.fixture
def storage(cluster_client: RedisCluster) -> Storage:
    return Storage(cluster_client, "pb", decision_log_maxlen=10, forum_window=20)  # type: ignore[arg-type]


def test_a_post_is_read_with_its_counts(storage: Storage, cluster_client: RedisCluster) -> None:
    keys = storage.keys
    cluster_client.set(keys.post_forum("p1"), "maths")  # the id's tombstone: its forum
    cluster_client.hset(keys.post("maths", "p1"), mapping={"forum_id": "maths", "created_at": NOW,
                                                           "expires_at": NOW + 60})  # fmt: skip
    cluster_client.hset(keys.stats("maths"), mapping={"i:p1": 5, "c:p1": 2, "_wi": 5, "_wc": 2})
    post = storage.catalogue.get_post("p1")
    assert post is not None
    assert (post.forum_id, post.impressions, post.clicks) == ("maths", 5, 2)
    assert post.forum_policy_counts == (5, 2)
    assert storage.catalogue.get_post("unknown") is None
    assert storage.catalogue.delete_post("unknown", NOW) is False


def test_forums_are_listed_and_read_across_slots(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    keys = storage.keys
    forums = ["maths", "sports", "music", "films"]  # hash tags on more than one master
    assert len({cluster_client.keyslot(keys.stats(f)) for f in forums}) > 1
    cluster_client.zadd(keys.forums, dict.fromkeys(forums, 0))
    for i, forum in enumerate(forums):
        cluster_client.hset(keys.stats(forum), mapping={"_i": 10 * i, "_c": i})
    assert sorted(storage.catalogue.forum_ids()) == sorted(forums)
    page, _ = storage.catalogue.forum_page(None, 2)
    assert page == sorted(forums)[:2]
    assert storage.catalogue.get_forum("nope", NOW) is None
    records = storage.catalogue.get_forums(forums, NOW)
    assert [(r.forum_id, r.impressions, r.clicks) for r in records] == [
        (f, 10 * i, i) for i, f in enumerate(forums)
    ]


def test_served_slates_of_many_members_are_looked_up(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    ids = {new_request_id(f"member{i}"): f"member{i}" for i in range(8)}
    assert len({cluster_client.keyslot(storage.keys.served(r)) for r in ids}) > 1
    for request_id, member in ids.items():
        slate = {SERVED_USER: member, SERVED_POLICY: "two_level_ts", f"{POST_FIELD}p1": "maths"}
        cluster_client.hset(storage.keys.served(request_id), mapping=slate)
    found = storage.serving.lookup([*ids, "not-issued"])
    assert found == {r: Served(r, m, "two_level_ts", {"p1": "maths"}) for r, m in ids.items()}


def test_clicks_are_remembered_per_member(storage: Storage, cluster_client: RedisCluster) -> None:
    storage.serving.remember_clicks([("alice", "p1"), ("bob", "p2")], NOW, 600)
    assert cluster_client.zscore(storage.keys.clicked("alice"), "p1") == NOW
    assert cluster_client.zscore(storage.keys.clicked("bob"), "p2") == NOW
    assert 0 < cluster_client.ttl(storage.keys.clicked("alice")) <= 600


def test_nothing_to_prune_without_forums(storage: Storage) -> None:
    assert storage.counting.prune_expired(NOW + 10**6) == 0


def test_the_journal_is_read_requeued_and_locked(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    keys = storage.keys
    for i, batch in enumerate(["b1", "b2"]):
        cluster_client.hset(keys.pending, batch, f'["i", [], {i}]')
        cluster_client.zadd(keys.pending_since, {batch: NOW + i})
    assert storage.journal.oldest_since() == NOW
    assert storage.journal.overdue(NOW + 1, 10) == [("b1", '["i", [], 0]')]
    storage.journal.requeued("b1", NOW + 5)
    assert storage.journal.since("b1") == NOW + 5
    assert storage.journal.overdue(NOW + 2, 10) == [("b2", '["i", [], 1]')]
    lock = storage.journal.sweep_lock(5)
    assert lock.acquire() and not storage.journal.sweep_lock(5).acquire()
    lock.release()


def test_the_decision_log_is_read(storage: Storage, cluster_client: RedisCluster) -> None:
    cluster_client.xadd(storage.keys.decisions, {"r": "r1", "p": "two_level_ts"}, id="1000-0")
    outcomes = storage.keys.forum_outcomes("maths")
    cluster_client.sadd(storage.keys.outcome_forums, "maths")
    cluster_client.xadd(outcomes, {"r": "r1", "p": "p1", "k": "i"}, id="2000-0")
    assert storage.decisions.read_decisions("-", "+", 10) == [
        ("1000-0", {"r": "r1", "p": "two_level_ts"})
    ]
    assert outcomes in storage.decisions.outcome_streams()
    assert storage.decisions.read_outcomes(outcomes, "-", "+", 10) == [
        ("2000-0", {"r": "r1", "p": "p1", "k": "i"})
    ]
    assert storage.decisions.outcomes_kept_since() is None  # far below the cap
