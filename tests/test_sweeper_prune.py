"""The worker's periodic pruning of expired posts, against a real Redis."""

from __future__ import annotations

import time

from core.settings import Settings
from core.storage import Storage
from workers.sweeper import prune


def test_prune_waits_for_the_attribution_window_and_grace_after_expiry(storage: Storage) -> None:
    settings = Settings.from_mapping(
        {"BANDIT_ATTRIBUTION_SECONDS": "3600", "BANDIT_EVENT_GRACE_SECONDS": "600"}, role="worker"
    )
    now = time.time()
    storage.catalogue.put_post("closed", "f", now - 7200, now - 4300, retention=60)
    storage.catalogue.put_post("open", "f", now - 7200, now - 4100, retention=60)
    assert prune(storage, settings, now) == 1
    assert storage.client.zrange(storage.keys.live("f"), 0, -1) == [b"open"]
