"""Fixtures of the tests marked ``cluster``: one real Redis Cluster (3 masters, 3 replicas) for
the session, emptied before each test, and a Sentinel-managed Redis for a test of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import SentinelGroup


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster(redis_cluster: LocalCluster, request: pytest.FixtureRequest) -> LocalCluster:
    """The session's cluster, whole (every slot served, replicas in sync) and empty."""
    if request.node.get_closest_marker("cluster") is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the cluster without the mark")
    redis_cluster.wait_healthy()
    redis_cluster.flushall()
    return redis_cluster


@pytest.fixture(scope="session")
def _session_cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    # One client for the session: redis-py 8.1's first ClusterPipeline of a client leaves one
    # socket to the start-up node that close() does not close (one a client, however many
    # pipelines), which a client per test would leak per test.
    client = RedisCluster.from_url(redis_cluster.url)
    yield client
    client.close()


@pytest.fixture
def cluster_client(cluster: LocalCluster, _session_cluster_client: RedisCluster) -> RedisCluster:
    """A cluster client on the emptied cluster."""
    return _session_cluster_client


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels of this test alone (it may fail the master)."""
    with SentinelGroup(tmp_path / "sentinel") as group:
        yield group
