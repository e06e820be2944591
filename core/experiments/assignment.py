"""Sticky assignment of members to an experiment's variants, by hashing.

A member's variant is a pure function of (experiment id, user id): SHA-256 of the two,
salted, taken modulo :data:`ASSIGNMENT_BUCKETS` (10,000), and the buckets split into
contiguous ranges by cumulative weight, variants in their declared order. This is how
experimentation platforms assign (GrowthBook's ``hash`` + ``getBucketRanges``, Statsig's
salted SHA-256 into 10,000 buckets): no state to store, the same answer in every process,
and each experiment's salt makes its assignment independent of every other experiment's.

:func:`member_bucket` hashes the same pair with another salt into a few buckets (64 by
default): the statistics sum each variant's members per bucket, and the buckets, being
sums of whole members spread at random, are the independent units of the variance.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

ASSIGNMENT_BUCKETS = 10_000
STAT_BUCKETS = 64
_VARIANT_SALT = "variant"
_STAT_SALT = "stats"


def _hash_unit(salt: str, experiment_id: str, user_id: str) -> int:
    """A 64-bit integer from SHA-256 of the salted pair (length-prefixed: no two pairs of
    ids give the same text, whatever characters the ids contain)."""
    text = f"{salt}|{len(experiment_id)}|{experiment_id}|{user_id}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _check_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def assignment_bucket(experiment_id: str, user_id: str) -> int:
    """The member's assignment bucket in [0, 10,000).

    Raises:
        ValueError: if an id is not a non-empty string.
    """
    _check_id("experiment_id", experiment_id)
    _check_id("user_id", user_id)
    return _hash_unit(_VARIANT_SALT, experiment_id, user_id) % ASSIGNMENT_BUCKETS


def member_bucket(experiment_id: str, user_id: str, buckets: int = STAT_BUCKETS) -> int:
    """The member's statistics bucket in [0, buckets), independent of its variant.

    Raises:
        ValueError: if an id is not a non-empty string or ``buckets`` is not an integer
            in [2, 10,000].
    """
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 2 <= buckets <= 10_000:
        raise ValueError(f"buckets must be an integer in [2, 10000], got {buckets!r}")
    _check_id("experiment_id", experiment_id)
    _check_id("user_id", user_id)
    return _hash_unit(_STAT_SALT, experiment_id, user_id) % buckets


@dataclass(frozen=True)
class Allocation:
    """Variants and their weights, as contiguous ranges of the 10,000 assignment buckets.

    Variant i takes buckets [ends[i-1], ends[i]) with ``ends[i] = round(10,000 * (w_0 +
    ... + w_i) / sum(w))``, so its share is its weight's to within 1 / 10,000. Raising one
    weight moves only the members at the range boundaries it shifts.

    Raises:
        ValueError: if there is no variant, a name is empty or repeated, or a weight is
            negative, not finite, or all weights are zero.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.weights):
            raise ValueError("an allocation needs one weight per variant and at least one")
        if any(not isinstance(n, str) or not n for n in self.names):
            raise ValueError(f"variant names must be non-empty strings, got {self.names!r}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"variant names must be distinct, got {self.names!r}")
        if not all(_is_weight(w) for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"weights must be finite, >= 0, not all 0, got {self.weights!r}")

    @classmethod
    def of(cls, variants: Sequence[tuple[str, float]]) -> Allocation:
        """An allocation from ``(name, weight)`` pairs in their declared order."""
        return cls(tuple(n for n, _ in variants), tuple(w for _, w in variants))

    @property
    def ends(self) -> tuple[int, ...]:
        """The exclusive end bucket of each variant's range (the last is 10,000)."""
        total, running, ends = sum(self.weights), 0.0, []
        for weight in self.weights:
            running += weight
            ends.append(round(ASSIGNMENT_BUCKETS * running / total))
        ends[-1] = ASSIGNMENT_BUCKETS
        return tuple(ends)

    def variant_of_bucket(self, bucket: int) -> str:
        """The variant whose range holds ``bucket`` (in [0, 10,000))."""
        for name, end in zip(self.names, self.ends, strict=True):
            if bucket < end:
                return name
        raise ValueError(f"bucket must be in [0, {ASSIGNMENT_BUCKETS}), got {bucket!r}")

    def assign(self, experiment_id: str, user_id: str) -> str:
        """The member's variant: the same for the same ids, in every process.

        Raises:
            ValueError: if an id is not a non-empty string.
        """
        return self.variant_of_bucket(assignment_bucket(experiment_id, user_id))


def _is_weight(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )
