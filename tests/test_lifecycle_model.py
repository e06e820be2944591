"""A stateful model test of the post and event lifecycle against the real Redis, through the
storage layer, core.events.apply_batch and the snapshot's catalogue, with an injected clock.

Rules: register or update a post, withdraw it, refresh a snapshot, serve a slate from it,
post events (fresh ones, duplicates and replays of old ones), let time pass (within and past
TTLs, windows and tombstones; Redis's TTLs move with the clock, tests/redis_clock.py), prune.
Invariants: the storage equals the model (every post's record, counts, forum totals, which
forums are active); a withdrawn post is never served nor registered again while its id is
claimed; a post's counts live in one forum only; every attributable event counts exactly
once; no key without a TTL grows per request, member or event.

``LIFECYCLE_EXAMPLES`` raises the number of examples (README, "Tests"), e.g. 2000.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from app.snapshot import Catalogue as SnapshotCatalogue
from app.snapshot import Snapshot
from core.events import COUNTED, apply_batch
from core.storage import PostConflict, Served, Storage, new_request_id
from core.storage.catalogue import TOMBSTONE_GRACE_SECONDS, WITHDRAWN_KEEP_SECONDS
from tests.redis_clock import advance

WINDOW = 2000  # attribution window, and the metadata's retention past expiry
RECLICK = 500
FULL_RELOAD = 300  # as app.snapshot.FULL_RELOAD_SECONDS
POSTS = [f"p{i}" for i in range(5)]
FORUMS = ["f0", "f1", "f2"]
USERS = ["u0", "u1", "u2"]
STEPS = [400, 1000, 2500, TOMBSTONE_GRACE_SECONDS + 10 * WINDOW]
EXAMPLES = int(os.environ.get("LIFECYCLE_EXAMPLES", "40"))


@dataclass
class Post:
    """What the model knows of one id: its claim (tombstone), its metadata and its state."""

    forum: str
    created: float
    expires: float
    withdrawn: bool
    meta_until: float
    claim_until: float


class Lifecycle(RuleBasedStateMachine):
    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        client.flushdb()
        self.client = client
        self.storage = Storage(client, "pb")
        self.now = float(int(time.time()))  # whole seconds: every boundary is exact
        self.posts: dict[str, Post] = {}
        self.live: dict[tuple[str, str], float] = {}  # (forum, post) -> score in the live set
        self.gone: dict[tuple[str, str], float] = {}  # (forum, post) -> withdrawal time
        self.counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.active: set[str] = set()
        self.slates: list[tuple[str, dict[str, str], float]] = []  # (request, posts, served at)
        self.seen: set[tuple[str, str, str]] = set()
        self.snapshot_catalogue = SnapshotCatalogue()
        self.snapshot: Snapshot | None = None
        self.full_at = self.now

    # -- the model's view -------------------------------------------------------------------

    def claimed(self, post_id: str) -> Post | None:
        post = self.posts.get(post_id)
        return post if post is not None and post.claim_until > self.now else None

    def is_live(self, post_id: str) -> bool:
        post = self.claimed(post_id)
        return post is not None and not post.withdrawn and post.expires > self.now

    def claim_for(self, expires: float) -> float:
        return self.now + math.ceil(max(expires - self.now, 0) + WINDOW + TOMBSTONE_GRACE_SECONDS)

    # -- rules ------------------------------------------------------------------------------

    @rule(post_id=st.sampled_from(POSTS), forum=st.sampled_from(FORUMS),
          lifetime=st.sampled_from([500, 3000, 10_000]))  # fmt: skip
    def register(self, post_id: str, forum: str, lifetime: int) -> None:
        post = self.claimed(post_id)
        meta = post is not None and post.meta_until > self.now
        refused = post is not None and (post.forum != forum or (meta and post.withdrawn))
        try:
            put = self.storage.catalogue.register(post_id, forum, self.now, WINDOW,
                                                  lifetime=lifetime)  # fmt: skip
        except PostConflict:
            assert refused, (post_id, forum, post)
            return
        assert not refused, (post_id, forum, post)
        assert put.created == (not meta)
        created = post.created if meta and post is not None else self.now
        if not meta:
            self._forget_counts(forum, post_id)
            self.gone.pop((forum, post_id), None)
        expires = created + lifetime
        claim = max(post.claim_until if post else 0, self.claim_for(expires))
        meta_until = self.now + math.ceil(max(expires - self.now, 0) + WINDOW)
        self.posts[post_id] = Post(forum, created, expires, False, meta_until, claim)
        self.live[(forum, post_id)] = expires
        self.active.add(forum)

    @rule(post_id=st.sampled_from(POSTS))
    def withdraw(self, post_id: str) -> None:
        post = self.claimed(post_id)
        assert self.storage.catalogue.delete_post(post_id, self.now, WINDOW) == (post is not None)
        if post is None:
            return
        until = self.now + WINDOW + TOMBSTONE_GRACE_SECONDS
        post.withdrawn, post.meta_until = True, until
        post.claim_until = max(post.claim_until, until)
        self.live.pop((post.forum, post_id), None)
        self.gone.setdefault((post.forum, post_id), self.now)
        self.active.add(post.forum)

    @rule()
    def refresh(self) -> None:
        """A web process's refresh: what changed, or everything every FULL_RELOAD seconds."""
        if self.now - self.full_at >= FULL_RELOAD:
            self.snapshot_catalogue, self.full_at = SnapshotCatalogue(), self.now
        catalogue = self.snapshot_catalogue
        reads = self.storage.snapshots.read_changes(catalogue.cursors, self.now)
        new = catalogue.new_posts(reads)
        times = self.storage.snapshots.created_at(new)
        catalogue.apply(reads, {post_id: at for (post_id, _), at in zip(new, times, strict=True)})
        self.snapshot = catalogue.snapshot(self.now, self.now)
        served = {p for p, _ in self.snapshot.items(self._candidates(self.snapshot))}
        assert served == {p for p in self.posts if self.is_live(p)}

    @rule(user=st.sampled_from(USERS), data=st.data())
    def serve(self, user: str, data: st.DataObject) -> None:
        """Serve up to three of the snapshot's candidates, checked as the web tier does."""
        if self.snapshot is None or self.now - self.snapshot.built_at > WITHDRAWN_KEEP_SECONDS / 2:
            self.refresh()  # a web process refreshes every second while Redis is up
        assert self.snapshot is not None
        items = self.snapshot.items(self._candidates(self.snapshot))
        if not items:
            return
        slate = dict(data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=3)))
        request_id = new_request_id(user, self.now)
        served = Served(request_id, user, "two_level_ts", slate)
        found = self.storage.serving.to_hide(user, self.now - RECLICK,
                                             self.snapshot.built_at - 5.0)  # fmt: skip
        if {*found.clicked, *found.withdrawn} & slate.keys():
            return  # the web tier chooses without the posts to hide
        self.storage.serving.serve(served, WINDOW)
        assert all(self.is_live(p) and self.posts[p].forum == f for p, f in slate.items()), slate
        self.slates.append((request_id, slate, self.now))

    @rule(kind=st.sampled_from(["impression", "click"]), data=st.data())
    def post_events(self, kind: str, data: st.DataObject) -> None:
        """Events of a served slate (any, long expired ones too), some twice, and some for a
        post it did not hold."""
        if not self.slates:
            return
        request_id, slate, served_at = data.draw(st.sampled_from(self.slates))
        posts = data.draw(st.lists(st.sampled_from([*slate, *POSTS]), min_size=1, max_size=4))
        outcome = apply_batch(self.storage, kind, [[request_id, p] for p in posts], self.now,
                              WINDOW, RECLICK)  # fmt: skip
        counted = 0
        for post_id in posts:
            attributable = post_id in slate and served_at + WINDOW > self.now
            if attributable and self._count(kind[0], request_id, post_id, slate[post_id]):
                counted += 1
        assert outcome.results[COUNTED] == counted, (outcome, posts, slate)
        assert sum(outcome.results.values()) == len(posts)

    @rule(step=st.sampled_from(STEPS))
    def let_time_pass(self, step: int) -> None:
        self.now += step
        advance(self.client, step)
        if step > TOMBSTONE_GRACE_SECONDS:
            self.prune()  # a sweeper runs every minute of those days

    @rule()
    def prune(self) -> None:
        before = self.now - WINDOW
        expected = 0
        for entries in (self.live, self.gone):
            for forum, post_id in [k for k, at in entries.items() if at < before]:
                del entries[(forum, post_id)]
                self._forget_counts(forum, post_id)
                expected += 1
        assert self.storage.counting.prune_expired(before) == expected
        busy = {f for f, _ in self.live} | {f for f, _ in self.gone}
        self.active &= busy

    # -- helpers ----------------------------------------------------------------------------

    def _candidates(self, snapshot: Snapshot) -> list[int]:
        excluded = snapshot.excluded([], self.now)
        hidden = set() if excluded is None else set(excluded.tolist())
        return [i for i in range(snapshot.size) if i not in hidden]

    def _count(self, kind: str, request_id: str, post_id: str, forum: str) -> bool:
        """Count an attributable event in the model; whether it was new."""
        new = False
        for k in ("i", "c") if kind == "c" else ("i",):
            if (k, request_id, post_id) not in self.seen:
                self.seen.add((k, request_id, post_id))
                self.counts[(forum, post_id)][k == "c"] += 1
                self.totals[forum][k == "c"] += 1
                new = new or k == kind
        return new

    def _forget_counts(self, forum: str, post_id: str) -> None:
        self.counts.pop((forum, post_id), None)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def counts_and_totals_match(self) -> None:
        """Each forum's per-post fields are the model's counts (so a post's counts live in one
        forum, its current one or one not yet pruned), and its totals are every count ever
        made there: the posts' plus what pruning removed."""
        owners: Counter[str] = Counter()
        for forum in FORUMS:
            stats = {k.decode(): int(v) for k, v in self.client.hgetall(f"pb:{{f:{forum}}}:stats").items()}  # fmt: skip # noqa: E501
            fields = {k: v for k, v in stats.items() if ":" in k}
            expected = {}
            for (f, post_id), (imps, clicks) in self.counts.items():
                if f == forum and imps:
                    expected[f"i:{post_id}"] = imps
                    if clicks:
                        expected[f"c:{post_id}"] = clicks
            assert fields == expected, (forum, fields, expected)
            assert (stats.get("_i", 0), stats.get("_c", 0)) == tuple(self.totals[forum])
            owners.update({k[2:] for k in fields})
        assert all(n == 1 for n in owners.values()), owners

    @invariant()
    def catalogue_matches(self) -> None:
        for post_id in POSTS:
            post = self.claimed(post_id)
            record = self.storage.catalogue.get_post(post_id)
            if post is None or post.meta_until <= self.now:
                assert record is None, (post_id, record)
                continue
            assert record is not None and record.forum_id == post.forum, (post_id, post)
            assert record.deleted == post.withdrawn
            if not post.withdrawn:
                assert record.expires_at == post.expires
        assert self.storage.catalogue.forum_ids() == sorted(self.active)

    @invariant()
    def lasting_keys_are_bounded(self) -> None:
        """Every key without a TTL is one of the bounded sets, and those hold only what the
        model holds."""
        bounded = re.compile(r"pb:(forums:active|withdrawn|\{f:f\d\}:(live|stats|changes|gone))")
        for key in self.client.scan_iter(count=1000):
            if self.client.ttl(key) == -1:
                assert bounded.fullmatch(key.decode()), key
        for forum in FORUMS:
            live = {p.decode() for p in self.client.zrange(f"pb:{{f:{forum}}}:live", 0, -1)}
            gone = {p.decode() for p in self.client.zrange(f"pb:{{f:{forum}}}:gone", 0, -1)}
            assert live == {p for f, p in self.live if f == forum}
            assert gone == {p for f, p in self.gone if f == forum}


def test_the_lifecycle_follows_its_model(rclient: redis.Redis) -> None:
    run_state_machine_as_test(
        lambda: Lifecycle(rclient),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None,
                          derandomize=True, suppress_health_check=list(HealthCheck)),
    )  # fmt: skip
