"""Known streams of events for accounting tests, and the counts they must leave behind.

A stream is built from real served slates and mixes in everything that must not count twice or
at all: duplicates inside a batch, whole batches sent again (client retries), clicks before
their impressions, unknown request ids, expired request ids and posts that were not served.
The expected counts follow from the event semantics in the README, computed independently of
the service's code.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from core.storage import Keys, new_request_id, request_time

Event = tuple[str, str]  # (request id, post id)


@dataclass
class Slate:
    request_id: str
    posts: dict[str, str]  # post id -> forum id


@dataclass
class Stream:
    slates: list[Slate]
    batches: list[tuple[str, list[Event]]] = field(default_factory=list)  # (kind, events)

    def expected(self) -> dict[str, tuple[int, int]]:
        """(impressions, clicks) per served post, from the event semantics alone."""
        served = {s.request_id: s.posts for s in self.slates}
        valid = {
            kind: {(r, p) for k, events in self.batches if k == kind for r, p in events
                   if p in served.get(r, {})}
            for kind in ("impression", "click")
        }  # fmt: skip
        shown = Counter(p for _, p in valid["impression"] | valid["click"])
        clicked = Counter(p for _, p in valid["click"])
        posts = {p for s in self.slates for p in s.posts}
        return {p: (shown[p], clicked[p]) for p in posts}

    def forum_totals(self) -> dict[str, tuple[int, int]]:
        forum_of = {p: f for s in self.slates for p, f in s.posts.items()}
        totals: dict[str, tuple[int, int]] = {}
        for post, (imps, clicks) in self.expected().items():
            i, c = totals.get(forum_of[post], (0, 0))
            totals[forum_of[post]] = (i + imps, c + clicks)
        return totals

    def forum_window(self, window: int) -> dict[str, tuple[int, int, int]]:
        """Per forum: the impressions in its posts' first ``window``, exact whatever the order
        of arrival, and the least and the most clicks of those impressions (which impressions
        were first depends on that order; every click of a post that never left its window
        counts, and a post counts at most as many as its clicks and its windowed impressions).
        """
        forum_of = {p: f for s in self.slates for p, f in s.posts.items()}
        bounds: Counter[tuple[str, str]] = Counter()
        for post, (imps, clicks) in self.expected().items():
            forum = forum_of[post]
            bounds[forum, "impressions"] += min(imps, window)
            bounds[forum, "least"] += clicks if imps <= window else 0
            bounds[forum, "most"] += min(clicks, imps, window)
        forums = set(forum_of.values())
        return {
            f: (bounds[f, "impressions"], bounds[f, "least"], bounds[f, "most"]) for f in forums
        }

    def outcomes(self) -> Counter[str]:
        """How many events must end as each order-independent outcome of core.events (which of
        two copies of an event counts and which is the duplicate depends on timing)."""
        served = {s.request_id: s.posts for s in self.slates}
        found: Counter[str] = Counter()
        for _, events in self.batches:
            for request_id, post_id in events:
                if request_id not in served:
                    issued = request_time(request_id)
                    found["expired" if issued is not None else "unknown_request"] += 1
                elif post_id not in served[request_id]:
                    found["not_served"] += 1
                else:
                    found["counted or duplicate"] += 1
        return found


def fetch_slates(base: str, count: int, n: int, seed: int = 0) -> list[Slate]:
    session = requests.Session()
    slates = []
    for i in range(count):
        response = session.get(
            f"{base}/v1/recommendations", params={"user_id": f"s{seed}-{i}", "n": n}, timeout=10
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert not body["degraded"] and body["items"], body
        posts = {item["post_id"]: item["forum_id"] for item in body["items"]}
        slates.append(Slate(body["request_id"], posts))
    return slates


def build_stream(
    slates: list[Slate], seed: int, batch_size: int, window: int, retries: bool = True
) -> Stream:
    """Impressions and clicks for the slates, with every kind of noise, in shuffled batches."""
    rng = random.Random(seed)
    impressions: list[Event] = []
    clicks: list[Event] = []
    for slate in slates:
        posts = list(slate.posts)
        shown = posts[: rng.randint(1, len(posts))]
        impressions += [(slate.request_id, p) for p in shown]
        impressions += [(slate.request_id, p) for p in shown if rng.random() < 0.2]  # duplicates
        # Clicks, some on posts whose impression never comes (those count it themselves).
        clicks += [(slate.request_id, p) for p in posts if rng.random() < 0.3]
        clicks += [(slate.request_id, f"not-served-{rng.randrange(10**6)}")] * (rng.random() < 0.1)
    noise = [(f"unknown-{rng.randrange(10**9)}", "p") for _ in range(len(slates) // 4 + 1)]
    noise += [
        (new_request_id("late", time.time() - window - 60), "p")
        for _ in range(len(slates) // 4 + 1)
    ]
    rng.shuffle(impressions)
    rng.shuffle(clicks)
    stream = Stream(slates)
    # Clicks go first, so many arrive before their impressions.
    for kind, events in (("click", clicks + noise), ("impression", impressions + noise)):
        for start in range(0, len(events), batch_size):
            stream.batches.append((kind, events[start : start + batch_size]))
    if retries:  # client retries of whole batches
        stream.batches += rng.sample(stream.batches, k=max(1, len(stream.batches) // 5))
    return stream


def post_batch(session: requests.Session, base: str, kind: str, events: Iterable[Event],
               headers: dict[str, str] | None = None) -> requests.Response:  # fmt: skip
    body = {"events": [{"request_id": r, "post_id": p} for r, p in events]}
    return session.post(f"{base}/v1/{kind}s", json=body, headers=headers or {}, timeout=30)


def stored_counts(client: redis.Redis, stream: Stream, prefix: str = "pb") -> dict[str, Any]:
    """Every post's (impressions, clicks) and every forum's totals, as stored in Redis."""
    keys = Keys(prefix)
    forums = {f for s in stream.slates for f in s.posts.values()}
    forum_of = {p: f for s in stream.slates for p, f in s.posts.items()}
    stats = {f: {k.decode(): int(v) for k, v in client.hgetall(keys.stats(f)).items()}
             for f in forums}  # fmt: skip
    posts = {p: (stats[f].get(f"i:{p}", 0), stats[f].get(f"c:{p}", 0)) for p, f in forum_of.items()}
    totals = {f: (s.get("_i", 0), s.get("_c", 0)) for f, s in stats.items()}
    return {"posts": posts, "forums": totals}


def stored_forum_window(
    client: redis.Redis, stream: Stream, prefix: str = "pb"
) -> dict[str, tuple[int, int]]:
    """Every forum's windowed totals (``_wi``, ``_wc``), as stored in Redis."""
    keys = Keys(prefix)
    forums = {f for s in stream.slates for f in s.posts.values()}
    found = {}
    for forum in forums:
        wi, wc = client.hmget(keys.stats(forum), "_wi", "_wc")
        found[forum] = (int(wi or 0), int(wc or 0))
    return found


def expected_counts(stream: Stream) -> dict[str, Any]:
    return {"posts": stream.expected(), "forums": stream.forum_totals()}
