"""Posterior math against scipy's closed forms, and the hierarchical prior's behaviour."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bandits import (
    beta_bernoulli,
    beta_summary,
    forum_posterior,
    global_posterior,
    kl_bernoulli,
    lai_robbins_bound,
    post_posterior,
)

counts_pairs = st.integers(0, 10**6).flatmap(
    lambda imps: st.tuples(st.just(imps), st.integers(0, imps))
)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(counts_pairs, min_size=1, max_size=20),
    prior=st.tuples(st.floats(0.01, 100), st.floats(0.01, 100)),
    level=st.floats(0.5, 0.99),
)
def test_flat_posterior_matches_scipy_mean_and_ppf(pairs, prior, level):
    imps = np.array([p[0] for p in pairs])
    clicks = np.array([p[1] for p in pairs])
    alpha, beta = beta_bernoulli(imps, clicks, *prior)
    np.testing.assert_allclose(alpha, prior[0] + clicks, rtol=1e-15)
    np.testing.assert_allclose(beta, prior[1] + (imps - clicks), rtol=1e-15)
    mean, lo, hi = beta_summary(alpha, beta, level)
    dist = stats.beta(alpha, beta)
    np.testing.assert_allclose(mean, dist.mean(), rtol=1e-12)
    np.testing.assert_allclose(lo, dist.ppf((1 - level) / 2), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(hi, dist.ppf((1 + level) / 2), rtol=1e-6, atol=1e-12)
    median = dist.median()
    assert np.all(lo <= median) and np.all(median <= hi)


def test_interval_coverage_is_the_requested_mass():
    mean, lo, hi = beta_summary(np.array([3.0, 40.0]), np.array([97.0, 960.0]), 0.9)
    mass = stats.beta.cdf(hi, [3, 40], [97, 960]) - stats.beta.cdf(lo, [3, 40], [97, 960])
    np.testing.assert_allclose(mass, 0.9, rtol=1e-9)
    np.testing.assert_allclose(mean, [0.03, 0.04])


def test_new_post_starts_at_its_forums_ctr_not_at_one_half():
    # Forum 0 has CTR about 1 %, forum 1 about 5 %; site-wide about 3 %.
    f_imps, f_clicks = np.array([50_000.0, 50_000.0]), np.array([500.0, 2_500.0])
    alpha, beta = post_posterior(
        np.zeros(2), np.zeros(2), f_imps, f_clicks, f_imps.sum(), f_clicks.sum(), 10.0
    )
    mean = alpha / (alpha + beta)
    np.testing.assert_allclose(mean, [0.01, 0.05], rtol=0.01)
    np.testing.assert_allclose(alpha + beta, 10.0)


def test_post_data_moves_the_posterior_away_from_the_forum_prior():
    alpha, beta = post_posterior(
        np.array([0.0, 1_000.0]), np.array([0.0, 200.0]), 10_000.0, 300.0, 10_000.0, 300.0, 10.0
    )
    np.testing.assert_allclose(alpha / (alpha + beta), [0.03, 200.3 / 1010], rtol=1e-3)


def test_forum_prior_is_centred_on_global_mean_with_its_strength():
    alpha, beta = forum_posterior(
        np.array([0.0]), np.array([0.0]), 1000.0, 40.0, forum_prior_strength=25.0
    )
    np.testing.assert_allclose(alpha, 25 * 41 / 1002)
    np.testing.assert_allclose(alpha + beta, 25.0)


def test_no_data_anywhere_falls_back_to_a_weak_prior_at_one_half():
    alpha, beta = post_posterior(np.zeros(3), np.zeros(3), 0.0, 0.0, 0.0, 0.0, 10.0)
    np.testing.assert_allclose(alpha, 5.0)
    np.testing.assert_allclose(beta, 5.0)
    g_alpha, g_beta = global_posterior(0, 0)
    assert (g_alpha, g_beta) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("imps", "clicks"),
    [(0.0, 0.0), (1e15, 0.0), (1e15, 1e15), (3.0, 3.0), (1e300, 1e300), (1e300, 0.0)],
)
def test_extreme_counts_keep_means_inside_zero_one(imps, clicks):
    alpha, beta = post_posterior(clicks * 0, clicks * 0, imps, clicks, imps, clicks, 10.0)
    assert alpha > 0 and beta > 0
    assert 0 < alpha / (alpha + beta) < 1


def test_kl_and_lai_robbins_bound_for_chapelle_li_setting():
    kl = kl_bernoulli(0.4, 0.5)
    np.testing.assert_allclose(kl, 0.4 * np.log(0.8) + 0.6 * np.log(1.2))
    bound = lai_robbins_bound(np.array([0.5] + [0.4] * 9), 100_000)
    np.testing.assert_allclose(bound, 9 * 0.1 / kl * np.log(100_000))
    assert lai_robbins_bound(np.array([0.3, 0.3]), 1000) == 0.0


INVALID = [
    (lambda: beta_bernoulli([1, 2], [2, 1]), r"clicks must be <= impressions: at index \(0,\)"),
    (lambda: beta_bernoulli([-1], [0]), r"impressions must be >= 0"),
    (lambda: beta_bernoulli([1], [-1]), r"clicks must be >= 0"),
    (lambda: beta_bernoulli([np.nan], [0]), r"impressions must be finite"),
    (lambda: beta_bernoulli([np.inf], [0]), r"impressions must be finite"),
    (lambda: beta_bernoulli(["a"], [0]), r"impressions must hold real numbers"),
    (lambda: beta_bernoulli([1, 2], [0, 0, 0]), r"clicks shape \(3,\) does not match"),
    (lambda: beta_bernoulli([1], [0], 0.0, 1.0), r"prior_alpha and prior_beta must be > 0"),
    (lambda: post_posterior(5, 6, 10, 1, 10, 1), r"clicks must be <= impressions"),
    (lambda: post_posterior(5, 1, 10, 11, 10, 1), r"forum_clicks must be <= forum_impressions"),
    (lambda: post_posterior(5, 1, 10, 1, 10, 12), r"global_clicks must be <= global_impr"),
    (lambda: post_posterior(5, 1, 10, 1, 10, 1, 0.0), r"prior_strength must be in \[0.001"),
    (
        lambda: post_posterior(5, 1, 10, 1, 10, 1, forum_prior_strength=-1),
        r"forum_prior_strength must be in \[0.001, 1e9\]",
    ),
    (lambda: post_posterior(5, 1, 10, 1, 10, 1, "10"), r"prior_strength must be a number"),
    (lambda: beta_summary([1.0], [1.0], level=1.0), r"level must be in \(0, 1\)"),
    (lambda: beta_summary([1.0], [1.0], level=0), r"level must be in \(0, 1\)"),
    (lambda: beta_summary([0.0], [1.0]), r"alpha and beta must be finite and > 0"),
    (lambda: beta_summary([1.0], [np.nan]), r"alpha and beta must be finite and > 0"),
    (lambda: lai_robbins_bound([0.5, 1.0], 10), r"means must be a non-empty array"),
    (lambda: lai_robbins_bound([0.5, 0.4], 0), r"horizon must be >= 1"),
]


@pytest.mark.parametrize(("call", "message"), INVALID)
def test_invalid_posterior_arguments_are_rejected_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
