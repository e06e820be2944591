"""Freshness in the simulated forum: ageing, fatigue, drift, the seen-limit, decayed counts."""

import argparse
import dataclasses

import numpy as np
import pytest
from scipy import special

from bandits import make_policy
from bandits.simulate import freshness
from bandits.simulate.environments import FRESHNESS_WORLDS, ForumConfig, generate_forum_world
from bandits.simulate.members import MemberHistory, SeenLimit
from bandits.simulate.recommenders import PolicyRecommender
from bandits.simulate.report import Paired
from bandits.simulate.runner import AgentSpec, ForumSetting, Job, run_job

SMALL = ForumConfig(members=40, visits=400, lifetime=200, forums=6)


def world(**changes):
    return generate_forum_world(dataclasses.replace(SMALL, **changes), np.random.default_rng(3))


def test_by_default_the_world_is_stationary_and_its_draws_are_unchanged_by_freshness():
    plain, fresh = world(), world(age_half_life=50.0, fatigue=0.5, drift=2.0)
    posts = np.arange(plain.n_posts)
    np.testing.assert_array_equal(plain.ctr_at(posts, 399, 3), plain.post_ctr)
    for name in ("post_ctr", "born", "visitor", "click_uniforms", "sub_forums"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(fresh, name))
    assert plain.logit_drift is None and np.isinf(plain.forum_half_life).all()


def test_posts_age_with_their_forums_half_life():
    w = world(age_half_life=100.0, age_spread=0.5)
    posts = np.arange(w.n_posts)
    h = w.forum_half_life[w.post_forum]
    expected = w.post_ctr * 2.0 ** (-(250 - w.born) / h)
    np.testing.assert_allclose(w.ctr_at(posts, 250), expected, rtol=1e-12)
    assert np.unique(w.forum_half_life).shape[0] == SMALL.forums  # forums age differently


def test_each_unclicked_impression_multiplies_the_members_ctr_by_the_fatigue_factor():
    w = world(fatigue=0.6)
    posts = np.arange(5)
    np.testing.assert_allclose(
        w.ctr_at(posts, 10, [0, 1, 2, 3, 0]), w.post_ctr[:5] * 0.6 ** np.array([0, 1, 2, 3, 0])
    )


def test_forum_ctrs_drift_as_a_random_walk_on_the_logit():
    config = dataclasses.replace(SMALL, visits=20_000, forums=20, drift=1.5)
    w = generate_forum_world(config, np.random.default_rng(0))
    assert w.logit_drift is not None
    assert not w.logit_drift[0].any()
    steps = np.diff(w.logit_drift, axis=0)
    # 399,980 normal steps: the sample sd is within 1 % of 1.5 / 100 essentially always.
    assert steps.std() == pytest.approx(0.015, rel=0.01)
    posts = np.arange(w.n_posts)
    shifted = special.expit(special.logit(w.post_ctr) + w.logit_drift[7_000, w.post_forum])
    np.testing.assert_allclose(w.ctr_at(posts, 7_000), shifted, rtol=1e-12)


@pytest.mark.parametrize(
    ("field", "value"),
    [("age_half_life", -1.0), ("age_spread", -0.1), ("drift", -0.5), ("fatigue", 0.0),
     ("fatigue", 1.5), ("drift", float("nan"))],
)  # fmt: skip
def test_invalid_freshness_settings_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SMALL, **{field: value})


def test_the_seen_limit_withholds_a_post_for_the_window_after_its_first_impression():
    history = MemberHistory(2, 5, SeenLimit(limit=2, window=10))
    slate, seen = np.array([1, 3]), np.array([True, False])
    history.record(0, 0, slate, seen)
    assert history.over_limit(0, (0, 5), 1).tolist() == []
    history.record(0, 4, slate, seen)
    assert history.over_limit(0, (0, 5), 9).tolist() == [1]
    assert history.over_limit(1, (0, 5), 9).tolist() == []  # another member
    assert history.over_limit(0, (0, 5), 10).tolist() == []  # the window ended
    history.record(0, 12, slate, seen)  # a new window starts at 12
    assert history.over_limit(0, (0, 5), 13).tolist() == []
    assert history.repeats[:3].tolist() == [1, 1, 1]  # slates whose post was shown 0, 1, 2x


def test_with_a_seen_limit_no_slate_repeats_a_post_shown_that_often_within_the_window():
    setting = ForumSetting(dataclasses.replace(SMALL, fatigue=0.5))
    off = run_job(Job(setting, AgentSpec("off", "two_level_ts"), 0))
    on = run_job(Job(setting, AgentSpec("on", "two_level_ts", seen_limit=2, seen_window=400), 0))
    assert off.repeat_share(2) > 0.2
    assert on.repeat_share(2) == 0.0
    assert on.visits == off.visits == 400
    assert on.clicks_per_visit == on.clicks / 400


def test_regret_never_decreases_in_a_world_that_ages_tires_and_drifts():
    setting = ForumSetting(dataclasses.replace(SMALL, age_half_life=100.0, fatigue=0.5, drift=2))
    out = run_job(Job(setting, AgentSpec("x", "two_level_ts", (("half_life", 50.0),)), 1))
    assert np.all(np.diff(out.regret) >= -1e-9)  # the oracle is the best slate at every visit


def test_the_simulator_counts_decayed_statistics_for_a_policy_with_a_half_life():
    rec = PolicyRecommender(make_policy("greedy", half_life=4.0), 1, 1, np.random.default_rng(0))
    rec.add_posts(np.array([0, 1]), np.array([0, 0]), created_at=np.array([-5, 0]))
    times, events = [], []
    for t in range(12):
        rec.recommend(2)
        if t % 3 == 0:
            rec.record(np.array([0]), np.array([t % 2 == 0]))
            times.append(t)
            events.append(float(t % 2 == 0))
    rec.recommend(2)
    cands = rec.candidates
    assert cands is not None and cands.as_of == 12.0
    decayed = cands.decayed(4.0)
    weights = 2.0 ** (-(12.0 - np.array(times)) / 4.0)
    assert decayed.post_impressions[0] == pytest.approx(weights.sum(), rel=1e-12)
    assert decayed.post_clicks[0] == pytest.approx(weights @ events, rel=1e-12)
    assert decayed.forum_impressions[0] == pytest.approx(weights.sum(), rel=1e-12)
    np.testing.assert_array_equal(cands.post_created_at, [-5.0, 0.0])


def test_needed_seeds_follow_from_the_paired_spread():
    pilot = Paired(diff=0.0, se=0.01, ratio=1.0, n=4)  # paired sd 0.02
    # 7.85 * (0.02 / (0.02 * 0.5)) ** 2 = 31.4
    assert freshness.needed_seeds(pilot, mean=0.5) == 32


def test_the_freshness_command_reports_every_recommender_and_target():
    args = argparse.Namespace(
        world=["forum", "forum-fatigue"], visits=150, members=20, half_life=100.0,
        seen_limit=2, seen_window=1000, seeds=2, first_seed=0, jobs=1, minutes=None,
    )  # fmt: skip
    text = freshness.run_freshness(args)
    for label in ("two_level_ts half_life=50", "recent", "greedy", "seen_limit=2", "Targets"):
        assert label in text
    assert "fatigue: seen-limit > none by 2 SE" in text
    assert set(FRESHNESS_WORLDS) >= {
        "forum-ageing",
        "forum-drift",
        "forum-ageing-drift",
        "forum-fresh",
    }
