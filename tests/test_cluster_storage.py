"""Every storage operation on a real Redis Cluster (3 masters, a replica each), through the
real :class:`~core.storage.Storage` on a ``RedisCluster`` client, as the services make it.

The forums, members and request ids are chosen so that their hash tags fall on more than one
master: a batch that spans slots (counting, look-ups, snapshot reads) is checked across nodes.
"""

from __future__ import annotations

import time

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import CrossSlotTransactionError

from core.events import apply_batch
from core.storage import PostConflict, Served, SlateArm, Storage, new_request_id
from core.storage.decision_log import stream_id
from core.storage.errors import REDIS_ERRORS
from core.storage.experiments import canonical
from core.storage.journal import NotReplicated
from core.storage.keys import journal_shard
from devtools.redis_cluster import LocalCluster

pytestmark = pytest.mark.cluster
NOW = time.time()
FORUMS = ["maths", "sports", "music", "films"]  # hash tags on more than one master


@pytest.fixture
def storage(cluster_client: RedisCluster) -> Storage:
    return Storage(cluster_client, "pb", decision_log_maxlen=10, forum_window=20,  # type: ignore[arg-type]
                   journal_replicas=1, journal_wait_ms=2000)  # fmt: skip


def masters_of(client: RedisCluster, keys: list[str]) -> set[str]:
    return {client.get_node_from_key(key).name for key in keys}


def register_all(storage: Storage) -> None:
    for forum in FORUMS:
        for post in ("a", "b"):
            assert storage.catalogue.put_post(f"{forum}-{post}", forum, NOW, NOW + 3600, 60)


def test_the_forums_span_masters(storage: Storage, cluster_client: RedisCluster) -> None:
    assert len(masters_of(cluster_client, [storage.keys.stats(f) for f in FORUMS])) > 1


def test_posts_are_registered_read_and_withdrawn(storage: Storage) -> None:
    register_all(storage)
    assert not storage.catalogue.put_post("maths-a", "maths", NOW, NOW + 7200, 60)  # an update
    with pytest.raises(PostConflict, match="belongs to forum maths"):
        storage.catalogue.put_post("maths-a", "sports", NOW, NOW + 60, 60)
    post = storage.catalogue.get_post("maths-a")
    assert post is not None and (post.forum_id, post.expires_at) == ("maths", NOW + 7200)
    assert storage.catalogue.delete_post("maths-a", NOW) is True
    assert storage.catalogue.delete_post("unknown", NOW) is False
    with pytest.raises(PostConflict, match="withdrawn"):
        storage.catalogue.put_post("maths-a", "maths", NOW, NOW + 60, 60)
    gone = storage.catalogue.get_post("maths-a")
    assert gone is not None and gone.deleted
    assert storage.catalogue.get_post("unknown") is None


def test_forums_are_listed_paged_and_counted(storage: Storage) -> None:
    register_all(storage)
    assert storage.catalogue.forum_ids() == sorted(FORUMS)
    page, last = storage.catalogue.forum_page(None, 2)
    assert (page, last) == (sorted(FORUMS)[:2], sorted(FORUMS)[1])
    assert storage.catalogue.forum_page(last.encode() if last else None, 5)[0] == sorted(FORUMS)[2:]
    assert storage.catalogue.get_forum("nope", NOW) is None
    records = storage.catalogue.get_forums(FORUMS, NOW)
    assert [(r.forum_id, r.live_posts) for r in records] == [(f, 2) for f in FORUMS]


def serve(storage: Storage, user: str, posts: dict[str, str]) -> str:
    served = Served(new_request_id(user), user, "two_level_ts", posts)
    storage.serving.serve(served, 600, {"r": served.request_id})
    return served.request_id


def test_slates_are_served_looked_up_and_checked(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    register_all(storage)
    slates = {f"member{i}": serve(storage, f"member{i}", {"maths-a": "maths"}) for i in range(8)}
    assert len(masters_of(cluster_client, [storage.keys.served(r) for r in slates.values()])) > 1
    found = storage.serving.lookup([*slates.values(), "not-issued"])
    assert {r: s.user_id for r, s in found.items()} == {r: u for u, r in slates.items()}
    assert storage.decisions.kept() == 8
    shards = [k for k in storage.keys.decision_streams if cluster_client.exists(k)]
    assert len(masters_of(cluster_client, shards)) > 1  # the decisions spread over masters
    storage.serving.remember_clicks([("member0", "sports-a")], NOW, 600)
    storage.catalogue.delete_post("films-a", NOW)
    context = storage.serving.to_hide("member0", NOW - 60, NOW - 60, NOW)  # two masters
    assert (context.clicked, context.withdrawn) == (["sports-a"], ["films-a"])
    assert storage.serving.to_hide("member1", NOW - 60, NOW - 60).clicked == []
    merged = storage.decisions.read_decisions("-", "+", 5)  # every shard, in id order
    assert sorted(e["r"] for _, e in storage.decisions.read_decisions("-", "+", 100)) == sorted(
        slates.values()
    )
    assert len(merged) >= 5 and [i for i, _ in merged] == sorted(
        (i for i, _ in merged), key=stream_id
    )


def test_impressions_are_recorded_and_checked_in_each_members_slot(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    register_all(storage)
    members = [f"member{i}" for i in range(6)]
    assert len(masters_of(cluster_client, [storage.keys.limited(m) for m in members])) > 1
    shown = {m: 3 if i % 2 else 2 for i, m in enumerate(members)}
    events = [[serve(storage, m, {"maths-a": "maths"}), "maths-a"]
              for m, times in shown.items() for _ in range(times)]  # fmt: skip
    now = time.time()
    outcome = apply_batch(storage, "impression", events + events[:2], now, 600, 600,
                          seen_limit=(600, 3))  # fmt: skip
    assert outcome.results == {"counted": len(events), "duplicate": 2}
    for member, times in shown.items():
        context = storage.serving.to_hide(member, now - 60, now, now)
        assert context.shown == (["maths-a"] if times == 3 else []), member


def test_events_count_once_across_masters_and_are_logged(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    register_all(storage)
    rid = serve(storage, "alice", {f"{f}-a": f for f in FORUMS})
    events = [(rid, f"{f}-a", f) for f in FORUMS]
    assert storage.counting.apply_events("i", events + events[:1], 600) == [1, 1, 1, 1, 0]
    assert storage.counting.apply_events("c", events[:2], 600) == [1, 1]
    assert storage.counting.apply_events("c", events[:2], 600) == [0, 0]
    for forum in FORUMS:
        post = storage.catalogue.get_post(f"{forum}-a")
        assert post is not None
        assert (post.impressions, post.clicks) == (1, int(forum in ("maths", "sports")))
    streams = storage.decisions.outcome_streams()
    assert {storage.keys.forum_outcomes(f) for f in FORUMS} <= set(streams)
    logged = [storage.decisions.read_outcomes(s, "-", "+", 10) for s in streams]
    assert sum(len(entries) for entries in logged) == 6
    assert storage.decisions.outcomes_kept_since() is None  # far below the cap


def test_snapshots_read_forums_and_changes(storage: Storage) -> None:
    register_all(storage)
    reads = {r.forum_id: r for r in storage.snapshots.read_forums(FORUMS, NOW)}
    assert all(r.posts is not None and len(r.posts.post_ids) == 2 for r in reads.values())
    cursors = {f: r.cursor for f, r in reads.items()}
    rid = serve(storage, "bob", {"music-b": "music"})
    storage.counting.apply_events("c", [(rid, "music-b", "music")], 600)
    changed = {r.forum_id: r for r in storage.snapshots.read_changes(cursors, NOW)}
    music = changed["music"].posts
    assert music is not None and "music-b" in music.post_ids
    assert music.clicks[music.post_ids.index("music-b")] == 1
    assert storage.snapshots.created_at([("music-b", "music"), ("nope", "maths")]) == [NOW, 0]


def test_pruning_forgets_expired_posts_on_every_master(storage: Storage) -> None:
    register_all(storage)
    rid = serve(storage, "carol", {f"{f}-a": f for f in FORUMS})
    arm = {rid: SlateArm("x", "a", 3)}
    storage.counting.apply_events("i", [(rid, f"{f}-a", f) for f in FORUMS], 600, arm)
    vstats = [storage.keys.variant_stats(f, "x") for f in FORUMS]
    assert storage.client.hget(vstats[0], "a|i:maths-a") == b"1"
    pruned = storage.counting.prune_expired(NOW + 10**6, experiments={"x": ["a", "b"]})
    assert pruned == 2 * len(FORUMS)
    assert storage.catalogue.forum_ids() == []
    # the posts left the experiment's counts on every master, its totals stayed
    assert [sorted(storage.client.hkeys(key)) for key in vstats] == [
        [b"*|_i", b"*|_wi", b"a|_i", b"a|_wi"]
    ] * len(FORUMS)


def test_the_journal_waits_for_a_replica(storage: Storage, cluster_client: RedisCluster) -> None:
    storage.journal.add("b1", '["i", [], 0]', NOW)
    storage.journal.add("b2", '["i", [], 1]', NOW + 1)
    assert storage.journal.oldest_since() == NOW
    assert storage.journal.overdue(NOW + 1, 10) == [("b1", '["i", [], 0]')]
    storage.journal.requeued("b1", NOW + 5)
    assert storage.journal.since("b1") == NOW + 5
    storage.journal.forget("b1")
    assert storage.journal.since("b1") is None
    assert storage.journal.overdue(NOW + 10, 10) == [("b2", '["i", [], 1]')]
    lock = storage.journal.sweep_lock(5)
    assert lock.acquire() and not storage.journal.sweep_lock(5).acquire()
    lock.release()
    shard = journal_shard("b2")
    keys = [storage.keys.pending(shard), storage.keys.pending_since(shard)]
    assert len({cluster_client.keyslot(k) for k in keys}) == 1
    shards = [batches for batches, _ in storage.keys.journal_shards]
    assert len(masters_of(cluster_client, shards)) == 3  # the journal spreads over the masters


def test_the_unsharded_journal_is_moved_into_the_shards_across_masters(
    storage: Storage, cluster_client: RedisCluster
) -> None:
    ids = [f"{i:032x}" for i in range(20)]
    pipe = cluster_client.pipeline(transaction=True)
    for age, batch_id in enumerate(ids):
        pipe.hset(storage.keys.legacy_pending, batch_id, "[]")
        pipe.zadd(storage.keys.legacy_pending_since, {batch_id: NOW + age})
    pipe.execute()
    assert storage.journal.oldest_since() == NOW
    assert storage.journal.adopt_legacy(500) == 20
    assert [i for i, _ in storage.journal.overdue(NOW + 100, 100)] == ids
    shards = {storage.keys.pending(journal_shard(i)) for i in ids}
    assert len(masters_of(cluster_client, sorted(shards))) > 1
    for batch_id in ids:
        storage.journal.forget(batch_id)
    assert storage.journal.is_empty()


def test_the_journal_refuses_a_batch_its_connected_replica_did_not_take(
    storage: Storage, cluster: LocalCluster
) -> None:
    replica = cluster.replica_of(cluster.master_of(storage.keys.pending(journal_shard("b1"))))
    storage.journal.wait_ms = 100
    replica.pause()  # connected, but acknowledges nothing
    try:
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            storage.journal.add("b1", "[]", NOW)
    finally:
        replica.resume()
    storage.journal.add("b2", "[]", NOW)
    assert storage.journal.since("b2") == NOW


def test_a_master_short_of_replicas_needs_those_it_has(storage: Storage) -> None:
    storage.journal.replicas = 2  # each master has one: its acknowledgement is enough
    storage.journal.add("b1", "[]", NOW)
    assert storage.journal.since("b1") == NOW


def test_drain_cursors_advance_under_their_lock(storage: Storage) -> None:
    lock = storage.drains.lock(5)
    assert lock.acquire()
    assert storage.drains.get("decisions") is None
    storage.drains.advance("decisions", None, 1000, lock)
    assert storage.drains.get("decisions") == 1000
    assert abs(storage.drains.server_ms() / 1000 - time.time()) < 60
    lock.release()


def test_experiments_start_stop_and_serve(storage: Storage) -> None:
    definition = canonical({"variants": {"a": {"policy": "greedy"}}})
    assert storage.experiments.start("x1", definition, NOW) == ("created", "")
    assert storage.experiments.start("x2", definition, NOW) == ("busy", "x1")
    assert storage.experiments.serving().experiment == "x1"
    promoted = {"experiment": "x1", "variant": "a", "policy": "greedy", "params": {}}
    assert storage.experiments.stop("x1", NOW + 1, "a", promoted) == "stopped"
    serving = storage.experiments.serving()
    assert (serving.experiment, serving.promoted) == (None, promoted)
    record = storage.experiments.get("x1")
    assert record is not None and (record.status, record.promoted) == ("stopped", "a")
    assert [r.experiment_id for r in storage.experiments.history()] == ["x1"]


def test_a_cluster_fault_is_a_redis_error(cluster_client: RedisCluster) -> None:
    pipe = cluster_client.pipeline(transaction=True)
    pipe.set("one", 1)
    pipe.set("other", 2)  # another slot
    with pytest.raises(REDIS_ERRORS) as caught:
        pipe.execute()
    assert isinstance(caught.value, CrossSlotTransactionError)
