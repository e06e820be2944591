"""The pruned Thompson draw (bandits.topn) in the service's own path, against a real Redis:
the snapshot that the web tier loads carries a sampler per serving arm, built on the refresh
thread on exactly the candidates (and decayed counts) that the arm's policy reads, and
``app.service._choose`` (the function ``recommend`` calls) draws through it.

The distribution check: per-post slate and top-slot frequencies of R slates drawn by
``_choose`` and R by the policy's full draw on the same snapshot and exclusions, compared by
the chi-square homogeneity statistic of tests/bandits/test_topn.py at its 1 - 1e-4 quantile.
The pruned draw's slate differs from the coupled full draw's with probability <= DELTA = 1e-4,
which moves each frequency by at most 1e-4: far below the sampling error at R = 1,200 (a
frequency of 0.5 has a standard error of 0.014), so the tolerance is the sampling error's.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.plans import Arm
from app.runtime import Runtime
from app.samplers import DELTA, MIN_CANDIDATES, build_samplers
from app.schemas import RecommendationBody
from app.service import _choose
from app.snapshot_data import Snapshot
from bandits import make_policy
from core.process import PerProcess
from core.storage import Storage
from tests.bandits.test_topn import chi_square, world
from tests.test_experiments_serving import start

HOUR = 3600.0
R = 1_200


def populate(
    storage: Storage, n_posts: int, n_forums: int, seed: int, *, decayed: bool = False
) -> list[str]:
    """Posts ``p0..`` registered through the storage layer, with counts written into their
    forums' stats hashes (the layout of core/storage/keys.py: ``i:``/``c:`` per post, totals
    ``_i``/``_c``, windowed ``_wi``/``_wc``) rather than as millions of events: 1-5 % over
    50-2,000 impressions, five clear winners (10 % of 5,000) and 100 new posts; the forums
    also hold the counts of 50,000 older impressions. With ``decayed``, the same counts as
    decayed counters updated now (``di:``/``dc:``/``dt:``, ``_dwi``/``_dwc``/``_dt``)."""
    rng, now = np.random.default_rng(seed), time.time()
    forum = rng.integers(0, n_forums, n_posts)
    imps = rng.integers(50, 2_001, n_posts)
    clicks = rng.binomial(imps, rng.uniform(0.01, 0.05, n_posts))
    forum[:5], imps[:5], clicks[:5] = np.arange(5) % 2, 5_000, 500
    imps[-100:], clicks[-100:] = 0, 0
    post_ids = [f"p{i}" for i in range(n_posts)]
    for post_id, f in zip(post_ids, forum.tolist(), strict=True):
        storage.catalogue.put_post(post_id, f"f{f}", now, now + HOUR, retention=600)
    pipe = storage.client.pipeline(transaction=False)
    for f in range(n_forums):
        mine = np.flatnonzero(forum == f)
        fields = {f"i:p{i}": int(imps[i]) for i in mine if imps[i]}
        fields.update({f"c:p{i}": int(clicks[i]) for i in mine if clicks[i]})
        window = int(np.minimum(imps[mine], 20).sum()) + 1_000
        fields.update({"_i": int(imps[mine].sum()) + 50_000, "_c": int(clicks[mine].sum()) + 1_500,
                       "_wi": window, "_wc": round(window * 0.03)})  # fmt: skip
        if decayed:
            fields.update({f"d{name}": value for name, value in fields.items() if name[1] == ":"})
            fields.update({f"dt:p{i}": now for i in mine if imps[i]})
            fields.update({"_dwi": window, "_dwc": round(window * 0.03), "_dt": now})
        pipe.hset(storage.keys.stats(f"f{f}"), mapping=fields)
    pipe.execute()
    return post_ids


def seeded(rt: Runtime, seed: int) -> Runtime:
    """The runtime with a generator of a fixed seed (the process's is seeded by its pid)."""
    return dataclasses.replace(rt, generators=PerProcess(lambda: np.random.default_rng(seed)))


@pytest.fixture
def capped(config: dict[str, Any]) -> Any:
    app = create_app({**config, "BANDIT_PER_FORUM_CAP": "3"})
    yield app
    stop(app)


def stop(app: Flask) -> None:
    runtime: Runtime = app.extensions["postbandit"]
    runtime.snapshots.stop()
    runtime.storage.client.close()
    runtime.broker.close()


def test_served_slates_are_distributed_as_the_full_draws(capped: Flask) -> None:
    """With a per-forum cap, the member's exclusions, posts to hide (clicked, seen, withdrawn)
    and posts expired since the snapshot, as ``recommend`` draws them."""
    rt: Runtime = capped.extensions["postbandit"]
    post_ids = populate(rt.storage, 4_500, 15, seed=1)
    soon = time.time()
    for post_id in ("q0", "q1"):  # expire before the request's "now", not in the snapshot's
        rt.storage.catalogue.put_post(post_id, "f0", soon, soon + 30, retention=600)
    snap = rt.snapshots.get()
    assert snap is not None and snap.size == 4_502 and snap.plan is not None
    arm = snap.plan.arm("member")
    sampler = snap.samplers[None]
    assert sampler.policy is arm.policy and sampler.cands is snap.candidates and sampler.active
    assert sampler.delta == DELTA
    query = RecommendationBody(user_id="member", n=10, exclude=post_ids[:2])
    hidden, now = post_ids[2:4], soon + 60
    excluded = snap.excluded([*query.exclude, *hidden], now)
    assert excluded is not None and excluded.size == 6
    cap = rt.settings.per_forum_cap
    traces = [
        sampler.select_traced(10, np.random.default_rng(s), exclude=excluded, per_forum_cap=cap)[1]
        for s in range(30)
    ]
    # Most requests draw a quarter of the posts or fewer; the odd one draws all of them.
    assert sum(t.path == "pruned" for t in traces) >= 25 and max(t.bound for t in traces) <= DELTA
    assert np.median([t.drawn for t in traces]) < 0.3 * snap.size
    served = seeded(rt, 2)
    full_rng = np.random.default_rng(3)
    in_slate, at_top = np.zeros((2, snap.size)), np.zeros((2, snap.size))
    for _ in range(R):
        slate, items = _choose(served, snap, arm, query, hidden, now)
        full = arm.policy.select(snap.candidates, 10, full_rng, exclude=excluded,
                                 per_forum_cap=cap)  # fmt: skip
        for row, posts in enumerate((slate.posts, full.posts)):
            in_slate[row, posts] += 1
            at_top[row, posts[0]] += 1
        assert len(items) == 10 and not np.isin(slate.posts, excluded).any()
        assert np.bincount(snap.candidates.post_forum[slate.posts]).max() <= cap
    for counts in (in_slate, at_top):
        statistic, tolerance = chi_square(counts[0], counts[1])
        assert statistic < tolerance, (statistic, tolerance)


def test_below_the_threshold_the_service_draws_every_candidate(rt: Runtime) -> None:
    """Fewer than 4,000 candidates: no sampler, and ``_choose`` gives the policy's own slate
    for the same random stream. The 4,000th post brings a sampler, which a refresh that
    changes nothing keeps; with 2 forums allowed it hands the request to the policy too."""
    populate(rt.storage, MIN_CANDIDATES - 1, 15, seed=4)
    snap = rt.snapshots.get()
    assert snap is not None and snap.plan is not None and snap.samplers == {}
    assert_full_draws(rt, snap, RecommendationBody(user_id="m", n=10))
    rt.storage.catalogue.put_post("last", "f0", time.time(), time.time() + HOUR, retention=600)
    assert rt.snapshots.refresh()
    snap = rt.snapshots.get()
    assert snap is not None and snap.samplers[None].cands is snap.candidates
    assert snap.samplers[None].active
    assert_full_draws(rt, snap, RecommendationBody(user_id="m", n=10, forums=["f1", "f2"]))
    assert rt.snapshots.refresh()
    again = rt.snapshots.get()
    assert again is not None and again is not snap and again.candidates is snap.candidates
    assert again.samplers[None] is snap.samplers[None]


def assert_full_draws(rt: Runtime, snap: Snapshot, query: RecommendationBody) -> None:
    assert snap.plan is not None
    arm, now = snap.plan.arm(query.user_id), time.time()
    allowed = None if query.forums is None else snap.forum_indices(query.forums)
    served, rng = seeded(rt, 5), np.random.default_rng(5)
    for _ in range(20):
        slate, _ = _choose(served, snap, arm, query, [], now)
        full = arm.policy.select(snap.candidates, query.n, rng, allowed_forums=allowed)
        np.testing.assert_array_equal(slate.posts, full.posts)


def test_each_variant_draws_from_its_own_candidates(client: FlaskClient, rt: Runtime) -> None:
    populate(rt.storage, 4_000, 10, seed=7)
    start(client, "exp", [
        {"name": "wide", "policy": "two_level_ts", "params": {"exploration": 0.5}, "weight": 1},
        {"name": "flat", "policy": "flat_ts", "weight": 1},
        {"name": "mean", "policy": "greedy", "weight": 1},
    ])  # fmt: skip
    assert rt.snapshots.refresh()
    snap = rt.snapshots.get()
    assert snap is not None and snap.plan is not None and snap.plan.experiment == "exp"
    assert set(snap.samplers) == {"wide", "flat"}  # greedy cannot prune: no sampler
    for name, sampler in snap.samplers.items():
        assert sampler.policy is snap.plan.arms[name].policy
        assert sampler.cands is snap.candidates_of(name)
        assert snap.candidates_of(name) is not snap.candidates
    slate = snap.select(snap.plan.arms["mean"], 10, np.random.default_rng(8))
    assert slate.policy == "greedy" and len(slate) == 10


def test_with_a_half_life_the_sampler_reads_the_decayed_counts(config: dict[str, Any]) -> None:
    app = create_app({**config, "BANDIT_HALF_LIFE_SECONDS": "3600"})
    try:
        rt: Runtime = app.extensions["postbandit"]
        # Decayed counts as informative as the exact ones: a flat posterior (no decayed counts
        # at all) would leave the build's probe nothing to prune (bandits.topn).
        populate(rt.storage, 4_000, 10, seed=9, decayed=True)
        now = time.time()
        rt.storage.catalogue.put_post("seen", "f0", now, now + HOUR, retention=600)
        rt.storage.counting.apply_events("i", [("r1", "seen", "f0")], 600, at=now - HOUR)
        snap = rt.snapshots.get()
        assert snap is not None and snap.plan is not None
        arm, sampler = snap.plan.arm("m"), snap.samplers[None]
        assert arm.policy.half_life == 3600 and sampler.policy is arm.policy
        assert sampler.stats is snap.candidates.decayed(3600.0)
        seen = snap.post_index["seen"]
        assert 0.49 < sampler.stats.post_impressions[snap.candidate_of_row[seen]] < 0.51
        assert rt.snapshots.refresh()  # decayed counts: a new snapshot, and a new sampler
        again = rt.snapshots.get()
        assert again is not None and again.samplers[None].stats is again.candidates.decayed(3600.0)
        assert again.samplers[None] is not sampler
    finally:
        stop(app)


def test_a_snapshot_read_from_the_file_gets_its_sampler(
    rt: Runtime, config: dict[str, Any]
) -> None:
    """A process that starts while Redis is down serves the file's snapshot with the
    configured policy: its sampler is built when the file is read."""
    populate(rt.storage, 4_000, 10, seed=10)
    snap = rt.snapshots.get()
    down = create_app({**config, "REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        cold: Runtime = down.extensions["postbandit"]
        assert cold.snapshots._file is not None
        cold.snapshots._file.save(snap)  # as its last healthy sibling left it
        loaded = cold.snapshots.get()
        assert loaded is not None and loaded.plan is None and loaded.size == 4_000
        sampler = loaded.samplers[None]
        assert sampler.policy is cold.policy and sampler.cands is loaded.candidates
        slate = loaded.select(Arm(cold.policy), 10, np.random.default_rng(11))
        assert len(slate) == 10
    finally:
        stop(down)


def test_a_failed_build_leaves_the_policy_to_raise_in_the_request() -> None:
    """A half-life policy on candidates without count times: no sampler, and the request
    raises as the policy always did (no stale or wrong sampler is used)."""
    cands = world(np.random.default_rng(12), 4_000, 10)
    arm = Arm(make_policy("two_level_ts", half_life=60.0))
    assert build_samplers([arm], lambda _: cands, {}) == {}


def test_a_new_plan_keeps_the_bounds_only_for_an_equal_policy() -> None:
    """A refresh whose serving state changed rebuilds the arms' policies: an equal policy
    keeps the previous bounds (under the new policy object, which requests compare by
    identity), another policy gets its own."""
    cands = world(np.random.default_rng(13), 4_000, 10, top=12)  # bounds that prune
    before = build_samplers([Arm(make_policy("two_level_ts"))], lambda _: cands, {})
    equal = Arm(make_policy("two_level_ts"))
    kept = build_samplers([equal], lambda _: cands, before)[None]
    assert kept.policy is equal.policy and kept.post_hi is before[None].post_hi
    other = Arm(make_policy("two_level_ts", exploration=0.5))
    rebuilt = build_samplers([other], lambda _: cands, before)[None]
    assert rebuilt.policy is other.policy and rebuilt.post_hi is not before[None].post_hi
    assert not np.array_equal(rebuilt.post_hi, before[None].post_hi)
    moved = world(np.random.default_rng(14), 4_000, 10, top=12)  # new candidates: new bounds
    assert build_samplers([equal], lambda _: moved, before)[None].cands is moved


def test_a_sampler_of_another_policy_is_never_used() -> None:
    """``Snapshot.select`` draws with the arm's own policy when the sampler it holds for the
    arm's variant was built for another policy object."""
    cands = world(np.random.default_rng(15), 4_000, 10)
    built = build_samplers([Arm(make_policy("two_level_ts"))], lambda _: cands, {})
    rows = np.arange(4_000)
    snap = Snapshot(
        built_at=0.0, forum_ids=[f"f{i}" for i in range(10)], forum_index={},
        post_ids=[f"p{i}" for i in range(4_000)], post_index={}, rows=rows,
        candidate_of_row=rows, expires_at=np.full(4_000, np.inf), next_expiry=np.inf,
        candidates=cands, samplers=built,
    )  # fmt: skip
    arm = Arm(make_policy("two_level_ts", exploration=0.5))
    slate = snap.select(arm, 10, np.random.default_rng(16), per_forum_cap=2)
    same = arm.policy.select(cands, 10, np.random.default_rng(16), per_forum_cap=2)
    np.testing.assert_array_equal(slate.posts, same.posts)
