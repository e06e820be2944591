"""TopNSampler (bandits/topn.py): the pruned Thompson draw against the full draw.

Four kinds of evidence, with fixed seeds:

* the bound's ingredient: ``upper_quantile`` is an upper quantile (checked with scipy);
* the coupling of the module docstring, request by request: the posts left undrawn all have
  ``hi < T``, and drawing them afterwards (with the request's own forum CTRs) never changes
  the slate (over the first 400 requests of each of the 8 cases at most 8 * 400 * delta =
  0.32 differences are expected in all);
* the slate distribution: per-post slate frequencies and top-slot frequencies over R pruned
  requests (the same run as the coupling's, one per case) and R full requests (shared with
  the naive pruning's check), compared by a chi-square homogeneity statistic whose 1 - 1e-4
  quantile is the tolerance (delta = 1e-4 moves each frequency by at most 1e-4, far below
  the sampling error at R = 1,500). A naive pruning (only the best posts by mean) fails the
  same check, so it can fail (the coupling check is the sharper one: it also fails for a
  pruning that draws only half of what step 3 must);
* a property test (hypothesis) over random candidates and requests: the invariants of
  ``policy.select`` and the coupling, with delta = 1e-10.
"""

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bandits import Candidates, Slate, TopNSampler, make_policy
from bandits.policies import _Request
from bandits.topn import upper_quantile
from tests.bandits.test_slate_policies import check_slate, random_candidates

R = 1_500
#: Requests of each case whose slate is also checked against the coupled full draw.
COUPLED = 400


def world(rng, n_posts, n_forums, *, new=0, top=0, max_imps=2_000):
    """Posts at 1-5 % over ``max_imps`` impressions, ``top`` clear winners (10 % of 5,000) in
    forums 0 and 1, and ``new`` posts without impressions."""
    forum = rng.integers(0, n_forums, n_posts)
    imps = rng.integers(50, max_imps + 1, n_posts).astype(float)
    clicks = rng.binomial(imps.astype(int), rng.uniform(0.01, 0.05, n_posts)).astype(float)
    forum[:top], imps[:top], clicks[:top] = np.arange(top) % 2, 5_000, 500
    imps[n_posts - new :], clicks[n_posts - new :] = 0, 0
    f_imps = np.bincount(forum, imps, n_forums) + 50_000
    f_clicks = np.bincount(forum, clicks, n_forums) + 1_500
    return Candidates(
        post_forum=forum, post_impressions=imps, post_clicks=clicks,
        forum_impressions=f_imps, forum_clicks=f_clicks,
    )  # fmt: skip


def chi_square(a, b, minimum=10):
    """Homogeneity statistic of two count vectors (cells below ``minimum`` pooled), and its
    1 - 1e-4 quantile."""
    big = (a + b) >= minimum
    a_cells = np.append(a[big], a[~big].sum())
    b_cells = np.append(b[big], b[~big].sum())
    keep = (a_cells + b_cells) > 0
    a_cells, b_cells = a_cells[keep], b_cells[keep]
    statistic = float(np.sum((a_cells - b_cells) ** 2 / (a_cells + b_cells)))
    return statistic, float(stats.chi2.ppf(1 - 1e-4, max(1, a_cells.size - 1)))


def frequencies(select, n_posts, rounds=R):
    """Slate counts and top-slot counts per post over ``rounds`` calls of ``select()``."""
    in_slate, at_top = np.zeros(n_posts), np.zeros(n_posts)
    for _ in range(rounds):
        posts = select().posts
        in_slate[posts] += 1
        at_top[posts[0]] += 1
    return in_slate, at_top


def assert_same_distribution(pruned, full, n_posts):
    for a, b in zip(frequencies(pruned, n_posts), frequencies(full, n_posts), strict=True):
        statistic, tolerance = chi_square(a, b)
        assert statistic < tolerance, (statistic, tolerance)


# One world of 4,100 posts with clear winners and new posts with wide priors, and the same
# policy, for four kinds of request: their full draws share one Beta draw per request.
SHARED = dict(n_posts=4_100, n_forums=20, top=12, new=150)
CASES = {
    # name: (world kwargs, policy params, select kwargs, sampler kwargs)
    "clear top and new posts": (SHARED, {}, {}, {}),
    "exclusions remove the top": (SHARED, {}, {"exclude": np.arange(12)}, {}),
    "per-forum cap binds": (SHARED, {}, {"per_forum_cap": 2}, {}),
    "allowed forums, hot forums often": (
        SHARED,
        {},
        {"allowed_forums": np.arange(12)},
        {"min_candidates": 0, "forum_tail": 0.2},
    ),
    "flat posterior (every post new)": (
        dict(n_posts=3_000, n_forums=5, new=3_000),
        {},
        {},
        {"min_candidates": 0, "probe_draws": 0},  # step 4 (build would delegate: see below)
    ),
    "flat_ts": (dict(n_posts=3_000, n_forums=10, new=60), None, {}, {"min_candidates": 0}),
    "exploration 0.3, order by sample": (
        dict(n_posts=3_000, n_forums=10, new=60),
        {"exploration": 0.3, "order": "sample"},
        {},
        {"min_candidates": 0},
    ),
    "no forum draw": (
        dict(n_posts=3_000, n_forums=10, new=60),
        {"forum_draw": False},
        {},
        {"min_candidates": 0},
    ),
}


def case(name, seed):
    world_kwargs, params, select_kwargs, sampler_kwargs = CASES[name]
    cands = world(np.random.default_rng(seed), **world_kwargs)
    policy = make_policy("flat_ts") if params is None else make_policy("two_level_ts", **params)
    return cands, policy, select_kwargs, TopNSampler.build(policy, cands, **sampler_kwargs)


def full_draws(policy, cands, requests, rng, rounds=R):
    """Slate and top-slot counts per post of ``rounds`` full draws for each of ``requests``
    (select kwargs): each round draws every post once (``policy._score``, as
    ``policy.select`` does) and ranks that draw for every request as ``policy.select`` ranks
    it, ineligible posts at ``-inf`` (:func:`test_shared_full_draws_are_policy_select`)."""
    counts = [(np.zeros(cands.n_posts), np.zeros(cands.n_posts)) for _ in requests]
    for _ in range(rounds):
        scores, alpha, beta = policy._score(cands, None, rng)
        for (in_slate, at_top), kwargs in zip(counts, requests, strict=True):
            posts = ranked(policy, cands, scores, alpha, beta, kwargs, rng)
            in_slate[posts] += 1
            at_top[posts[0]] += 1
    return counts


def ranked(policy, cands, scores, alpha, beta, kwargs, rng, n=10):
    """The slate of one full draw for a request, ranked as ``policy.select`` ranks it."""
    eligible = np.ones(cands.n_posts, bool)
    if kwargs.get("allowed_forums") is not None:
        eligible = np.isin(cands.post_forum, kwargs["allowed_forums"])
    if kwargs.get("exclude") is not None:
        eligible[kwargs["exclude"]] = False
    scores = np.where(eligible, scores, -np.inf)
    cap = kwargs.get("per_forum_cap")
    forums = None if cap is None else cands.post_forum
    pos = policy._rank(scores, forums, _Request(n, cap, int(eligible.sum())), rng)
    return policy._order(pos, alpha, beta)


@functools.cache
def full_frequencies(name):
    """Case ``name``'s R full draws' counts: one run for every case of the shared world (and
    the naive pruning's check), one per case for the others."""
    cands, policy, kwargs, _ = case(name, 1)
    if CASES[name][0] is not SHARED:
        return full_draws(policy, cands, [kwargs], np.random.default_rng(3))[0]
    shared = [n for n, c in CASES.items() if c[0] is SHARED]
    counts = full_draws(policy, cands, [CASES[n][2] for n in shared], np.random.default_rng(3))
    return dict(zip(shared, counts, strict=True))[name]


def test_shared_full_draws_are_policy_select():
    """The ranking of one full draw for each request is ``policy.select``'s, post for post,
    from the same generator state (allowed forums excepted: ``select`` then draws only their
    posts, which have the same distribution)."""
    cands, policy, _, _ = case("clear top and new posts", 1)
    for kwargs in ({}, {"exclude": np.arange(12)}, {"per_forum_cap": 2}):
        for seed in range(5):
            rng, same = np.random.default_rng(seed), np.random.default_rng(seed)
            scores, alpha, beta = policy._score(cands, None, rng)
            posts = ranked(policy, cands, scores, alpha, beta, kwargs, rng)
            np.testing.assert_array_equal(posts, policy.select(cands, 10, same, **kwargs).posts)


@pytest.mark.parametrize("name", CASES)
def test_pruned_slates_are_distributed_as_the_full_draws_and_coupled_to_them(name):
    """One run of R pruned requests per case gives both checks of the module docstring: the
    first COUPLED requests also draw the posts they left undrawn (with the request's own
    forum CTRs, from another generator) and must keep their slate; the R slates' frequencies
    are compared with R full draws'."""
    cands, _, kwargs, sampler = case(name, 1)
    assert sampler.active
    rng, rest_rng = np.random.default_rng(2), np.random.default_rng(6)
    in_slate, at_top = np.zeros(cands.n_posts), np.zeros(cands.n_posts)
    differences, paths, bounds, hot = 0, set(), [], 0
    for round_ in range(R):
        slate, trace = sampler.select_traced(10, rng, **kwargs)
        in_slate[slate.posts] += 1
        at_top[slate.posts[0]] += 1
        paths.add(trace.path)
        hot += trace.path == "pruned" and trace.hot_forums > 0
        bounds.append(trace.bound)
        if round_ < COUPLED:
            assert trace.drawn == trace.posts.size <= trace.eligible == slate.eligible
            full = full_slate_from(sampler, trace, 10, kwargs, rest_rng)
            differences += not np.array_equal(np.sort(full), np.sort(slate.posts))
    assert max(bounds) <= sampler.delta
    assert differences == 0  # COUPLED * delta = 0.04 expected at most
    if name == "flat posterior (every post new)":
        assert paths == {"full"}
    else:
        assert "pruned" in paths
    if name == "allowed forums, hot forums often":
        assert hot > 10
    for a, b in zip((in_slate, at_top), full_frequencies(name), strict=True):
        statistic, tolerance = chi_square(a, b)
        assert statistic < tolerance, (statistic, tolerance)


def test_a_naive_pruning_fails_the_same_check():
    # Only the 100 best posts by posterior mean: the new posts' wide priors are lost.
    cands, policy, _, _ = case("clear top and new posts", 1)
    mean = cands.post_clicks / np.maximum(cands.post_impressions, 1)
    best = np.sort(np.argsort(-mean)[:100])
    # The same draw as excluding every other post, at the cost of drawing 100 posts.
    kept = Candidates(
        post_forum=cands.post_forum[best], post_impressions=cands.post_impressions[best],
        post_clicks=cands.post_clicks[best], forum_impressions=cands.forum_impressions,
        forum_clicks=cands.forum_clicks,
    )  # fmt: skip
    rng_naive = np.random.default_rng(2)
    naive = np.zeros(cands.n_posts)
    naive[best] = frequencies(lambda: policy.select(kept, 10, rng_naive), best.size)[0]
    statistic, tolerance = chi_square(naive, full_frequencies("clear top and new posts")[0])
    assert statistic > 10 * tolerance


def full_slate_from(sampler, trace, n, kwargs, rng):
    """The full draw's slate in the coupling: the drawn values, plus fresh draws of every
    eligible post left undrawn, given the request's forum CTRs."""
    cands, policy = sampler.cands, sampler.policy
    eligible = np.ones(cands.n_posts, bool)
    if kwargs.get("allowed_forums") is not None:
        eligible &= np.isin(cands.post_forum, kwargs["allowed_forums"])
    if kwargs.get("exclude") is not None:
        eligible[kwargs["exclude"]] = False
    eligible[trace.posts] = False
    rest = np.flatnonzero(eligible)
    if trace.path == "pruned":
        assert sampler.post_hi[rest].max() < trace.threshold
        if sampler.forum_hi is not None:  # every post of a hot forum was drawn
            forums = cands.post_forum[rest]
            assert np.all(trace.forum_ctr[forums] <= sampler.forum_hi[forums])
    scores, alpha, beta = sampler.draw(rest, trace.forum_ctr, rng)
    _, d_alpha, d_beta = sampler.draw(trace.posts, trace.forum_ctr, rng)
    posts = np.concatenate([trace.posts, rest])
    scores = np.concatenate([trace.scores, scores])
    alpha, beta = np.concatenate([d_alpha, alpha]), np.concatenate([d_beta, beta])
    cap = kwargs.get("per_forum_cap")
    forums = None if cap is None else cands.post_forum[posts]
    pos = policy._rank(scores, forums, _Request(n, cap, posts.size), rng)
    return posts[policy._order(pos, alpha, beta)]


def test_pruning_draws_a_small_share_of_many_candidates():
    cands = world(np.random.default_rng(7), 20_000, 50, new=20)
    sampler = TopNSampler.build(make_policy("two_level_ts"), cands)
    rng = np.random.default_rng(8)
    traces = [sampler.select_traced(10, rng)[1] for _ in range(50)]
    assert {t.path for t in traces} == {"pruned"}
    assert np.median([t.drawn for t in traces]) < 0.2 * cands.n_posts
    assert max(t.bound for t in traces) <= 1e-4


@pytest.mark.parametrize("tail", [1e-3, 1e-8, 1e-13])
def test_upper_quantile_is_an_upper_quantile(tail):
    rng = np.random.default_rng(9)
    alpha = np.exp(rng.uniform(-7, 12, 20_000))
    beta = np.exp(rng.uniform(-7, 14, 20_000))
    quantile = upper_quantile(alpha, beta, tail)
    assert np.all(stats.beta.sf(quantile, alpha, beta) <= tail)
    exact = stats.beta.isf(tail, alpha, beta)
    # The grid (relative step 1/64 on alpha and beta) costs little tightness.
    assert np.median(quantile / exact) < 1.03


def test_small_pools_and_other_policies_go_to_policy_select():
    cands = world(np.random.default_rng(10), 5_000, 10)
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    sampler = TopNSampler.build(make_policy("two_level_ts"), cands)
    slate, trace = sampler.select_traced(10, rng_a, allowed_forums=[0, 1])
    assert trace.path == "policy"  # about 1,000 eligible, below min_candidates
    np.testing.assert_array_equal(
        slate.posts,
        make_policy("two_level_ts").select(cands, 10, rng_b, allowed_forums=[0, 1]).posts,
    )
    greedy = TopNSampler.build(make_policy("greedy"), cands)
    assert not greedy.active and greedy.select_traced(3, rng_a)[1].path == "policy"
    assert not TopNSampler.build(make_policy("two_level_ts"), world(rng_a, 100, 2)).active


def test_slates_keep_the_select_contract():
    cands = world(np.random.default_rng(12), 6_000, 30, new=40)
    sampler = TopNSampler.build(make_policy("two_level_ts"), cands)
    rng = np.random.default_rng(13)
    for kwargs, length in [
        ({}, 25), ({"per_forum_cap": 1}, 25), ({"exclude": np.arange(5_990)}, 10),
        ({"exclude": np.arange(1_000), "allowed_forums": np.arange(25)}, 25),
    ]:  # fmt: skip
        slate = sampler.select(25, rng, **kwargs)
        assert isinstance(slate, Slate) and slate.policy == "two_level_ts"
        assert len(slate) == length == np.unique(slate.posts).size
        if "exclude" in kwargs:
            assert not np.isin(slate.posts, kwargs["exclude"]).any()
        if "per_forum_cap" in kwargs:
            assert np.bincount(cands.post_forum[slate.posts]).max() == 1
        mean = slate.alpha / (slate.alpha + slate.beta)
        assert np.all(np.diff(mean) <= 0)  # ordered by posterior mean, as the policy does
    # Repeated exclusions and exclusions outside the allowed forums count once, or not at all.
    exclude = np.concatenate([np.arange(300), np.arange(300)])
    slate, trace = sampler.select_traced(10, rng, exclude=exclude, allowed_forums=np.arange(28))
    expected = np.isin(cands.post_forum, np.arange(28)) & (np.arange(cands.n_posts) >= 300)
    assert slate.eligible == trace.eligible == int(expected.sum())
    assert trace.path == "pruned"
    assert sampler.select(10, rng, exclude=exclude).eligible == cands.n_posts - 300
    # A cap that leaves fewer than n posts: every eligible post is drawn (exact).
    slate, trace = sampler.select_traced(40, rng, per_forum_cap=1)
    assert len(slate) == 30 and trace.path == "full" and trace.bound == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, r: s.select(0, r), r"n must be an integer >= 1"),
        (lambda s, r: s.select(3, 7), r"rng must be a numpy.random.Generator"),
        (lambda s, r: s.select(3, r, per_forum_cap=0), r"per_forum_cap must be None or"),
        (lambda s, r: s.select(3, r, exclude=[5_000]), r"exclude values must be post indices"),
        (lambda s, r: s.select(3, r, allowed_forums=[10]), r"allowed_forums values must be"),
    ],
)
def test_invalid_select_arguments_are_rejected_as_by_policy_select(call, message):
    sampler = TopNSampler.build(
        make_policy("two_level_ts"), world(np.random.default_rng(0), 5_000, 10)
    )
    with pytest.raises(ValueError, match=message):
        call(sampler, np.random.default_rng(0))


def test_a_flat_posterior_is_left_to_policy_select_where_pruning_cannot_pay():
    """Every post new: the build's probe draws see that nearly every request would end in the
    full draw (step 4) after the bookkeeping, so the sampler delegates; with structure in the
    counts (clear winners, or most posts measured) it prunes. The probe has its own generator:
    two builds agree, and a request's slate is policy.select's, draw for draw."""
    flat = world(np.random.default_rng(1), 4_000, 5, new=4_000)
    policy = make_policy("two_level_ts")
    sampler = TopNSampler.build(policy, flat)
    assert not sampler.active and not TopNSampler.build(policy, flat).active
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    slate, trace = sampler.select_traced(10, rng_a)
    assert trace.path == "policy"
    np.testing.assert_array_equal(slate.posts, policy.select(flat, 10, rng_b).posts)
    assert TopNSampler.build(policy, flat, probe_draws=0).active  # the check skipped
    structured = world(np.random.default_rng(1), 4_000, 5, top=12, new=100)
    assert TopNSampler.build(policy, structured).active
    assert TopNSampler.build(make_policy("flat_ts"), structured).active


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0.5}, r"delta must be in \[1e-12, 0.1\]"),
        ({"delta": 0}, r"delta must be in"),
        ({"forum_tail": 0.9}, r"forum_tail must be in \[1e-09, 0.5\]"),
        ({"min_candidates": -1}, r"min_candidates must be an integer >= 0"),
        ({"min_candidates": 1.5}, r"min_candidates must be an integer >= 0"),
        ({"probe_draws": -1}, r"probe_draws must be an integer >= 0"),
        ({"probe_draws": True}, r"probe_draws must be an integer >= 0"),
    ],
)
def test_invalid_build_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopNSampler.build(
            make_policy("two_level_ts"), world(np.random.default_rng(0), 100, 2), **kwargs
        )


def test_decayed_counts_are_read_as_the_policy_reads_them():
    base = world(np.random.default_rng(14), 3_000, 10, new=50)
    cands = Candidates(
        post_forum=base.post_forum, post_impressions=base.post_impressions,
        post_clicks=base.post_clicks, forum_impressions=base.forum_impressions,
        forum_clicks=base.forum_clicks, post_counted_at=np.linspace(0, 1_000, 3_000),
        forum_counted_at=np.full(10, 900.0), as_of=1_000.0,
    )  # fmt: skip
    policy = make_policy("two_level_ts", half_life=300.0)
    sampler = TopNSampler.build(policy, cands, min_candidates=0)
    rng_pruned, rng_full = np.random.default_rng(15), np.random.default_rng(16)
    assert_same_distribution(
        lambda: sampler.select(10, rng_pruned),
        lambda: policy.select(cands, 10, rng_full),
        cands.n_posts,
    )
    with pytest.raises(ValueError, match="needs post_counted_at"):
        TopNSampler.build(policy, base)


@st.composite
def pruned_requests(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_forums = draw(st.integers(1, 6))
    cands = random_candidates(
        rng, draw(st.integers(0, 3_000)), n_forums, draw(st.sampled_from([0, 5, 500, 100_000]))
    )
    allowed = draw(st.none() | st.lists(st.integers(0, n_forums - 1), max_size=n_forums))
    exclude = None
    if cands.n_posts:
        exclude = draw(st.none() | st.lists(st.integers(0, cands.n_posts - 1), max_size=60))
    params = draw(st.sampled_from([{}, {"forum_draw": False}, {"exploration": 0.2}]))
    as_array = lambda v: None if v is None else np.array(v, np.intp)  # noqa: E731
    kwargs = {
        "allowed_forums": as_array(allowed),
        "exclude": as_array(exclude),
        "per_forum_cap": draw(st.none() | st.integers(1, 4)),
    }
    policy = draw(st.sampled_from(["two_level_ts", "flat_ts"]))
    return cands, policy, params, draw(st.integers(1, 15)), kwargs, seed


@settings(max_examples=120, deadline=None)
@given(req=pruned_requests())
def test_pruned_slates_keep_every_invariant_and_agree_with_the_rest_drawn(req):
    # delta = 1e-10: a correct sampler fails one example with probability below 1e-10.
    cands, name, params, n, kwargs, seed = req
    policy = make_policy(name, **(params if name == "two_level_ts" else {}))
    sampler = TopNSampler.build(policy, cands, delta=1e-10, forum_tail=0.1, min_candidates=0)
    rng = np.random.default_rng(seed)
    slate, trace = sampler.select_traced(n, rng, **kwargs)
    check_slate(slate, cands, n, kwargs, name)
    if trace.path != "policy":
        full = full_slate_from(sampler, trace, n, kwargs, rng)
        np.testing.assert_array_equal(np.sort(full), np.sort(slate.posts))


def test_a_request_whose_first_draw_finds_no_eligible_post_draws_on():
    """Every post the first draw would take is excluded: the next draws still fill the slate
    (the ranking of nothing drawn was an IndexError)."""
    cands = world(np.random.default_rng(11), 10_000, 20)
    sampler = TopNSampler.build(make_policy("two_level_ts"), cands, min_candidates=0)
    # 9,000 excluded leave 1,000 eligible: the first draw takes the first 800 posts by upper
    # bound and the first 3,200 by seed score (hot forums aside), all excluded here.
    first = np.union1d(sampler.by_hi[:800], sampler.by_seed[:3_200])
    rest = np.setdiff1d(np.arange(cands.n_posts), first)
    exclude = np.concatenate([first, rest[: 9_000 - first.shape[0]]])
    rng = np.random.default_rng(12)
    for _ in range(20):
        slate, trace = sampler.select_traced(10, rng, exclude=exclude)
        check_slate(slate, cands, 10, {"exclude": exclude}, "two_level_ts")
        assert trace.eligible == 1_000
