"""What an experiment counts, per variant and member bucket, and reading it back.

Events are counted by the counting step itself (``lua/apply_events.lua``, in the forum's
slot, guarded by its de-dup markers): each counted impression or click of a slate that an
experiment served adds to the forum's ``vstats:X`` (per variant and post: what each variant
learns from) and ``xres:X`` (per variant and member bucket: what the results read). Slates
and distinct members are counted when a slate is served (``lua/count_slate.lua``, in the
experiment's slot ``{xres:X}``), in the same round trip that remembers the slate. Every key
has a TTL, set again by every write: the last write comes at most the attribution window
plus the grace after the stop, and the counts outlive it by a month
(:data:`core.storage.counting.EXPERIMENT_RETENTION_SECONDS`).

The results of an experiment are the sums of its forums' ``xres:X`` (the forums are listed
in ``{xres:X}:forums``, added before each counting step) and its slate and member counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from core.experiments.assignment import STAT_BUCKETS
from core.storage.keys import Keys
from core.storage.records import SlateArm, text
from core.storage.scripts import ScriptCall, Scripts, batch, run

IntArray = npt.NDArray[np.int64]


def count_slate_call(keys: Keys, arm: SlateArm, user_id: str, ttl: int, slates: int) -> ScriptCall:
    """KEYS/ARGV of ``lua/count_slate.lua``: ``slates`` 1 counts a served slate, -1 takes one
    back."""
    return ScriptCall(
        [keys.experiment_members(arm.experiment), keys.experiment_counts(arm.experiment)],
        [user_id, arm.variant, arm.bucket, ttl, slates],
    )


@dataclass(frozen=True)
class Tallies:
    """An experiment's totals per (variant, member bucket), arrays of shape (V, B), the
    variants in the order asked for."""

    variants: tuple[str, ...]
    members: IntArray
    slates: IntArray
    impressions: IntArray
    clicks: IntArray


_COLUMNS = {"m": "members", "s": "slates", "i": "impressions", "c": "clicks"}


class ExperimentCounts:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def queue_slate(
        self, pipe: redis.client.Pipeline, arm: SlateArm, user_id: str, ttl: int, slates: int = 1
    ) -> None:
        """Queue counting (``slates`` 1) or taking back (-1) one slate of ``arm``'s variant."""
        call = count_slate_call(self.keys, arm, user_id, ttl, slates)
        run(self.scripts.count_slate, call, pipe)

    def forums(self, experiment_id: str) -> list[str]:
        """The forums holding counts of the experiment, in id order."""
        found: Any = self.client.smembers(self.keys.experiment_forums(experiment_id))
        return sorted(str(text(f)) for f in found)

    def tallies(self, experiment_id: str, variants: Sequence[str]) -> Tallies:
        """The experiment's counts per variant and member bucket: the slate and member counts
        and the sums of its forums' results counters (two round trips)."""
        forums = self.forums(experiment_id)
        pipe = batch(self.client)
        pipe.hgetall(self.keys.experiment_counts(experiment_id))
        for forum_id in forums:
            pipe.hgetall(self.keys.forum_results(forum_id, experiment_id))
        columns = {name: np.zeros((len(variants), STAT_BUCKETS), np.int64) for name in _COLUMNS}
        row = {name: i for i, name in enumerate(variants)}
        for raw in pipe.execute():
            for field, value in raw.items():
                variant, bucket, column = str(text(field)).split("|")
                if variant in row and column in columns and int(bucket) < STAT_BUCKETS:
                    columns[column][row[variant], int(bucket)] += int(value)
        return Tallies(tuple(variants), **{_COLUMNS[k]: v for k, v in columns.items()})

    def members(self, experiment_id: str, variants: Sequence[str]) -> list[int]:
        """Distinct members per variant (one command)."""
        raw: Any = self.client.hgetall(self.keys.experiment_counts(experiment_id))
        totals = dict.fromkeys(variants, 0)
        for field, value in raw.items():
            variant, _, column = str(text(field)).split("|")
            if column == "m" and variant in totals:
                totals[variant] += int(value)
        return list(totals.values())

    def post_counts(
        self, forum_id: str, experiment_id: str, variants: Sequence[str], post_id: str
    ) -> dict[str, tuple[int, int]]:
        """(impressions, clicks) of one post per variant of the experiment (one command)."""
        fields = [f"{v}|{k}:{post_id}" for v in variants for k in "ic"]
        values = self.client.hmget(self.keys.variant_stats(forum_id, experiment_id), fields)
        return {v: (int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
                for i, v in enumerate(variants)}  # fmt: skip

    def forum_counts(
        self, forum_id: str, experiment_id: str, variants: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        """(impressions, clicks) of one forum per variant of the experiment (one command)."""
        fields = [f"{v}|_{k}" for v in variants for k in "ic"]
        values = self.client.hmget(self.keys.variant_stats(forum_id, experiment_id), fields)
        return {v: (int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
                for i, v in enumerate(variants)}  # fmt: skip
