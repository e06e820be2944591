"""Statistical checks with fixed seeds and margins a correct implementation passes always."""

import numpy as np
import pytest
from scipy import integrate, stats

from bandits import Candidates, make_policy
from bandits.simulate.runner import AgentSpec, ClassicSetting, Job, run_job

SEEDS = range(5)


def mean_regret(setting, spec):
    return np.mean([run_job(Job(setting, spec, seed)).final_regret for seed in SEEDS])


def test_thompson_regret_is_far_below_random_on_k10_eps01():
    setting = ClassicSetting(arms=10, epsilon=0.1, horizon=5_000)
    random = mean_regret(setting, AgentSpec("random", "random"))
    # Random pays 0.9 * 0.1 per step: about 450; Thompson sampling about 150 here.
    assert 400 < random < 500
    for name in ("flat_ts", "two_level_ts"):
        assert mean_regret(setting, AgentSpec(name, name)) < 0.6 * random


def test_flat_ts_picks_an_arm_with_its_posterior_probability_of_being_best():
    cands = Candidates(
        post_forum=np.zeros(2, np.intp),
        post_impressions=[6, 6],
        post_clicks=[2, 3],
        forum_impressions=[12],
        forum_clicks=[5],
    )
    # P(theta_1 > theta_0) for Beta(3, 5) and Beta(4, 4), by quadrature.
    p_best, _ = integrate.quad(lambda x: stats.beta.pdf(x, 4, 4) * stats.beta.cdf(x, 3, 5), 0, 1)
    policy, rng, draws = make_policy("flat_ts"), np.random.default_rng(12), 20_000
    wins = sum(policy.select(cands, 1, rng).posts[0] == 1 for _ in range(draws))
    assert abs(wins / draws - p_best) < 4 * np.sqrt(p_best * (1 - p_best) / draws)


def test_forum_draw_moves_all_posts_of_a_forum_together():
    # 4,000 new posts in one forum with 40 clicks in 1,000 impressions.
    cands = Candidates(
        post_forum=np.zeros(4_000, np.intp),
        post_impressions=np.zeros(4_000),
        post_clicks=np.zeros(4_000),
        forum_impressions=[1_000],
        forum_clicks=[40],
    )
    rng = np.random.default_rng(5)

    def slate_means(forum_draw):
        policy = make_policy("two_level_ts", forum_draw=forum_draw, order="sample")
        return np.array([policy.select(cands, 4_000, rng).scores.mean() for _ in range(300)])

    drawn, fixed = slate_means(True), slate_means(False)
    f_alpha, f_beta = 10 * 41 / 1002 + 40, 10 * 961 / 1002 + 960
    forum = stats.beta(f_alpha, f_beta)
    # Each slate's mean is its forum draw, plus 1/4,000 of the within-forum spread (about
    # 0.15 of the forum's posterior standard deviation).
    np.testing.assert_allclose(drawn.mean(), forum.mean(), rtol=0.05)
    np.testing.assert_allclose(drawn.std(), forum.std(), rtol=0.25)
    assert fixed.std() < 0.35 * forum.std()
    np.testing.assert_allclose(fixed.mean(), forum.mean(), rtol=0.02)


@pytest.mark.parametrize("exploration", [1.0, 0.2])
def test_exploration_scales_the_variance_of_the_post_draw_and_keeps_its_mean(exploration):
    # One forum, its posterior fixed (no forum draw); 20,000 posts with 3 clicks in 40
    # impressions each: every post's posterior is Beta(s * m + 3, s * (1 - m) + 37).
    n = 20_000
    cands = Candidates(
        post_forum=np.zeros(n, np.intp),
        post_impressions=np.full(n, 40.0),
        post_clicks=np.full(n, 3.0),
        forum_impressions=[1_000],
        forum_clicks=[50],
    )
    policy = make_policy("two_level_ts", forum_draw=False, order="sample", exploration=exploration)
    scores = policy.select(cands, n, np.random.default_rng(8)).scores
    m = (10 * 51 / 1002 + 50) / (10 + 1_000)
    a, b = 10 * m + 3, 10 * (1 - m) + 37
    expected = stats.beta(a / exploration, b / exploration)
    # Mean within 4 standard errors; the variance within 5 % (its relative standard error
    # over 20,000 draws is about 1 %), and about exploration x the posterior's.
    assert abs(scores.mean() - expected.mean()) < 4 * expected.std() / np.sqrt(n)
    np.testing.assert_allclose(scores.var(), expected.var(), rtol=0.05)
    np.testing.assert_allclose(scores.var(), exploration * stats.beta(a, b).var(), rtol=0.1)


def test_flat_ts_makes_exactly_mabwisers_decisions_given_the_same_seed():
    setting = ClassicSetting(arms=10, epsilon=0.1, horizon=2_000)
    ours = run_job(Job(setting, AgentSpec("flat_ts", "flat_ts"), 3))
    peer = run_job(Job(setting, AgentSpec("mabwiser", "mabwiser"), 3))
    np.testing.assert_array_equal(ours.regret, peer.regret)
    assert ours.clicks == peer.clicks
