"""The ``recent`` and ``explore`` policies: creation-time order, exact propensities."""

import numpy as np
import pytest
from scipy import stats

from bandits import Candidates, make_policy


def cands_with(forum, created=None):
    forum = np.asarray(forum)
    n_forums = int(forum.max()) + 1 if forum.size else 1
    zeros = np.zeros(forum.shape[0])
    return Candidates(
        post_forum=forum, post_impressions=zeros, post_clicks=zeros,
        forum_impressions=np.zeros(n_forums), forum_clicks=np.zeros(n_forums),
        post_created_at=created,
    )  # fmt: skip


def test_recent_shows_the_newest_posts_first():
    created = np.array([50.0, 10.0, 90.0, 70.0, 30.0, 80.0])
    slate = make_policy("recent").select(cands_with([0] * 6, created), 4, np.random.default_rng(0))
    assert slate.posts.tolist() == [2, 5, 3, 0]
    np.testing.assert_array_equal(slate.scores, [90.0, 80.0, 70.0, 50.0])


def test_recent_respects_allowed_forums_exclusions_and_the_per_forum_cap():
    forum = [0, 1, 1, 2, 1, 0, 2]
    created = np.array([1.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0])
    cands, rng, recent = cands_with(forum, created), np.random.default_rng(0), make_policy("recent")
    assert recent.select(cands, 7, rng, allowed_forums=np.array([0, 2])).posts.tolist() == [
        3, 5, 6, 0,
    ]  # fmt: skip
    assert recent.select(cands, 3, rng, exclude=np.array([1, 3])).posts.tolist() == [2, 4, 5]
    assert recent.select(cands, 7, rng, per_forum_cap=1).posts.tolist() == [1, 3, 5]


def test_recent_needs_creation_times():
    with pytest.raises(ValueError, match="policy 'recent' needs the candidates' post_created_at"):
        make_policy("recent").select(cands_with([0, 0]), 2, np.random.default_rng(0))
    empty = cands_with(np.zeros(0, np.intp))
    with pytest.raises(ValueError, match="post_created_at"):
        make_policy("recent").select(empty, 2, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("created", "message"),
    [
        (np.array([1.0]), r"post_created_at must have shape \(2,\), got \(1,\)"),
        (np.array([1.0, np.nan]), "post_created_at must be finite"),
        (np.array([1.0, np.inf]), "post_created_at must be finite"),
        (np.array(["a", "b"]), "post_created_at must hold real numbers"),
        (np.array([True, False]), "post_created_at must hold real numbers"),
    ],
)
def test_invalid_creation_times_are_rejected(created, message):
    with pytest.raises(ValueError, match=message):
        cands_with([0, 0], created)


def test_creation_times_are_copied_read_only():
    created = np.array([3, 4])
    cands = cands_with([0, 0], created)
    created[0] = 99
    assert cands.post_created_at.tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="read-only"):
        cands.post_created_at[0] = 1.0


def test_explore_propensities_are_exactly_one_over_the_eligible_count():
    cands = cands_with(np.arange(40) % 4)
    explore, rng = make_policy("explore"), np.random.default_rng(1)
    slate = explore.select(cands, 10, rng, allowed_forums=np.array([1, 2]), exclude=[1, 5, 6])
    assert slate.eligible == 17 and len(slate) == 10
    assert slate.propensities.tolist() == [1 / 17] * 10
    capped = explore.select(cands, 10, rng, per_forum_cap=1)  # the cap is ignored
    assert len(capped) == 10 and capped.propensities.tolist() == [1 / 40] * 10
    with pytest.raises(ValueError, match="per_forum_cap must be None or an integer >= 1"):
        explore.select(cands, 10, rng, per_forum_cap=0)


def test_explore_position_frequencies_match_the_stated_propensities():
    """Counts of (post, slot) over 6,000 slates against 6,000 times the stated propensity.

    Twelve eligible posts (of 15; three excluded) and slates of four: 48 cells whose expected
    count is 6,000 / 12 = 500. The chi-square test (44 degrees of freedom, the slot totals
    being fixed) with a fixed seed; a correct sampler fails it with probability 0.001.
    """
    cands, exclude = cands_with(np.arange(15) % 3), np.array([2, 7, 11])
    explore, rng, draws = make_policy("explore"), np.random.default_rng(2024), 6_000
    counts, stated = np.zeros((15, 4)), set()
    for _ in range(draws):
        slate = explore.select(cands, 4, rng, exclude=exclude, per_forum_cap=2)
        counts[slate.posts, np.arange(4)] += 1
        stated.update(slate.propensities.tolist())
    assert stated == {1 / 12}
    eligible = np.setdiff1d(np.arange(15), exclude)
    assert counts[exclude].sum() == 0
    expected = draws * stated.pop()
    chi2 = ((counts[eligible] - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, df=12 * 4 - 4) > 0.001
