"""Settings and clients of a cluster deployment: which broker modes start, which are refused
(with the variable named), and the clients each mode gets."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from core import clients
from core.queue import QUEUE, celery_settings, make_celery
from core.settings import ConfigError, Settings, sentinel_addresses
from core.storage import queue_length
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import SentinelGroup

SENTINELS = "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380/1"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"BANDIT_REDIS_CLUSTER": "true"}, "CELERY_BROKER_URL must be set when BANDIT_REDIS_CL"),
        (
            {
                "BANDIT_REDIS_CLUSTER": "1",
                "REDIS_URL": "redis://10.0.0.1:7000/0",
                "CELERY_BROKER_URL": "redis://10.0.0.1:7000/0",
            },
            "CELERY_BROKER_URL must not name the statistics cluster",
        ),
        ({"BANDIT_REDIS_CLUSTER": "maybe"}, "BANDIT_REDIS_CLUSTER must be `true` or `false`"),
        ({"CELERY_BROKER_URL": SENTINELS}, "BANDIT_BROKER_MASTER_NAME must be set with a sent"),
        ({"BANDIT_BROKER_MASTER_NAME": "main"}, "BANDIT_BROKER_MASTER_NAME must be set with a"),
        (
            {"CELERY_BROKER_URL": "sentinel://h:1;redis://h:2", "BANDIT_BROKER_MASTER_NAME": "m"},
            "CELERY_BROKER_URL must be a redis://, .* `sentinel://host:port` URLs joined by `;`",
        ),
        (
            {"CELERY_BROKER_URL": "sentinel://h", "BANDIT_BROKER_MASTER_NAME": "m"},
            "CELERY_BROKER_URL must be a redis://",
        ),
        ({"BANDIT_BROKER_MASTER_NAME": "a b"}, "BANDIT_BROKER_MASTER_NAME must be up to 64"),
    ],
)
def test_unworkable_broker_modes_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping(values)


@pytest.mark.parametrize(
    "values",
    [
        {"BANDIT_REDIS_CLUSTER": "true", "REDIS_URL": "redis://10.0.0.1:7000/0",
         "CELERY_BROKER_URL": "redis://10.0.0.2:6379/0"},
        {"BANDIT_REDIS_CLUSTER": "yes", "CELERY_BROKER_URL": SENTINELS,
         "BANDIT_BROKER_MASTER_NAME": "main"},
        {"CELERY_BROKER_URL": SENTINELS, "BANDIT_BROKER_MASTER_NAME": "main"},
    ],
)  # fmt: skip
def test_cluster_and_sentinel_modes_start(values: dict[str, str]) -> None:
    settings = Settings.from_mapping(values)
    assert settings.broker_url == values["CELERY_BROKER_URL"]
    assert settings.redis_cluster is ("BANDIT_REDIS_CLUSTER" in values)


@pytest.mark.parametrize(
    ("values", "replicas"),
    [
        ({}, 0),
        ({"BANDIT_REDIS_CLUSTER": "true", "CELERY_BROKER_URL": "redis://10.0.0.2:6379/0"}, 1),
        ({"BANDIT_REDIS_CLUSTER": "true", "CELERY_BROKER_URL": "redis://10.0.0.2:6379/0",
          "BANDIT_JOURNAL_REPLICAS": "0"}, 0),
        ({"BANDIT_JOURNAL_REPLICAS": "2"}, 2),
    ],
)  # fmt: skip
def test_the_journal_waits_for_a_replica_on_a_cluster_unless_told(
    values: dict[str, str], replicas: int
) -> None:
    settings = Settings.from_mapping(values)
    assert settings.journal_replicas == replicas
    assert clients.journal_wait_ms(settings, "web") == 125  # half the web's Redis timeout


def test_sentinel_addresses_are_every_part_of_the_url() -> None:
    assert sentinel_addresses(SENTINELS) == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]


def test_a_sentinel_broker_gets_kombus_master_name_and_the_broker_timeouts() -> None:
    values = {"CELERY_BROKER_URL": SENTINELS, "BANDIT_BROKER_MASTER_NAME": "main"}
    options: dict[str, Any] = celery_settings(Settings.from_mapping(values), role="web")[
        "broker_transport_options"
    ]
    assert options["master_name"] == "main"
    assert options["sentinel_kwargs"] == {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    plain = celery_settings(Settings.from_mapping({}))["broker_transport_options"]
    assert "master_name" not in plain and "sentinel_kwargs" not in plain


@pytest.mark.cluster
def test_a_broker_on_a_cluster_node_is_refused_at_start(cluster: LocalCluster) -> None:
    other_node = cluster.primaries[1].url
    settings = Settings.from_mapping(
        {"REDIS_URL": cluster.url, "BANDIT_REDIS_CLUSTER": "true", "CELERY_BROKER_URL": other_node}
    )
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL must not name a Redis Cluster"):
        make_celery(settings, role="web")


@pytest.mark.cluster
def test_statistics_on_a_cluster_use_a_cluster_client(cluster: LocalCluster) -> None:
    settings = Settings.from_mapping(
        {"REDIS_URL": cluster.url, "BANDIT_REDIS_CLUSTER": "true",
         "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    )  # fmt: skip
    storage = clients.statistics(settings, "web")
    try:
        assert isinstance(storage.client, RedisCluster)
        assert storage.ping()
        assert len(storage.client.get_primaries()) == 3
    finally:
        storage.client.close()


@pytest.mark.cluster
def test_a_sentinel_broker_client_reads_the_master_the_sentinels_name(
    sentinel_group: SentinelGroup,
) -> None:
    settings = Settings.from_mapping(
        {"CELERY_BROKER_URL": sentinel_group.url,
         "BANDIT_BROKER_MASTER_NAME": sentinel_group.master_name}
    )  # fmt: skip
    master = redis.Redis(port=sentinel_group.master().port)
    master.lpush(QUEUE, "m1", "m2")
    broker = clients.broker(settings, "web")
    try:
        assert broker.info("server")["tcp_port"] == sentinel_group.master().port
        assert queue_length(broker, QUEUE) == 2
        make_celery(settings, role="web")  # a plain Redis master: accepted
    finally:
        broker.close()
        master.close()
