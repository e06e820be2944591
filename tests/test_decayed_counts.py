"""Decayed counts kept by the counting step against a real Redis: the closed form at known
times, in any order; duplicates and concurrent replays add nothing and decay nothing; exact
counts unchanged; pruning; the variants' decomposition; the snapshot hands the policy the
decayed statistics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.plans import Plans, build_plan
from app.snapshot import Refresher
from app.snapshot_file import SnapshotFile
from bandits import make_policy, post_posterior
from bandits.forgetting import decayed_update
from core.events import apply_batch
from core.storage import Served, SlateArm, Storage, new_request_id
from core.storage.counting import Event
from core.storage.decayed import CountFields
from core.storage.experiments import ServingState
from core.storage.snapshot_reads import VariantRead
from tests.conftest import register

H = 3600.0
T0 = 1_700_000_000.0
# (kind, request, post, time offset): two posts of forum f, one event out of order (t = 50
# after t = 5000), clicks with and without their impression counted before.
EVENTS = [
    ("i", "r1", "p", 0.0),
    ("i", "r2", "p", 100.0),
    ("c", "r1", "p", 700.5),
    ("i", "r3", "q", 1200.0),
    ("c", "r4", "p", 5000.0),  # its impression is counted with it, at 5000
    ("i", "r5", "p", 50.0),  # late: older than the counter's last update
    ("c", "r3", "q", 9000.25),
]
WINDOW = 2  # p's first two impressions (r1, r2) and their clicks count in _dwi/_dwc


def decayed(storage: Storage, *, window: int = WINDOW) -> Storage:
    return Storage(storage.client, "pb", forum_window=window, half_life=int(H))


def apply(storage: Storage, events: Sequence[tuple[str, str, str, float]], **kw: object) -> list:
    return [
        storage.counting.apply_events(kind, [(r, post, "f")], 600, at=T0 + t, **kw)  # type: ignore[arg-type]
        for kind, r, post, t in events
    ]


def closed_form(times: Sequence[float], at: float) -> float:
    """sum_i 2 ** (-(at - t_i) / H)."""
    return float(sum(2.0 ** (-(at - t) / H) for t in times))


def fields(client: redis.Redis, key: str = "pb:{f:f}:stats") -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall(key).items()}


def test_a_counter_holds_the_closed_form_at_its_last_update(storage: Storage) -> None:
    apply(decayed(storage), EVENTS)
    got = fields(storage.client)
    p_imps, p_clicks = [0.0, 100.0, 5000.0, 50.0], [700.5, 5000.0]
    assert got["dt:p"] == 5000.0 + T0  # the late event leaves the time where it was
    assert got["di:p"] == pytest.approx(closed_form(p_imps, 5000.0), rel=1e-12)
    assert got["dc:p"] == pytest.approx(closed_form(p_clicks, 5000.0), rel=1e-12)
    assert got["dt:q"] == 9000.25 + T0
    assert got["di:q"] == pytest.approx(closed_form([1200.0], 9000.25), rel=1e-12)
    assert got["dc:q"] == pytest.approx(1.0)
    assert got["_dt"] == 9000.25 + T0
    all_imps = [*p_imps, 1200.0]
    assert got["_di"] == pytest.approx(closed_form(all_imps, 9000.25), rel=1e-12)
    assert got["_dc"] == pytest.approx(closed_form([*p_clicks, 9000.25], 9000.25), rel=1e-12)
    # The window: p's impressions r1, r2 and the click of r1; q's impression and its click.
    assert got["_dwi"] == pytest.approx(closed_form([0.0, 100.0, 1200.0], 9000.25), rel=1e-12)
    assert got["_dwc"] == pytest.approx(closed_form([700.5, 9000.25], 9000.25), rel=1e-12)


def test_the_counter_equals_the_reference_update_applied_in_arrival_order(
    storage: Storage,
) -> None:
    apply(decayed(storage), EVENTS)
    value, last = np.float64(0.0), np.float64(-np.inf)
    for kind, _, post, t in EVENTS:
        if post == "p" and (kind == "i" or t == 5000.0):
            value, last = decayed_update(value, last if np.isfinite(last) else T0 + t, T0 + t, H, 1)
    assert fields(storage.client)["di:p"] == pytest.approx(float(value), rel=1e-12)


def test_an_out_of_order_event_weighs_what_it_weighs_at_the_counters_time(
    storage: Storage,
) -> None:
    apply(decayed(storage), [("i", "r1", "p", 7200.0), ("i", "r2", "p", 0.0)])
    got = fields(storage.client)
    assert (got["di:p"], got["dt:p"]) == (pytest.approx(1.25), T0 + 7200.0)


def test_exact_counts_are_those_of_a_service_without_a_half_life(storage: Storage) -> None:
    apply(decayed(storage), EVENTS)
    apply(Storage(storage.client, "exact", forum_window=WINDOW), EVENTS)
    with_decay = fields(storage.client)
    exact = fields(storage.client, "exact:{f:f}:stats")
    assert {k: v for k, v in with_decay.items() if "d" not in k} == exact
    assert not any("d" in k for k in exact)  # without a half-life none is kept


def test_a_duplicate_neither_adds_nor_decays(storage: Storage) -> None:
    store = decayed(storage)
    assert apply(store, EVENTS) != [[0]] * len(EVENTS)
    before = storage.client.hgetall("pb:{f:f}:stats")
    later = [(kind, r, post, t + 86_400.0) for kind, r, post, t in EVENTS]  # a day later
    assert apply(store, later) == [[0]] * len(EVENTS)
    assert storage.client.hgetall("pb:{f:f}:stats") == before


def test_replays_from_two_workers_at_once_count_each_event_once(
    storage: Storage, redis_url: str
) -> None:
    once = Storage(storage.client, "once", forum_window=WINDOW, half_life=int(H))
    apply(once, EVENTS)
    batches = [(kind, [(r, post, "f")], T0 + t) for kind, r, post, t in EVENTS]
    start = threading.Barrier(2)

    def worker(order: list[tuple[str, list[Event], float]]) -> None:
        client = redis.Redis.from_url(redis_url)
        store = decayed(Storage(client, "pb"))
        start.wait()
        for _ in range(3):  # redelivered, retried
            for kind, events, at in order:
                store.counting.apply_events(kind, events, 600, at=at)
        client.close()

    # The same batches, as a redelivered task brings them: each click's impression, counted
    # with it or before it, depends on the order, which a replay keeps.
    threads = [threading.Thread(target=worker, args=(batches,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replayed, single = fields(storage.client), fields(storage.client, "once:{f:f}:stats")
    assert replayed.keys() == single.keys()
    for name, value in single.items():
        assert replayed[name] == pytest.approx(value, rel=1e-12), name


def test_pruning_removes_a_posts_decayed_counts_and_keeps_the_forums(storage: Storage) -> None:
    store = decayed(storage)
    store.catalogue.put_post("p", "f", T0, T0 + 600, retention=60, now=T0)
    store.catalogue.put_post("q", "f", T0, T0 + 6000, retention=60, now=T0)
    apply(store, EVENTS)
    assert store.counting.prune_expired(T0 + 1000) == 1
    left = fields(storage.client)
    assert not [k for k in left if k.endswith(":p")]
    assert {"di:q", "dc:q", "dt:q", "_di", "_dc", "_dt"} <= left.keys()


def test_variants_decompose_exactly_at_a_common_time(storage: Storage) -> None:
    """Totals - all variants + own = the closed form of the events before the experiment and
    the variant's own, all read at one anchor."""
    store = decayed(storage, window=0)
    store.catalogue.put_post("p", "f", T0, T0 + 86_400, retention=60, now=T0)
    apply(store, [("i", "r0", "p", 0.0), ("c", "r0", "p", 10.0)])
    own = {"a": [("i", "ra", "p", 500.0), ("c", "ra", "p", 900.0)],
           "b": [("i", "rb", "p", 300.0), ("i", "rb2", "p", 4000.0)]}  # fmt: skip
    for variant, events in own.items():
        arms = {r: SlateArm("x", variant, 0) for _, r, _, _ in events}
        apply(store, events, arms=arms)
    anchor = T0 + 2000.0
    (read,) = store.snapshots.read_forums(["f"], T0, VariantRead("x", ("a", "b")), anchor)
    assert read.posts is not None
    totals = np.array([read.posts.impressions[0], read.posts.clicks[0]])
    every = np.array([read.variants["*"].impressions[0], read.variants["*"].clicks[0]])
    for variant, events in own.items():
        mine = read.variants[variant]
        view = totals - every + [mine.impressions[0], mine.clicks[0]]
        times = [(k, t) for k, _, _, t in [("i", "", "", 0.0), ("c", "", "", 10.0), *events]]
        expected = [closed_form([t for k, t in times if k == kind], 2000.0) for kind in "ic"]
        assert view == pytest.approx(expected, rel=1e-9), variant


def test_the_forum_counts_read_are_the_policys(storage: Storage) -> None:
    """A reader gets the windowed decayed totals with a window, every impression without."""
    for window, imps in ((WINDOW, [0.0, 100.0, 1200.0]), (0, [0.0, 100.0, 5000.0, 50.0, 1200.0])):
        storage.client.flushdb()
        store = decayed(storage, window=window)
        store.catalogue.put_post("p", "f", T0, T0 + 86_400, retention=60, now=T0)
        apply(store, EVENTS)
        (read,) = store.snapshots.read_forums(["f"], T0, None, T0 + 10_000.0)
        assert read.policy_counts[0] == pytest.approx(closed_form(imps, 10_000.0), rel=1e-12)


def test_count_fields_read_a_missing_counter_as_zero() -> None:
    fields_ = CountFields.of(0, H)
    assert list(fields_.counts([None, None, None], T0)) == [(0.0, 0.0)]
    assert list(fields_.counts([b"4", b"2", str(T0 - H).encode()], T0)) == [(2.0, 1.0)]


def test_with_a_half_life_an_old_favourite_loses_to_a_fresh_post(storage: Storage) -> None:
    """Through the snapshot: exact counts rank the post clicked often ten hours ago first;
    decayed ones (half-life one hour) rank the post clicked now first."""
    now = time.time()
    for prefix, half_life in (("exact", 0), ("decay", int(H))):
        store = Storage(storage.client, prefix, forum_window=0, half_life=half_life)
        for post in ("old", "fresh", "dud"):
            store.catalogue.put_post(post, "f", now - 40_000, now + 3600, retention=60, now=now)
        _events(store, "old", 100, 50, now - 10 * H)
        _events(store, "fresh", 10, 3, now - 60)
        _events(store, "dud", 200, 2, now - 60)
        snap = Refresher(store)()
        policy = make_policy("greedy", prior_strength=10.0, half_life=half_life or None)
        slate = policy.select(snap.candidates, 1, np.random.default_rng(0))
        (chosen,) = [post for post, _ in snap.items(slate.posts)]
        assert chosen == ("old" if half_life == 0 else "fresh"), prefix
        if half_life:
            cands = snap.candidates.decayed(H)
            old = snap.post_index["old"]
            at = snap.candidates.as_of
            assert at == snap.built_at
            expected = 100 * 2.0 ** (-(at - (now - 10 * H)) / H)
            assert cands.post_impressions[snap.candidate_of_row[old]] == pytest.approx(expected)


def _events(store: Storage, post: str, imps: int, clicks: int, at: float) -> None:
    impressions = [(f"{post}{i}", post, "f") for i in range(imps)]
    store.counting.apply_events("i", impressions, 600, at=at)
    store.counting.apply_events("c", impressions[:clicks], 600, at=at)


@pytest.mark.parametrize("half_life", [0, int(H)])
def test_the_snapshot_file_serves_a_policy_with_a_half_life(
    storage: Storage, tmp_path: Path, half_life: int
) -> None:
    """A file saved with decayed counts loads them back as they were; one saved with exact
    counts reads as counted when it was built. Either serves a policy with a half-life."""
    now = time.time()
    store = Storage(storage.client, "pb", half_life=half_life)
    store.catalogue.put_post("p", "f", now, now + 3600, retention=60, now=now)
    _events(store, "p", 10, 3, now - H)
    saved = Refresher(store)()
    file = SnapshotFile(tmp_path / "s.npz")
    file.save(saved)
    loaded = file.load()
    assert loaded is not None
    policy = make_policy("two_level_ts", half_life=H)
    slate = policy.select(loaded.candidates, 1, np.random.default_rng(0))
    assert loaded.items(slate.posts) == [("p", "f")]
    expected = saved.candidates.decayed(H) if half_life else saved.candidates
    assert loaded.candidates.decayed(H).post_impressions.tolist() == pytest.approx(
        expected.post_impressions.tolist()
    )


def test_an_event_counts_when_accepted_and_never_ahead_of_the_workers_clock(
    storage: Storage,
) -> None:
    store = decayed(storage)
    now = time.time()
    store.catalogue.put_post("p", "f", now, now + 3600, retention=60, now=now)
    slates = [Served(new_request_id("u"), "u", "random", {"p": "f"}) for _ in range(2)]
    for slate in slates:
        store.serving.serve(slate, 3600)
    late = apply_batch(store, "impression", [[slates[0].request_id, "p"]], now, 3600, 60,
                       accepted_at=now - 30)  # fmt: skip
    assert late.results == {"counted": 1}
    assert fields(storage.client)["dt:p"] == now - 30  # accepted then, applied now
    # Accepted by a web host whose clock runs ahead of the worker's.
    ahead = apply_batch(store, "impression", [[slates[1].request_id, "p"]], now, 3600, 60,
                        accepted_at=now + 1000)  # fmt: skip
    assert ahead.results == {"counted": 1}
    got = fields(storage.client)
    assert (got["dt:p"], got["di:p"]) == (now, pytest.approx(1 + 2 ** (-30 / H)))


def test_incremental_refreshes_pick_up_decayed_changes(storage: Storage) -> None:
    store = decayed(storage, window=0)
    now = time.time()
    for post in ("p", "q"):
        store.catalogue.put_post(post, "f", now, now + 3600, retention=60, now=now)
    refresh = Refresher(store)
    first = refresh()
    _events(store, "p", 4, 1, now - H)
    _events(store, "q", 2, 2, now)
    incremental, full = refresh(), Refresher(store)()
    assert incremental.candidates is not first.candidates
    for snap in (incremental, full):
        cands = snap.candidates.decayed(H)
        at = snap.candidates.as_of
        assert at is not None
        index = {post: snap.candidate_of_row[snap.post_index[post]] for post in ("p", "q")}
        expected = {"p": (4 * 2 ** (-(at - now + H) / H), 2 ** (-(at - now + H) / H)),
                    "q": (2 * 2 ** (-(at - now) / H), 2 * 2 ** (-(at - now) / H))}  # fmt: skip
        for post, (imps, clicks) in expected.items():
            got = (cands.post_impressions[index[post]], cands.post_clicks[index[post]])
            assert got == (pytest.approx(imps, rel=1e-9), pytest.approx(clicks, rel=1e-9))
        assert cands.forum_impressions[0] == pytest.approx(expected["p"][0] + expected["q"][0])


def test_every_policy_of_a_plan_that_reads_counts_takes_the_half_life() -> None:
    variants = [
        {"name": "a", "policy": "two_level_ts", "params": {"prior_strength": 5.0}, "weight": 1},
        {"name": "b", "policy": "random", "params": {}, "weight": 1},
    ]
    promoted = {"policy": "greedy", "params": {"prior_strength": 10.0}}
    state = ServingState(1, "x", {"variants": variants}, promoted)
    plan = build_plan(state, make_policy("flat_ts"), H)
    assert plan.default.policy == make_policy("greedy", prior_strength=10.0, half_life=H)
    assert plan.arms["a"].policy == make_policy("two_level_ts", prior_strength=5.0, half_life=H)
    assert plan.arms["b"].policy == make_policy("random")
    assert build_plan(state, make_policy("flat_ts")).arms["a"].policy.half_life is None  # type: ignore[attr-defined]


def test_each_variant_of_a_snapshot_sees_the_decayed_counts_of_its_own_slates(
    storage: Storage,
) -> None:
    """Through the refresh: with a half-life each variant's candidates hold the decayed counts
    of the events before the experiment and of its own slates, and its policy reads them."""
    store = decayed(storage, window=0)
    now = time.time()
    store.catalogue.put_post("p", "f", now, now + 3600, retention=60, now=now)
    _events(store, "p", 4, 2, now - H)  # before the experiment
    variants = [{"name": v, "policy": "greedy", "params": {"prior_strength": 10.0}, "weight": 1}
                for v in ("a", "b")]  # fmt: skip
    definition = json.dumps({"variants": variants, "control": "a"})
    assert store.experiments.start("x", definition, now)[0] == "created"
    for variant, (imps, at) in {"a": (8, now - 60), "b": (2, now - 2 * H)}.items():
        events = [(f"{variant}{i}", "p", "f") for i in range(imps)]
        arms = {r: SlateArm("x", variant, 0) for r, _, _ in events}
        store.counting.apply_events("i", events, 600, arms, at=at)
    snap = Refresher(store, Plans(make_policy("greedy"), H))()
    assert snap.plan is not None and snap.plan.arms["a"].policy.half_life == H  # type: ignore[attr-defined]
    at = snap.built_at
    weight = {"before": 2 ** (-(at - now + H) / H), "a": 2 ** (-(at - now + 60) / H),
              "b": 2 ** (-(at - now + 2 * H) / H)}  # fmt: skip
    for variant, own in (("a", 8 * weight["a"]), ("b", 2 * weight["b"])):
        cands = snap.variant_candidates[variant].decayed(H)
        expected = (4 * weight["before"] + own, 2 * weight["before"])
        assert (cands.post_impressions[0], cands.post_clicks[0]) == pytest.approx(expected)
        assert cands.forum_impressions[0] == pytest.approx(expected[0])
        slate = snap.plan.arms[variant].policy.select(
            snap.variant_candidates[variant], 1, np.random.default_rng(0)
        )
        assert snap.items(slate.posts) == [("p", "f")]


def test_a_new_life_of_a_post_id_inherits_no_decayed_counts(storage: Storage) -> None:
    store = decayed(storage)
    store.catalogue.put_post("p", "f", T0, T0 + 600, retention=60, now=T0)
    apply(store, EVENTS)
    storage.client.delete("pb:{f:f}:post:p")  # its metadata expired; the counts were left
    assert store.catalogue.put_post("p", "f", T0, T0 + 600, retention=60, now=T0)
    assert not [k for k in fields(storage.client) if k.endswith(":p")]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("ic"),
            st.sampled_from(["r1", "r2", "r3"]),
            st.sampled_from(["p", "q"]),
            st.integers(0, 40_000),
        ),
        max_size=25,
    ),
    st.booleans(),
)
def test_any_sequence_with_repeats_holds_the_closed_form_of_what_counted(
    storage: Storage, events: list[tuple[str, str, str, int]], twice: bool
) -> None:
    """Events in any order, repeated or not: each counter holds, at its latest time, the
    closed form of the events that counted (a click without its impression counts it too)."""
    storage.client.flushdb()
    store = decayed(storage, window=0)
    for kind, request, post, t in events * (2 if twice else 1):
        store.counting.apply_events(kind, [(request, post, "f")], 600, at=T0 + t)
    counted: dict[str, list[tuple[str, float]]] = {"p": [], "q": []}
    seen: set[tuple[str, str, str]] = set()
    for kind, request, post, t in events:
        if (kind, request, post) in seen:
            continue
        if ("i", request, post) not in seen:
            seen.add(("i", request, post))
            counted[post].append(("i", float(t)))
        if kind == "c":
            seen.add(("c", request, post))
            counted[post].append(("c", float(t)))
    got = fields(storage.client)
    for post, found in counted.items():
        if not found:
            assert f"dt:{post}" not in got
            continue
        last = max(t for _, t in found)
        assert got[f"dt:{post}"] == T0 + last
        for kind in "ic":
            expected = closed_form([t for k, t in found if k == kind], last)
            assert got[f"d{kind}:{post}"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    every = [kt for found in counted.values() for kt in found]
    if every:
        last = max(t for _, t in every)
        expected = closed_form([t for k, t in every if k == "i"], last)
        assert got["_di"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_post_and_forum_views_show_what_the_policy_reads(config: dict[str, str]) -> None:
    """With a half-life the posterior of GET /v1/posts and the forum's policy counts come
    from the decayed counts, beside the exact totals."""
    app = create_app({**config, "BANDIT_HALF_LIFE_SECONDS": str(int(H)),
                      "BANDIT_FORUM_WINDOW": "0"})  # fmt: skip
    try:
        client, store = app.test_client(), app.extensions["postbandit"].storage
        register(client, "p", "f")
        now = time.time()
        _events(store, "p", 8, 4, now - 2 * H)  # a quarter of their weight left
        before = time.time()
        body = client.get("/v1/posts/p").json
        assert (body["impressions"], body["clicks"], body["half_life_seconds"]) == (8, 4, H)
        quarter = 2 ** (-(before - now + 2 * H) / H)
        assert body["decayed"] == {"impressions": pytest.approx(8 * quarter, rel=1e-3),
                                   "clicks": pytest.approx(4 * quarter, rel=1e-3)}  # fmt: skip
        decayed = body["decayed"]
        alpha, beta = post_posterior(
            [decayed["impressions"]], [decayed["clicks"]], [decayed["impressions"]],
            [decayed["clicks"]], decayed["impressions"], decayed["clicks"], 10.0,
        )  # fmt: skip
        assert (body["posterior"]["alpha"], body["posterior"]["beta"]) == pytest.approx(
            (alpha[0], beta[0]), rel=1e-3
        )
        forum = client.get("/v1/forums/f").json
        assert (forum["impressions"], forum["clicks"]) == (8, 4)
        assert forum["policy_counts"]["half_life_seconds"] == H
        assert forum["policy_counts"]["impressions"] == pytest.approx(8 * quarter, rel=1e-3)
    finally:
        app.extensions["postbandit"].snapshots.stop()


def test_experiment_counts_and_results_are_those_of_a_service_without_a_half_life(
    storage: Storage,
) -> None:
    for prefix, half_life in (("pb", int(H)), ("exact", 0)):
        store = Storage(storage.client, prefix, forum_window=WINDOW, half_life=half_life)
        for variant in ("a", "b"):
            events = [(k, f"{variant}{r}", p, t) for k, r, p, t in EVENTS]
            apply(store, events, arms={f"{variant}{r}": SlateArm("x", variant, 3)
                                       for _, r, _, _ in EVENTS})  # fmt: skip
    for key in ("vstats", "xres"):
        with_decay = fields(storage.client, f"pb:{{f:f}}:{key}:x")
        exact = fields(storage.client, f"exact:{{f:f}}:{key}:x")
        assert exact and {k: v for k, v in with_decay.items() if "|d" not in k
                          and "|_d" not in k} == exact, key  # fmt: skip
    assert any("|_dt" in k for k in fields(storage.client, "pb:{f:f}:vstats:x"))
