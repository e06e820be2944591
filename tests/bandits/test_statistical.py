"""Statistical checks with fixed seeds and margins a correct implementation passes always."""

import numpy as np
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


def test_flat_ts_makes_exactly_mabwisers_decisions_given_the_same_seed():
    setting = ClassicSetting(arms=10, epsilon=0.1, horizon=2_000)
    ours = run_job(Job(setting, AgentSpec("flat_ts", "flat_ts"), 3))
    peer = run_job(Job(setting, AgentSpec("mabwiser", "mabwiser"), 3))
    np.testing.assert_array_equal(ours.regret, peer.regret)
    assert ours.clicks == peer.clicks
