"""Decayed counters (bandits.forgetting) and the policies that read them (``half_life``)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandits import Candidates, make_policy
from bandits.forgetting import decay_factor, decayed_update

TIMES = np.array([0.0, 3.0, 3.0, 10.0, 25.5, 40.0])
INCREMENTS = np.array([1.0, 1.0, 0.0, 2.0, 1.0, 0.5])


def closed_form(times, increments, now, half_life):
    return float(np.sum(increments * 2.0 ** (-(now - times) / half_life)))


def replay(times, increments, half_life, start=(0.0, 0.0)):
    value, last = start
    for t, x in zip(times, increments, strict=True):
        value, last = decayed_update(value, last, t, half_life, x)
    return float(value), float(last)


def test_a_counter_updated_at_known_times_is_the_decayed_sum_of_its_events():
    value, last = replay(TIMES, INCREMENTS, half_life=8.0)
    assert last == 40.0
    assert value == pytest.approx(closed_form(TIMES, INCREMENTS, 40.0, 8.0), rel=1e-12)
    read, at = decayed_update(value, last, 48.0, 8.0)
    assert (float(read), float(at)) == pytest.approx((value / 2.0, 48.0), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 10)), min_size=1, max_size=30),
    st.floats(0.5, 1e4),
)
def test_the_counter_is_the_decayed_sum_whatever_order_the_events_arrive_in(events, half_life):
    times, increments = (np.array(v, np.float64) for v in zip(*events, strict=True))
    value, last = replay(times, increments, half_life, start=(0.0, float(times.min())))
    assert last == times.max()
    expected = closed_form(times, increments, last, half_life)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_update_is_not_idempotent_so_callers_must_drop_duplicates():
    once = decayed_update(3.0, 10.0, 12.0, 4.0, 1.0)
    twice = decayed_update(*once, 12.0, 4.0, 1.0)
    assert float(once[0]) == pytest.approx(3.0 * 2**-0.5 + 1.0)
    assert float(twice[0]) == pytest.approx(float(once[0]) + 1.0)


def test_updates_are_vectorised_and_leave_their_inputs_alone():
    value, last = np.array([4.0, 4.0, 0.0]), np.array([0.0, 6.0, 0.0])
    new, at = decayed_update(value, last, 6.0, 3.0, np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(new, [4.0 / 4 + 1.0, 4.0, 2.0])
    np.testing.assert_array_equal(at, [6.0, 6.0, 6.0])
    np.testing.assert_array_equal(value, [4.0, 4.0, 0.0])
    np.testing.assert_allclose(decay_factor([0.0, 5.0, 10.0], 5.0), [1.0, 0.5, 0.25])


@pytest.mark.parametrize("half_life", [0, -1.0, np.inf, np.nan, True, "3", None])
def test_invalid_half_lives_are_rejected(half_life):
    with pytest.raises(ValueError, match="half_life must be"):
        decayed_update(1.0, 0.0, 1.0, half_life)


@pytest.mark.parametrize("name", ["two_level_ts", "flat_ts", "greedy", "epsilon_greedy"])
@pytest.mark.parametrize("half_life", [0, -2.0, float("inf"), float("nan"), True, "10"])
def test_policies_reject_invalid_half_lives(name, half_life):
    with pytest.raises(ValueError, match="half_life must be None or"):
        make_policy(name, half_life=half_life)


def snapshot(imps, clicks, counted, as_of, forum=None):
    imps, clicks = np.asarray(imps, float), np.asarray(clicks, float)
    forum = np.zeros(imps.shape[0], np.intp) if forum is None else np.asarray(forum)
    n_forums = int(forum.max()) + 1
    f_imps = np.bincount(forum, imps, n_forums)
    f_clicks = np.bincount(forum, clicks, n_forums)
    return Candidates(
        post_forum=forum, post_impressions=imps, post_clicks=clicks,
        forum_impressions=f_imps, forum_clicks=f_clicks,
        post_counted_at=np.asarray(counted, float), forum_counted_at=np.full(n_forums, 0.0),
        as_of=as_of,
    )  # fmt: skip


def test_decayed_candidates_scale_impressions_and_clicks_by_the_same_factor():
    cands = snapshot([8.0, 40.0, 4.0], [2.0, 10.0, 4.0], [10.0, 0.0, 20.0], as_of=20.0)
    decayed = cands.decayed(10.0)
    np.testing.assert_allclose(decayed.post_impressions, [4.0, 10.0, 4.0])
    np.testing.assert_allclose(decayed.post_clicks, [1.0, 2.5, 4.0])
    np.testing.assert_allclose(decayed.forum_impressions, [13.0])
    assert cands.decayed(10.0) is decayed


def test_with_no_recent_data_the_posterior_returns_to_the_prior_centred_on_the_forum():
    # Post 0 was shown 10,000 times without a click long ago; forum 1 is known to be ~10 %.
    forum = [0, 0, 1, 1]
    cands = Candidates(
        post_forum=forum, post_impressions=[1e4, 0, 500, 500], post_clicks=[0, 0, 50, 50],
        forum_impressions=[1e4, 1e3], forum_clicks=[0.0, 100.0],
        post_counted_at=[0.0, 0.0, 1e4, 1e4], forum_counted_at=[0.0, 1e4], as_of=1e4,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    forgets = make_policy("two_level_ts", half_life=100.0, forum_draw=False)
    slate = forgets.select(cands, 4, rng)
    old = {int(p): (a, b) for p, a, b in zip(slate.posts, slate.alpha, slate.beta, strict=True)}
    g_mean = 101.0 / 1002.0  # global Beta(1 + 100, 1 + 900): forum 0's counts are forgotten
    prior = (10 * g_mean, 10 * (1 - g_mean))
    assert old[0] == pytest.approx(prior, rel=1e-9)
    assert old[1] == pytest.approx(prior, rel=1e-9)
    keeps = make_policy("two_level_ts", forum_draw=False).select(cands, 4, rng)
    kept = dict(zip(keeps.posts.tolist(), keeps.beta.tolist(), strict=True))
    assert kept[0] > 1e4 - 1  # without forgetting the old failures still count


def test_with_no_time_elapsed_forgetting_changes_nothing():
    rng = np.random.default_rng(7)
    imps = rng.integers(0, 200, 300).astype(float)
    clicks = np.floor(imps * rng.random(300) * 0.2)
    forum = rng.integers(0, 6, 300)
    cands = snapshot(imps, clicks, np.zeros(300), as_of=0.0, forum=forum)
    for name in ("two_level_ts", "flat_ts", "greedy"):
        a = make_policy(name, half_life=50.0).select(cands, 10, np.random.default_rng(1))
        b = make_policy(name).select(cands, 10, np.random.default_rng(1))
        np.testing.assert_array_equal(a.posts, b.posts)


def test_a_policy_that_forgets_needs_count_times():
    cands = Candidates(
        post_forum=[0], post_impressions=[1.0], post_clicks=[0.0],
        forum_impressions=[1.0], forum_clicks=[0.0],
    )  # fmt: skip
    with pytest.raises(ValueError, match="half_life needs post_counted_at"):
        make_policy("greedy", half_life=5.0).select(cands, 1, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"post_counted_at": [0.0], "forum_counted_at": [0.0]}, "as_of is needed"),
        ({"post_counted_at": [0.0], "as_of": 1.0}, "go together"),
        ({"post_counted_at": [0.0, 1.0], "forum_counted_at": [0.0], "as_of": 1.0}, r"\(1,\)"),
        ({"post_counted_at": [np.nan], "forum_counted_at": [0.0], "as_of": 1.0}, "finite"),
        ({"post_counted_at": [0.0], "forum_counted_at": [0.0], "as_of": np.inf}, "finite"),
        ({"post_counted_at": [0.0], "forum_counted_at": [0.0], "as_of": "1"}, "real number"),
    ],
)
def test_invalid_count_times_are_rejected(extra, message):
    with pytest.raises(ValueError, match=message):
        Candidates(
            post_forum=[0], post_impressions=[1.0], post_clicks=[0.0],
            forum_impressions=[1.0], forum_clicks=[0.0], **extra,
        )  # fmt: skip
