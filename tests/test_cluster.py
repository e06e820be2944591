"""The development Redis Cluster and Sentinel setup (devtools): formed whole, replicated,
emptied between tests, and a Sentinel failover that promotes the replica."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from devtools.redis_cluster import SLOTS, LocalCluster, info_field, slot_ranges
from devtools.redis_sentinel import SentinelGroup

pytestmark = pytest.mark.cluster


def test_slot_ranges_cover_every_slot_once() -> None:
    ranges = slot_ranges(3)
    assert [r.start for r in ranges] == [0, 5461, 10922]
    assert sorted(s for r in ranges for s in r) == list(range(SLOTS))


def test_three_masters_serve_every_slot_each_with_a_linked_replica(cluster: LocalCluster) -> None:
    shards = RedisCluster.from_url(cluster.url)
    try:
        slots = shards.cluster_slots()
    finally:
        shards.close()
    assert sum(high - low + 1 for low, high in slots) == SLOTS
    masters = {owner["primary"][1] for owner in slots.values()}
    replicas = {owner["replicas"][0][1] for owner in slots.values()}
    assert masters == {n.port for n in cluster.primaries}
    assert replicas == {n.port for n in cluster.secondaries}
    for node in cluster.secondaries:
        client = redis.Redis(port=node.port, decode_responses=True)
        assert info_field(client, "replication", "master_link_status") == "up"
        client.close()


def test_a_write_reaches_the_owning_masters_replica(
    cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    cluster_client.set("{f:maths}:probe", "42")
    owner = cluster_client.get_node_from_key("{f:maths}:probe")
    primary = next(n for n in cluster.primaries if n.port == owner.port)
    replica = cluster.secondaries[cluster.primaries.index(primary)]
    client = redis.Redis(port=replica.port, decode_responses=True)
    try:
        client.execute_command("READONLY")
        # WAIT returns once the replica acknowledged the write: no sleep, no polling.
        assert cluster_client.execute_command("WAIT", 1, 5000, target_nodes=owner) == 1
        assert client.get("{f:maths}:probe") == "42"
    finally:
        client.close()


@pytest.mark.parametrize("run", [1, 2])
def test_every_test_starts_with_an_empty_cluster(
    run: int, cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    assert sum(c.dbsize() for c in cluster.masters_now()) == 0
    for key in ("a", "b", "c", "{u:0001}:x"):
        cluster_client.set(key, run)


def test_sentinels_promote_the_replica_and_name_it(sentinel_group: SentinelGroup) -> None:
    old = sentinel_group.master()
    client = redis.Redis(port=old.port)
    client.set("kept", "1")
    assert client.execute_command("WAIT", 1, 5000) == 1
    client.close()
    new = sentinel_group.failover()
    assert new is not old and sentinel_group.master() is new
    promoted = redis.Redis(port=new.port, decode_responses=True)
    try:
        assert info_field(promoted, "replication", "role") == "master"
        assert promoted.get("kept") == "1"
    finally:
        promoted.close()
