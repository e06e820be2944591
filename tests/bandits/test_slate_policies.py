"""Slate invariants of every policy: properties, large explicit cases, invalid arguments."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandits import POLICIES, Candidates, Slate, make_policy
from bandits.slate import top_with_cap

# Slot order: by score, except two_level_ts (by posterior mean) and epsilon_greedy (explored
# posts scattered over random slots).
BY_SCORE = ("flat_ts", "greedy", "random", "recent", "explore")

FIELDS = ("post_forum", "post_impressions", "post_clicks", "forum_impressions", "forum_clicks")


def cands_of(*arrays):
    """Candidates from the five arrays in their documented order (the API is keyword-only),
    with creation times (for ``recent``) in candidate order."""
    created = np.arange(len(arrays[0]), dtype=np.float64)
    return Candidates(**dict(zip(FIELDS, arrays, strict=True)), post_created_at=created)


def random_candidates(rng, n_posts, n_forums, max_imps=1000):
    forum = rng.integers(0, n_forums, n_posts)
    imps = rng.integers(0, max_imps + 1, n_posts)
    clicks = rng.binomial(imps, rng.uniform(0.005, 0.1, n_posts))
    extra = rng.integers(0, 1000, n_forums)  # impressions of expired posts
    f_imps = np.bincount(forum, imps, n_forums) + extra
    f_clicks = np.bincount(forum, clicks, n_forums) + rng.binomial(extra, 0.03)
    cands = cands_of(forum, imps, clicks, f_imps, f_clicks)
    return Candidates.unchecked(
        post_forum=cands.post_forum, post_impressions=cands.post_impressions,
        post_clicks=cands.post_clicks, forum_impressions=cands.forum_impressions,
        forum_clicks=cands.forum_clicks, post_created_at=rng.uniform(0, 1e9, n_posts),
    )  # fmt: skip


def expected_length(cands, n, allowed, exclude, cap):
    eligible = np.ones(cands.n_posts, bool)
    if allowed is not None:
        eligible &= np.isin(cands.post_forum, allowed)
    if exclude is not None:
        eligible[exclude] = False
    per_forum = np.bincount(cands.post_forum[eligible], minlength=cands.n_forums)
    room = per_forum.sum() if cap is None else np.minimum(per_forum, cap).sum()
    return min(n, int(room)), eligible


def check_slate(slate, cands, n, kwargs, policy):
    """The slate invariants, for ``select(cands, n, rng, **kwargs)``."""
    allowed, exclude = kwargs.get("allowed_forums"), kwargs.get("exclude")
    cap = None if policy == "explore" else kwargs.get("per_forum_cap")  # explore ignores it
    length, eligible = expected_length(cands, n, allowed, exclude, cap)
    assert isinstance(slate, Slate) and slate.policy == policy
    assert len(slate) == length
    assert slate.eligible == int(eligible.sum())
    for array in (slate.scores, slate.alpha, slate.beta):
        assert array.shape == slate.posts.shape
    assert slate.posts.dtype == np.intp
    assert len(np.unique(slate.posts)) == length
    assert np.all(eligible[slate.posts])
    if cap is not None and length:
        assert np.bincount(cands.post_forum[slate.posts]).max() <= cap
    assert np.all(slate.alpha > 0) and np.all(slate.beta > 0)
    if policy in BY_SCORE:
        assert np.all(np.diff(slate.scores) <= 0)
    if policy == "two_level_ts":
        assert np.all(np.diff(slate.alpha / (slate.alpha + slate.beta)) <= 0)
    if policy == "explore":
        np.testing.assert_array_equal(
            slate.propensities, np.full(length, 1 / max(1, slate.eligible))
        )
    else:
        assert slate.propensities is None


@st.composite
def requests(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_forums = draw(st.integers(1, 6))
    cands = random_candidates(
        rng, draw(st.integers(0, 40)), n_forums, draw(st.sampled_from([0, 5, 500]))
    )
    allowed = draw(st.none() | st.lists(st.integers(0, n_forums - 1), max_size=n_forums))
    exclude = None
    if cands.n_posts:
        exclude = draw(st.none() | st.lists(st.integers(0, cands.n_posts - 1), max_size=10))
    as_array = lambda v: None if v is None else np.array(v, np.intp)  # noqa: E731
    return {
        "cands": cands,
        "n": draw(st.integers(1, 15)),
        "allowed": as_array(allowed),
        "exclude": as_array(exclude),
        "cap": draw(st.none() | st.integers(1, 4)),
        "policy": draw(st.sampled_from(POLICIES)),
        "seed": seed,
    }


@settings(max_examples=150, deadline=None)
@given(req=requests())
def test_slate_invariants_hold_for_every_policy(req):
    policy = make_policy(req["policy"])
    kwargs = {
        "allowed_forums": req["allowed"],
        "exclude": req["exclude"],
        "per_forum_cap": req["cap"],
    }
    slate = policy.select(req["cands"], req["n"], np.random.default_rng(req["seed"]), **kwargs)
    check_slate(slate, req["cands"], req["n"], kwargs, req["policy"])
    again = policy.select(req["cands"], req["n"], np.random.default_rng(req["seed"]), **kwargs)
    np.testing.assert_array_equal(slate.posts, again.posts)
    np.testing.assert_array_equal(slate.scores, again.scores)


@settings(max_examples=150, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60, unique=True),
    n=st.integers(1, 12),
    cap=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_top_with_cap_equals_the_obvious_greedy_loop(scores, n, cap, seed):
    scores = np.array(scores)
    forums = np.random.default_rng(seed).integers(0, 4, scores.shape[0])
    expected, used = [], {}
    for pos in np.argsort(-scores):
        if len(expected) < n and used.get(forums[pos], 0) < cap:
            expected.append(pos)
            used[forums[pos]] = used.get(forums[pos], 0) + 1
    got = top_with_cap(scores, forums, n, scores.shape[0], cap)
    np.testing.assert_array_equal(got, expected)


LARGE = [
    {},
    {"per_forum_cap": 1},
    {"per_forum_cap": 2, "exclude": np.arange(0, 100_000, 3)},
    {"allowed_forums": np.array([3, 7, 11]), "exclude": np.arange(50_000)},
    {"allowed_forums": np.array([5]), "per_forum_cap": 4},
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kwargs", LARGE, ids=["plain", "cap1", "cap2+excl", "allowed+excl", "one"])
def test_large_candidate_sets(policy, kwargs):
    cands = random_candidates(np.random.default_rng(7), 100_000, 50)
    slate = make_policy(policy).select(cands, 10, np.random.default_rng(1), **kwargs)
    check_slate(slate, cands, 10, kwargs, policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_empty_and_tiny_candidate_sets(policy):
    rng = np.random.default_rng(3)
    pol = make_policy(policy)
    empty = cands_of(np.zeros(0, np.intp), [], [], [0], [0])
    assert len(pol.select(empty, 5, rng)) == 0
    one = cands_of(np.array([0]), [3], [1], [3], [1])
    assert pol.select(one, 5, rng).posts.tolist() == [0]
    assert len(pol.select(one, 5, rng, exclude=np.array([0]))) == 0
    assert len(pol.select(one, 5, rng, allowed_forums=np.array([], np.intp))) == 0
    three = cands_of(np.array([0, 0, 0]), [3, 3, 3], [1, 1, 1], [9], [3])
    assert sorted(pol.select(three, 10, rng).posts.tolist()) == [0, 1, 2]
    assert len(pol.select(three, 10, rng, per_forum_cap=2)) == (3 if policy == "explore" else 2)


def test_greedy_ranks_by_posterior_mean_with_flat_or_hierarchical_prior():
    cands = cands_of(
        np.array([0, 0, 1, 1]), [0, 100, 100, 10], [0, 20, 1, 0], [100, 1e4], [20, 100]
    )
    flat = make_policy("greedy").select(cands, 4, np.random.default_rng(0))
    assert flat.posts.tolist() == [0, 1, 3, 2]  # the new post's Beta(1, 1) mean of 1/2 wins
    hier = make_policy("greedy", prior_strength=10.0).select(cands, 4, np.random.default_rng(0))
    assert hier.posts.tolist() == [1, 0, 2, 3]  # the new post starts at its forum's ~20 %
    np.testing.assert_allclose(hier.scores, hier.alpha / (hier.alpha + hier.beta), atol=1e-11)


def test_two_level_posterior_parameters_have_the_prior_strength_plus_impressions():
    cands = random_candidates(np.random.default_rng(5), 500, 7)
    slate = make_policy("two_level_ts", prior_strength=25.0).select(
        cands, 10, np.random.default_rng(0)
    )
    total = cands.post_impressions[slate.posts] + 25.0
    np.testing.assert_allclose(slate.alpha + slate.beta, total)
    np.testing.assert_allclose(slate.alpha - cands.post_clicks[slate.posts] > 0, True)


def test_epsilon_zero_is_greedy_and_epsilon_one_explores_every_slot():
    cands = random_candidates(np.random.default_rng(2), 2000, 5)
    greedy = make_policy("greedy").select(cands, 10, np.random.default_rng(4))
    eps0 = make_policy("epsilon_greedy", epsilon=0.0).select(cands, 10, np.random.default_rng(4))
    np.testing.assert_array_equal(greedy.posts, eps0.posts)
    eps1 = make_policy("epsilon_greedy", epsilon=1.0).select(cands, 10, np.random.default_rng(4))
    assert len(np.intersect1d(eps1.posts, greedy.posts)) <= 2


def test_different_seeds_give_different_thompson_slates():
    cands = random_candidates(np.random.default_rng(9), 5000, 20, max_imps=50)
    policy = make_policy("two_level_ts")
    slates = {tuple(policy.select(cands, 10, np.random.default_rng(s)).posts) for s in range(5)}
    assert len(slates) == 5


CANDS = cands_of(np.array([0, 1, 1]), [5, 5, 5], [1, 1, 1], [10, 10], [2, 2])
RNG = np.random.default_rng(0)
SELECT_INVALID = [
    ({"n": 0}, r"n must be an integer >= 1, got 0"),
    ({"n": -3}, r"n must be an integer >= 1, got -3"),
    ({"n": 2.5}, r"n must be an integer >= 1, got 2.5"),
    ({"n": True}, r"n must be an integer >= 1, got True"),
    ({"rng": 42}, r"rng must be a numpy.random.Generator, got int"),
    ({"rng": np.random.RandomState(0)}, r"rng must be a numpy.random.Generator, got RandomState"),
    ({"per_forum_cap": 0}, r"per_forum_cap must be None or an integer >= 1, got 0"),
    ({"per_forum_cap": 1.5}, r"per_forum_cap must be None or an integer >= 1, got 1.5"),
    ({"allowed_forums": np.array([2])}, r"allowed_forums values must be forum indices in \[0, 1\]"),
    (
        {"allowed_forums": np.array([-1])},
        r"allowed_forums values must be forum indices in \[0, 1\]",
    ),
    ({"allowed_forums": np.array([0.0])}, r"allowed_forums must hold integer forum indices"),
    ({"allowed_forums": np.array([[0]])}, r"allowed_forums must be a 1-D array of forum indices"),
    ({"exclude": np.array([3])}, r"exclude values must be post indices in \[0, 2\], found 3"),
    ({"exclude": np.array(["a"])}, r"exclude must hold integer post indices"),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("override", "message"), SELECT_INVALID)
def test_invalid_select_arguments_are_rejected(policy, override, message):
    args = {"n": 2, "rng": RNG} | {k: v for k, v in override.items() if k in ("n", "rng")}
    kwargs = {k: v for k, v in override.items() if k not in ("n", "rng")}
    with pytest.raises(ValueError, match=message):
        make_policy(policy).select(CANDS, args["n"], args["rng"], **kwargs)


MAKE_INVALID = [
    (("ucb",), {}, r"unknown policy 'ucb'; expected one of two_level_ts, flat_ts, greedy"),
    (("two_level_ts",), {"prior_strength": 0.0}, r"prior_strength must be in \[0.001, 1e9\]"),
    (("two_level_ts",), {"prior_strength": 1e10}, r"prior_strength must be in \[0.001, 1e9\]"),
    (("two_level_ts",), {"prior_strength": float("nan")}, r"prior_strength must be in \[0.001"),
    (("two_level_ts",), {"forum_prior_strength": -1}, r"forum_prior_strength must be in \[0.001"),
    (("two_level_ts",), {"forum_draw": 1}, r"forum_draw must be True or False"),
    (("two_level_ts",), {"exploration": 0.0}, r"exploration must be in \[0.01, 1\], got 0.0"),
    (("two_level_ts",), {"exploration": 1.5}, r"exploration must be in \[0.01, 1\], got 1.5"),
    (("two_level_ts",), {"exploration": True}, r"exploration must be in \[0.01, 1\], got True"),
    (("two_level_ts",), {"exploration": "0.2"}, r"exploration must be in \[0.01, 1\]"),
    (("two_level_ts",), {"strength": 3}, r"unknown parameter 'strength' for policy 'two_level_ts'"),
    (("flat_ts",), {"prior_alpha": 0}, r"prior_alpha must be in \[0.001, 1e9\]"),
    (("greedy",), {"prior_strength": "10"}, r"prior_strength must be a number in \[0.001, 1e9\]"),
    (("epsilon_greedy",), {"epsilon": 1.5}, r"epsilon must be in \[0, 1\], got 1.5"),
    (("epsilon_greedy",), {"epsilon": -0.1}, r"epsilon must be in \[0, 1\], got -0.1"),
    (
        ("random",),
        {"epsilon": 0.1},
        r"unknown parameter 'epsilon' for policy 'random'; accepted: none",
    ),
]


@pytest.mark.parametrize(("args", "params", "message"), MAKE_INVALID)
def test_invalid_policy_names_and_parameters_are_rejected(args, params, message):
    with pytest.raises(ValueError, match=message):
        make_policy(*args, **params)


def test_policies_registry_and_names():
    assert POLICIES == (
        "two_level_ts", "flat_ts", "greedy", "epsilon_greedy", "random", "recent", "explore"
    )  # fmt: skip
    for name in POLICIES:
        assert make_policy(name).name == name


def test_two_level_chooses_the_set_by_samples_and_orders_it_by_posterior_mean():
    cands = random_candidates(np.random.default_rng(11), 3000, 12, max_imps=80)
    by_mean = make_policy("two_level_ts").select(cands, 10, np.random.default_rng(8))
    by_sample = make_policy("two_level_ts", order="sample").select(
        cands, 10, np.random.default_rng(8)
    )
    assert set(by_mean.posts.tolist()) == set(by_sample.posts.tolist())
    assert np.all(np.diff(by_sample.scores) <= 0)
    assert by_mean.posts.tolist() != by_sample.posts.tolist()
