"""What the storage layer returns: plain records, and the one domain error it raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

StreamEntry = tuple[str, dict[str, str]]


class PostConflict(Exception):
    """The post exists with another forum, or was withdrawn."""


@dataclass(frozen=True)
class Decayed:
    """Decayed counts (core.storage.counting) as read at one time: their ``half_life``
    (seconds) and (impressions, clicks) of each counter read, 0 for one never written."""

    half_life: float
    counts: list[tuple[float, float]]


@dataclass(frozen=True)
class PostRecord:
    """A post's metadata and counts, and its forum's (impressions, clicks) as the policy takes
    them (:func:`core.storage.keys.policy_fields`); with a half-life, ``decayed`` holds the
    post's and then the forum's decayed counts, at the time of the read."""

    post_id: str
    forum_id: str
    created_at: float
    expires_at: float
    deleted: bool
    impressions: int
    clicks: int
    forum_policy_counts: tuple[int, int] = (0, 0)
    decayed: Decayed | None = None


@dataclass(frozen=True)
class ForumRecord:
    """A forum's totals over every impression, its live posts, and its (impressions, clicks)
    as the policy takes them, exact and, with a half-life, decayed to the time of the read."""

    forum_id: str
    impressions: int
    clicks: int
    live_posts: int
    policy_counts: tuple[int, int]
    decayed: Decayed | None = None


@dataclass(frozen=True)
class PostStates:
    """Some posts of one forum as they are now: expiry (NaN once withdrawn) and counts (exact,
    or decayed ones at the reader's anchor, core.storage.snapshot_reads)."""

    post_ids: list[str]
    expires_at: list[float]
    impressions: list[float]
    clicks: list[float]


@dataclass(frozen=True)
class VariantCounts:
    """What one variant of the running experiment counted in one forum (``*``: all of them):
    the forum's (impressions, clicks) as the policy takes them, and each read post's counts
    (in the order of :attr:`ForumRead.posts`)."""

    policy_counts: tuple[float, float]
    impressions: list[float]
    clicks: list[float]


@dataclass(frozen=True)
class ForumRead:
    """One forum as read for a snapshot: its (impressions, clicks) as the policy takes them,
    and its posts that changed after the previous cursor (every live post on a full read;
    None when nothing changed); with an experiment read, each variant's and ``*``'s counts
    of the forum and of those posts."""

    forum_id: str
    cursor: float
    policy_counts: tuple[float, float]
    posts: PostStates | None
    variants: dict[str, VariantCounts] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestContext:
    """Posts to hide from a member: the ones they clicked recently, fresh withdrawals, and
    the ones shown to them as often as the seen-limit allows."""

    clicked: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Served:
    """A served recommendation as remembered for attribution."""

    request_id: str
    user_id: str
    policy: str
    forums: dict[str, str]  # post id -> forum id
    experiment: str | None = None  # the experiment and variant that served it, if any
    variant: str | None = None


@dataclass(frozen=True)
class SlateArm:
    """The experiment and variant that served a slate, and its member's statistics bucket
    (:func:`core.experiments.assignment.member_bucket`)."""

    experiment: str
    variant: str
    bucket: int


def text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value


def totals(values: Sequence[Any]) -> tuple[int, int]:
    """Two hash values (impressions, clicks) as numbers, 0 where absent."""
    return int(values[0] or 0), int(values[1] or 0)
