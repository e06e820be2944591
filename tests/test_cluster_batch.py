"""Batches of script calls on a real Redis Cluster (3 masters, a replica each): sent as EVALSHA
to the master of each call's slot, their replies in the order queued, and still right when a
master lost its scripts or a slot moved to another master under the client's feet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from core.storage import Keys
from core.storage.catalogue import claim_post_id_call
from core.storage.experiment_counts import count_slate_call
from core.storage.records import SlateArm
from core.storage.scripts import Scripts, batch, run
from devtools.redis_cluster import LocalCluster, wait_until
from devtools.redis_server import RedisServer
from tests.busy_redis import count_a_slate_late

pytestmark = pytest.mark.cluster
KEYS = Keys("pb")
POSTS = [f"post{i}" for i in range(12)]  # their tombstones fall on every master


@pytest.fixture
def scripts(cluster_client: RedisCluster) -> Scripts:
    return Scripts(cluster_client)  # type: ignore[arg-type]


def node_client(node: RedisServer) -> redis.Redis:
    return redis.Redis(port=node.port, socket_timeout=5, decode_responses=True)


def commands_run(node: RedisServer, command: str) -> int:
    """How many times ``node`` ran ``command`` (``INFO commandstats``; 0 when never)."""
    with node_client(node) as client:
        stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def errors_replied(node: RedisServer, code: str) -> int:
    """How many ``code`` errors (MOVED, NOSCRIPT) ``node`` replied (``INFO errorstats``)."""
    with node_client(node) as client:
        stats = client.info("errorstats").get(f"errorstat_{code}")
    return int(stats["count"]) if stats else 0


def claims(cluster_client: RedisCluster, scripts: Scripts, forum: str) -> list[object]:
    pipe = batch(cluster_client)  # type: ignore[arg-type]
    for post in POSTS:
        run(scripts.claim_post_id, claim_post_id_call(KEYS, post, forum, 60), pipe)
    return pipe.execute()


def test_replies_come_in_the_order_queued_across_masters(
    cluster: LocalCluster, cluster_client: RedisCluster, scripts: Scripts
) -> None:
    masters = {cluster.master_of(KEYS.post_forum(p)).port for p in POSTS}
    assert len(masters) == 3
    pipe = batch(cluster_client)  # type: ignore[arg-type]
    expected: list[object] = []
    for i, post in enumerate(POSTS):
        run(scripts.claim_post_id, claim_post_id_call(KEYS, post, f"forum{i}", 60), pipe)
        expected.append(f"forum{i}".encode())
        if i % 3 == 2:  # a run of commands after a run of script calls sees their writes
            pipe.get(KEYS.post_forum(POSTS[i - 1]))
            pipe.exists(KEYS.post_forum(post))
            expected += [f"forum{i - 1}".encode(), 1]
    assert pipe.execute() == expected
    # A claim of another forum answers the owner: the first claims ran, once each.
    assert claims(cluster_client, scripts, "other") == [f"forum{i}".encode() for i in range(12)]


def test_script_calls_go_as_evalsha_with_no_look_up_of_their_keys(
    cluster: LocalCluster, cluster_client: RedisCluster, scripts: Scripts
) -> None:
    claims(cluster_client, scripts, "warm")  # every master has the script
    before = {n.port: (commands_run(n, "evalsha"), commands_run(n, "command|getkeys"),
                       commands_run(n, "eval")) for n in cluster.primaries}  # fmt: skip
    claims(cluster_client, scripts, "warm")
    after = {n.port: (commands_run(n, "evalsha"), commands_run(n, "command|getkeys"),
                      commands_run(n, "eval")) for n in cluster.primaries}  # fmt: skip
    per_master = {port: after[port][0] - before[port][0] for port in before}
    assert sum(per_master.values()) == len(POSTS) and all(per_master.values())
    assert all(after[port][1:] == before[port][1:] for port in before)


def test_a_master_that_lost_its_scripts_still_runs_the_batch_and_gets_them_again(
    cluster: LocalCluster, cluster_client: RedisCluster, scripts: Scripts
) -> None:
    claims(cluster_client, scripts, "first")
    flushed = cluster.master_of(KEYS.post_forum(POSTS[0]))
    with node_client(flushed) as client:
        client.script_flush()
        assert client.script_exists(scripts.claim_post_id.sha) == [False]
        missed = errors_replied(flushed, "NOSCRIPT")
        assert claims(cluster_client, scripts, "second") == [b"first"] * len(POSTS)
        assert errors_replied(flushed, "NOSCRIPT") > missed
        assert client.script_exists(scripts.claim_post_id.sha) == [True]
    # A call that is not replayable runs once too, when its master lost the script.
    arm = SlateArm("x1", "a", 0)
    with node_client(cluster.master_of(KEYS.experiment_counts("x1"))) as client:
        client.script_flush()
        pipe = batch(cluster_client)  # type: ignore[arg-type]
        run(scripts.count_slate, count_slate_call(KEYS, arm, "u1", 600, 1), pipe)
        assert pipe.execute() == [1]
        assert client.hgetall(KEYS.experiment_counts("x1")) == {"a|0|s": "1", "a|0|m": "1"}


def move_slot(cluster: LocalCluster, slot: int, to: RedisServer) -> None:
    """Give the empty ``slot`` to the master ``to`` (the steps of a resharding, with no key to
    move), and wait until every node names ``to`` its master."""
    clients = {n.port: node_client(n) for n in cluster.nodes}
    try:
        source = _owner(cluster, clients, slot)
        if source.port == to.port:
            return
        ids = {n.port: clients[n.port].execute_command("CLUSTER", "MYID") for n in cluster.nodes}
        clients[to.port].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
        clients[source.port].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to.port])
        assert clients[source.port].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        for node in [to, source, *(n for n in cluster.primaries if n not in (to, source))]:
            clients[node.port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to.port])
        wait_until(
            lambda: all(_slot_master(c, slot) == to.port for c in clients.values()),
            30, f"every node to name {to.port} the master of slot {slot}",
        )  # fmt: skip
    finally:
        for client in clients.values():
            client.close()


def _owner(cluster: LocalCluster, clients: dict[int, redis.Redis], slot: int) -> RedisServer:
    port = _slot_master(clients[cluster.primaries[0].port], slot)
    return next(n for n in cluster.nodes if n.port == port)


def _slot_master(client: redis.Redis, slot: int) -> int:
    for entry in client.execute_command("CLUSTER", "SLOTS"):
        if entry[0] <= slot <= entry[1]:
            return int(entry[2][1])
    raise AssertionError(f"slot {slot} has no master")


@pytest.fixture
def moved(cluster: LocalCluster) -> Iterator[tuple[int, RedisServer, RedisServer]]:
    """The slot of experiment x1's counts, given to another master for the test, and back."""
    slot = key_slot(KEYS.experiment_counts("x1").encode())
    home = cluster.master_of(KEYS.experiment_counts("x1"))
    other = next(n for n in cluster.primaries if n.port != home.port)
    move_slot(cluster, slot, other)
    yield slot, home, other
    cluster.flushall()
    move_slot(cluster, slot, home)
    cluster.wait_healthy()


def test_a_batch_follows_a_slot_moved_to_another_master_and_counts_once(
    cluster_client: RedisCluster, scripts: Scripts, moved: tuple[int, RedisServer, RedisServer]
) -> None:
    slot, home, other = moved
    assert cluster_client.nodes_manager.get_node_from_slot(slot).port == home.port  # stale
    redirected = errors_replied(home, "MOVED")
    arm = SlateArm("x1", "a", 0)
    pipe = batch(cluster_client)  # type: ignore[arg-type]
    for i, post in enumerate(POSTS[:4]):
        run(scripts.claim_post_id, claim_post_id_call(KEYS, post, f"forum{i}", 60), pipe)
    run(scripts.count_slate, count_slate_call(KEYS, arm, "u1", 600, 1), pipe)
    assert pipe.execute() == [f"forum{i}".encode() for i in range(4)] + [1]
    assert errors_replied(home, "MOVED") == redirected + 1
    with node_client(other) as client:
        assert client.hgetall(KEYS.experiment_counts("x1")) == {"a|0|s": "1", "a|0|m": "1"}
    # The redirection taught the client the slot's master.
    assert cluster_client.nodes_manager.get_node_from_slot(slot).port == other.port
    pipe = batch(cluster_client)  # type: ignore[arg-type]
    run(scripts.count_slate, count_slate_call(KEYS, arm, "u1", 600, 1), pipe)
    assert pipe.execute() == [0]
    with node_client(other) as client:
        assert client.hget(KEYS.experiment_counts("x1"), "a|0|s") == "2"


def test_a_call_that_may_have_run_is_not_sent_again_unless_replayable(
    cluster: LocalCluster, scripts: Scripts
) -> None:
    """The master of an experiment's counts is busy past the client's timeout: the slate
    count, which it runs once it is free, fails the batch and is not sent again (counted
    once, not twice)."""
    master = cluster.master_of(KEYS.experiment_counts("x1"))
    client = RedisCluster.from_url(cluster.url, socket_timeout=0.3)
    with redis.Redis(port=master.port, socket_timeout=5, decode_responses=True) as node:
        count_a_slate_late(client, node, scripts)  # type: ignore[arg-type]
