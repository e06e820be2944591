"""The worker's periodic pruning of expired posts, against a real Redis."""

from __future__ import annotations

import time

from core.settings import Settings
from core.storage import Storage
from workers.sweeper import experiment_variants, prune


def test_prune_waits_for_the_attribution_window_and_grace_after_expiry(storage: Storage) -> None:
    settings = Settings.from_mapping(
        {"BANDIT_ATTRIBUTION_SECONDS": "3600", "BANDIT_EVENT_GRACE_SECONDS": "600"}, role="worker"
    )
    now = time.time()
    storage.catalogue.put_post("closed", "f", now - 7200, now - 4300, retention=60)
    storage.catalogue.put_post("open", "f", now - 7200, now - 4100, retention=60)
    assert prune(storage, settings, now) == 1
    assert storage.client.zrange(storage.keys.live("f"), 0, -1) == [b"open"]


def test_unreadable_experiment_records_do_not_stop_pruning(storage: Storage) -> None:
    keys = storage.keys
    storage.client.hset(keys.experiment("good"), mapping={
        "definition": '{"variants": [{"name": "a"}, {"name": "b"}]}', "status": "stopped",
        "started_at": "1"})  # fmt: skip
    storage.client.hset(keys.experiment("odd"), mapping={
        "definition": '{"arms": []}', "status": "stopped", "started_at": "2"})  # fmt: skip
    storage.client.zadd(keys.experiment_history, {"good": 1, "odd": 2})
    assert experiment_variants(storage) == {"good": ["a", "b"]}
    storage.client.hset(keys.experiment("odd"), "definition", "{not json")
    assert experiment_variants(storage) == {}
    now = time.time()
    storage.catalogue.put_post("gone", "f", now - 7200, now - 7100, retention=60)
    settings = Settings.from_mapping({"BANDIT_ATTRIBUTION_SECONDS": "60"}, role="worker")
    assert prune(storage, settings, now) == 1
