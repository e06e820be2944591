"""Benchmark data through the service's own storage layer: posts registered as ``PUT
/v1/posts`` does, statistics counted as the workers count them, slates remembered as served."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import redis

from core.settings import Settings
from core.storage import Served, Storage, new_request_id

FORUMS = 50
POST_TTL = 3 * 86_400
RETENTION = 86_400
SEED_EVENTS = 2000


@dataclass
class Catalogue:
    """Posts ``b0..b{size-1}`` spread over ``FORUMS`` forums, grown on demand."""

    storage: Storage
    rng: random.Random = field(default_factory=lambda: random.Random(20_240_601))
    size: int = 0

    @classmethod
    def connect(cls, redis_url: str) -> Catalogue:
        """Counting as the benchmark's workers do: they run with the default settings."""
        return cls.of(redis.Redis.from_url(redis_url))

    @classmethod
    def of(cls, client: redis.Redis) -> Catalogue:
        """The same on ``client`` (a cluster client too)."""
        window = Settings.from_mapping({}, role="worker").forum_window
        return cls(Storage(client, "pb", forum_window=window))

    @staticmethod
    def forum_of(index: int) -> str:
        return f"forum{index % FORUMS}"

    def post(self, index: int) -> tuple[str, str]:
        return f"b{index}", self.forum_of(index)

    def grow(self, size: int) -> None:
        """Register posts up to ``size`` and give about 70 % of the new ones a few impressions
        and some a click (with the same Lua step that counts real events)."""
        now = time.time()
        new = range(self.size, size)
        for i in new:
            post_id, forum_id = self.post(i)
            self.storage.catalogue.put_post(post_id, forum_id, now, now + POST_TTL, RETENTION)
        for round_ in range(3):
            shown = [(f"seed{round_}", *self.post(i)) for i in new if self.rng.random() < 0.7]
            clicked = [event for event in shown if self.rng.random() < 0.08]
            for kind, events in (("i", shown), ("c", clicked)):
                for start in range(0, len(events), SEED_EVENTS):
                    self.storage.counting.apply_events(
                        kind, events[start : start + SEED_EVENTS], RETENTION
                    )
        self.size = max(self.size, size)

    def serve_slates(self, count: int, per_slate: int = 10) -> list[Served]:
        """Remember ``count`` slates of distinct random posts as served, so their events count."""
        slates = []
        for _ in range(count):
            picks = self.rng.sample(range(self.size), per_slate)
            forums = dict(self.post(i) for i in picks)
            member = f"m{self.rng.randrange(10_000)}"
            served = Served(new_request_id(member), member, "two_level_ts", forums)
            self.storage.serving.serve(served, RETENTION)
            slates.append(served)
        return slates

    def totals(self) -> tuple[int, int]:
        """Counted impressions and clicks over every forum."""
        catalogue = self.storage.catalogue
        forums = catalogue.get_forums(catalogue.forum_ids(), time.time())
        return sum(f.impressions for f in forums), sum(f.clicks for f in forums)
