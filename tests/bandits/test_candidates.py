"""Candidates: validation once, read-only copies, derived arrays."""

import numpy as np
import pytest

from bandits import Candidates, make_policy

FIELDS = ("post_forum", "post_impressions", "post_clicks", "forum_impressions", "forum_clicks")


def cands_of(*arrays):
    """Candidates from the five arrays in their documented order (the API is keyword-only)."""
    return Candidates(**dict(zip(FIELDS, arrays, strict=True)))


def make(**overrides):
    args = {
        "post_forum": np.array([0, 1, 1, 2]),
        "post_impressions": np.array([10, 20, 0, 5]),
        "post_clicks": np.array([1, 2, 0, 5]),
        "forum_impressions": np.array([100.0, 200.0, 50.0]),
        "forum_clicks": np.array([3.0, 4.0, 5.0]),
    }
    args.update(overrides)
    return Candidates(**args)


def test_accepts_int_or_float_counts_and_copies_them_read_only():
    imps = np.array([10, 20, 0, 5])
    cands = make(post_impressions=imps)
    assert cands.post_impressions.dtype == np.float64
    assert cands.post_forum.dtype == np.intp
    imps[0] = 99
    assert cands.post_impressions[0] == 10
    with pytest.raises(ValueError, match="read-only"):
        cands.post_clicks[0] = 3


def test_derived_statistics():
    cands = make()
    assert (cands.n_posts, cands.n_forums) == (4, 3)
    assert (cands.global_impressions, cands.global_clicks) == (350.0, 12.0)
    np.testing.assert_array_equal(cands.post_failures, [9, 18, 0, 0])
    np.testing.assert_array_equal(cands.forum_post_counts, [1, 2, 1])
    np.testing.assert_array_equal(cands.posts_in(np.array([2, 1])), [3, 1, 2])
    np.testing.assert_array_equal(cands.posts_in(np.array([], np.intp)), [])


def test_empty_candidates_are_valid():
    cands = cands_of(np.zeros(0, np.intp), [], [], [], [])
    assert cands.n_posts == 0 and cands.n_forums == 0
    cands = cands_of(np.zeros(0, np.intp), [], [], [7], [1])
    assert cands.n_forums == 1


INVALID = [
    ({"post_forum": np.array([0, 1, 1, 3])}, r"post_forum values must be in \[0, 2\].*found 3"),
    ({"post_forum": np.array([0, -1, 1, 2])}, r"post_forum values must be in \[0, 2\].*found -1"),
    ({"post_forum": np.array([0.0, 1, 1, 2])}, r"post_forum must hold integers"),
    ({"post_forum": np.array([[0, 1, 1, 2]])}, r"post_forum must be 1-D"),
    ({"post_impressions": np.array([10, 20, 0])}, r"post_impressions must have shape \(4,\)"),
    ({"post_clicks": np.array([1, 2, 0, 5, 0])}, r"post_clicks must have shape \(4,\)"),
    ({"post_impressions": np.array([10, -20, 0, 5])}, r"post_impressions must be >= 0"),
    ({"post_clicks": np.array([1, 2, 0, np.nan])}, r"post_clicks must be finite"),
    ({"post_clicks": np.array([1, 2, 1, 5])}, r"post_clicks must be <= post_impressions"),
    ({"post_clicks": np.array(["1", "2", "0", "5"])}, r"post_clicks must hold real numbers"),
    ({"forum_clicks": np.array([3.0, 4.0, 51.0])}, r"forum_clicks must be <= forum_impr"),
    ({"forum_clicks": np.array([3.0, 4.0])}, r"forum_clicks must have shape \(3,\)"),
    ({"forum_impressions": np.array([[1.0]])}, r"forum_impressions must be 1-D"),
    ({"forum_impressions": np.array([1.0, np.inf, 1])}, r"forum_impressions must be finite"),
]


@pytest.mark.parametrize(("override", "message"), INVALID)
def test_invalid_candidates_name_the_argument(override, message):
    with pytest.raises(ValueError, match=message):
        make(**override)


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        Candidates(np.array([0]), [1], [0], [1], [0])  # type: ignore[misc]


def test_unchecked_candidates_behave_like_validated_ones():
    checked = make()
    unchecked = Candidates.unchecked(
        post_forum=checked.post_forum.copy(),
        post_impressions=checked.post_impressions.copy(),
        post_clicks=checked.post_clicks.copy(),
        forum_impressions=checked.forum_impressions.copy(),
        forum_clicks=checked.forum_clicks.copy(),
    )
    policy = make_policy("two_level_ts")
    a = policy.select(checked, 3, np.random.default_rng(0))
    b = policy.select(unchecked, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(a.posts, b.posts)
    np.testing.assert_array_equal(a.scores, b.scores)
