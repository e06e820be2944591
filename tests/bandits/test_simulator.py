"""The simulator: environments, recommenders, runner, command line and document helpers."""

import subprocess
import sys

import numpy as np
import pytest

from bandits import make_policy
from bandits.simulate.bench import HEADING, replace_section
from bandits.simulate.cli import main, parse_agent
from bandits.simulate.environments import (
    ForumConfig,
    classic_arms,
    generate_forum_world,
    low_ctr_arms,
)
from bandits.simulate.recommenders import FORUM_WINDOW, PolicyRecommender
from bandits.simulate.runner import (
    AgentSpec,
    ClassicSetting,
    ForumSetting,
    Job,
    LowCtrSetting,
    run_job,
    run_jobs,
)

SMALL_FORUM = ForumConfig(members=50, visits=600, lifetime=200, forums=6)


def test_classic_arms_follow_chapelle_and_li():
    arms = classic_arms(10, 0.1, 1_000, np.random.default_rng(0))
    assert sorted(arms.means.tolist()) == [0.4] * 9 + [0.5]
    assert arms.horizon == 1_000
    np.testing.assert_allclose(arms.gaps.max(), 0.1)


def test_low_ctr_arms_have_the_population_mean():
    arms = low_ctr_arms(5_000, 0.03, 30.0, 10, np.random.default_rng(0))
    assert abs(arms.means.mean() - 0.03) < 0.002
    assert arms.means.max() < 1


def test_forum_world_is_reproducible_and_consistent():
    a = generate_forum_world(SMALL_FORUM, np.random.default_rng(4))
    b = generate_forum_world(SMALL_FORUM, np.random.default_rng(4))
    np.testing.assert_array_equal(a.post_ctr, b.post_ctr)
    np.testing.assert_array_equal(a.visitor, b.visitor)
    assert np.all(np.diff(a.born) >= 0)
    np.testing.assert_array_equal(a.dies - a.born, SMALL_FORUM.lifetime)
    assert a.born.min() <= 0 < a.dies.min() + SMALL_FORUM.lifetime
    for member in range(SMALL_FORUM.members):
        subs = a.subscriptions(member)
        assert len(subs) >= SMALL_FORUM.min_subscriptions
        assert len(np.unique(subs)) == len(subs) and subs.max() < SMALL_FORUM.forums
    assert np.all(np.diff(a.position_weight) < 0) and a.position_weight[0] == 1


@pytest.mark.parametrize(
    "setting",
    [ClassicSetting(horizon=400), LowCtrSetting(arms=20, horizon=400), ForumSetting(SMALL_FORUM)],
    ids=["classic", "lowctr", "forum"],
)
def test_runs_are_reproducible_and_regret_is_non_decreasing(setting):
    spec = AgentSpec("two_level_ts", "two_level_ts", delay=3)
    first, again = run_job(Job(setting, spec, 7)), run_job(Job(setting, spec, 7))
    np.testing.assert_array_equal(first.regret, again.regret)
    assert first.clicks == again.clicks
    assert np.all(np.diff(first.regret) >= -1e-9) and first.regret[0] >= 0
    assert 0 <= first.ctr <= 1 and first.impressions > 0


def test_forum_oracle_regret_is_smaller_for_a_learning_policy_than_for_random():
    setting = ForumSetting(ForumConfig(members=100, visits=3_000, lifetime=800, forums=8))
    regret = {
        name: np.mean(
            [run_job(Job(setting, AgentSpec(name, name), s)).final_regret for s in (1, 2)]
        )
        for name in ("two_level_ts", "random")
    }
    assert regret["two_level_ts"] < 0.8 * regret["random"]


def test_parallel_runs_equal_serial_runs():
    jobs = [
        Job(ClassicSetting(horizon=300), AgentSpec(name, name), seed)
        for name in ("flat_ts", "greedy")
        for seed in (0, 1)
    ]
    serial = run_jobs(jobs, 1, progress=lambda line: None)
    lines = []
    parallel = run_jobs(jobs, 2, progress=lines.append)
    assert [o.final_regret for o in serial] == [o.final_regret for o in parallel]
    assert len(lines) == 4 and all("seed" in line for line in lines)


def test_policy_recommender_refreshes_statistics_only_every_delay_decisions():
    rec = PolicyRecommender(make_policy("greedy"), 1, 3, np.random.default_rng(0))
    rec.add_posts(np.arange(2), np.zeros(2, np.intp))
    rec.record(np.array([0, 1]), np.array([True, False]))
    assert rec.recommend(1)[0] == 0
    # Post 0 now fails 50 times and post 1 is clicked: greedy notices only on refresh.
    rec.record(np.full(50, 0), np.zeros(50, bool))
    rec.record(np.array([1]), np.array([True]))
    assert rec.recommend(1)[0] == 0
    assert rec.recommend(1)[0] == 0
    assert rec.recommend(1)[0] == 1


def _new_post_against_a_known_one(impute: bool, delay: int, decisions: int) -> PolicyRecommender:
    """Post 0 has CTR 0.6 over 1,000 impressions, post 1 none; flat TS decides."""
    rng = np.random.default_rng(7)
    rec = PolicyRecommender(make_policy("flat_ts"), 1, delay, rng, impute_pending=impute)
    rec.add_posts(np.arange(2), np.zeros(2, np.intp))
    rec.record(np.zeros(1000, np.intp), np.arange(1000) < 600)
    rec.picks = [int(rec.recommend(1)[0]) for _ in range(decisions)]  # type: ignore[attr-defined]
    return rec


def test_imputing_pending_decisions_stops_a_batch_from_redrawing_the_same_chance():
    plain = _new_post_against_a_known_one(False, 400, 400).picks.count(1)
    imputed_rec = _new_post_against_a_known_one(True, 400, 400)
    imputed = imputed_rec.picks.count(1)
    # Plain: every decision of the batch draws the new post's Beta(1, 1) against ~0.6,
    # P = 0.4. Imputed: each pick narrows the new post's posterior around 0.5. Over seeds
    # 0-199 plain picked it 127-198 times (mean 160), imputed 44-64 (mean 54).
    assert 120 <= plain <= 200
    assert imputed <= 80
    # The policy sees each pick as one impression clicked at the post's posterior mean,
    # which imputing keeps: 0.5 for the new post, 601 / 1002 for the known one.
    seen = imputed_rec._with_pending()
    np.testing.assert_allclose(seen.post_impressions, [1000 + 400 - imputed, imputed])
    np.testing.assert_allclose(seen.post_clicks, [600 + (400 - imputed) * 601 / 1002, imputed / 2])


def test_imputation_is_cleared_on_refresh_and_changes_nothing_without_delay():
    rec = _new_post_against_a_known_one(True, 400, 401)
    assert rec._pending_imps.sum() == 1  # the 401st decision, after the refresh
    np.testing.assert_array_equal(rec._cands.post_impressions, [1000, 0])
    undelayed = [_new_post_against_a_known_one(i, 1, 300).picks for i in (False, True)]
    assert undelayed[0] == undelayed[1]


def test_policy_recommender_maps_exclusions_and_expiry_to_candidates():
    rec = PolicyRecommender(make_policy("random"), 2, 5, np.random.default_rng(0))
    rec.add_posts(np.arange(5), np.array([0, 0, 1, 1, 1]))
    rec.expire_posts(np.array([0]))
    shown = rec.recommend(10, exclude=np.array([2, 9]))
    assert sorted(shown.tolist()) == [1, 3, 4]
    shown = rec.recommend(10, allowed_forums=np.array([0]))
    assert shown.tolist() == [1]
    # Between refreshes, a post that expires is no longer shown from the stale snapshot.
    rec.expire_posts(np.array([3]))
    assert sorted(rec.recommend(10).tolist()) == [1, 2, 4]
    assert sorted(rec.recommend(10, exclude=np.array([1])).tolist()) == [2, 4]


def test_cli_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("classic", "lowctr", "forum", "quality", "bench"):
        assert command in out


def test_cli_classic_run_prints_a_table_and_writes_a_plot(capsys, tmp_path):
    plot = tmp_path / "regret.png"
    args = ["classic", "--horizon", "300", "--seeds", "2", "--jobs", "1", "--plot", str(plot)]
    assert main([*args, "--policy", "flat_ts", "--policy", "random"]) == 0
    captured = capsys.readouterr()
    assert "| flat_ts | 2 |" in captured.out and "| random | 2 |" in captured.out
    assert "Lai-Robbins" in captured.out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert captured.err.count("seed") == 4


def test_cli_forum_run_with_policy_parameters(capsys):
    args = ["forum", "--visits", "300", "--members", "30", "--lifetime", "100", "--seeds", "1"]
    policies = ["--policy", "two_level_ts:order=sample,prior_strength=20", "--policy", "greedy"]
    assert main([*args, "--jobs", "1", *policies]) == 0
    assert "two_level_ts:order=sample,prior_strength=20" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ucb", r"unknown policy 'ucb'"),
        ("greedy:prior_strength", r"policy parameter must be key=value"),
        ("greedy:prior_strength=0", r"prior_strength must be in \[0.001, 1e9\]"),
        ("two_level_ts:order=best", r"order must be 'mean' or 'sample'"),
        ("flat_ts:epsilon=0.1", r"unknown parameter 'epsilon' for policy 'flat_ts'"),
    ],
)
def test_invalid_policy_specs_are_rejected(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_agent(spec, 1)


def test_impute_pending_is_labelled_and_refused_for_mabwiser(capsys):
    spec = parse_agent("flat_ts", 1000, impute_pending=True)
    assert (spec.label, spec.delay, spec.impute_pending) == ("flat_ts D=1000 imputed", 1000, True)
    assert not parse_agent("flat_ts", 1000).impute_pending
    with pytest.raises(ValueError, match="--impute-pending applies to this library's policies"):
        parse_agent("mabwiser", 1000, impute_pending=True)
    args = ["classic", "--horizon", "300", "--seeds", "1", "--jobs", "1", "--delay", "50"]
    assert main([*args, "--policy", "flat_ts", "--impute-pending"]) == 0
    assert "| flat_ts D=50 imputed | 1 |" in capsys.readouterr().out


def test_cli_reports_invalid_specs_as_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["classic", "--horizon", "10", "--seeds", "1", "--policy", "nope"])
    assert exit_info.value.code == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err


def test_bench_section_replacement_keeps_the_other_sections():
    doc = "# Benchmarks\n\n## api: latency\n\nfast\n\n" + HEADING + "\n\nold\n\n## z\n\nkeep\n"
    new = replace_section(doc, HEADING + "\n\nnew\n")
    assert "old" not in new and "new" in new
    assert new.index("## api: latency") < new.index(HEADING) < new.index("## z")
    assert "fast" in new and "keep" in new
    assert replace_section("", HEADING + "\n") == HEADING + "\n"
    assert replace_section("# B\n", HEADING + "\n").startswith("# B\n\n" + HEADING)


def test_forum_window_counts_only_each_posts_first_impressions_for_the_forum():
    rec = PolicyRecommender(make_policy("greedy"), 1, 1, np.random.default_rng(0), forum_window=2)
    rec.add_posts(np.arange(2), np.zeros(2, np.intp))
    for _ in range(5):
        rec.record(np.array([0]), np.array([True]))
    rec.record(np.array([1]), np.array([False]))
    rec.recommend(1)
    cands = rec._cands
    np.testing.assert_array_equal(cands.post_impressions, [5, 1])
    np.testing.assert_array_equal(cands.post_clicks, [5, 0])
    np.testing.assert_array_equal(cands.forum_impressions, [3])  # 2 of post 0, 1 of post 1
    np.testing.assert_array_equal(cands.forum_clicks, [2])
    with pytest.raises(ValueError, match="forum_window must be None or >= 1"):
        PolicyRecommender(make_policy("greedy"), 1, 1, np.random.default_rng(0), forum_window=0)


def test_forum_counts_default_to_each_posts_first_20_impressions_like_the_service():
    def forum_impressions(**window):
        rec = PolicyRecommender(make_policy("greedy"), 1, 1, np.random.default_rng(0), **window)
        rec.add_posts(np.arange(1), np.zeros(1, np.intp))
        for _ in range(30):
            rec.record(np.array([0]), np.array([False]))
        rec.recommend(1)
        return rec._cands.forum_impressions[0]

    assert FORUM_WINDOW == 20
    assert forum_impressions() == 20
    assert forum_impressions(forum_window=None) == 30
    assert parse_agent("two_level_ts", 1).forum_window == 20
    assert parse_agent("two_level_ts", 1, 0).forum_window is None
    assert parse_agent("two_level_ts", 1, 5).forum_window == 5
    with pytest.raises(ValueError, match="--forum-window must be >= 0, got -1"):
        parse_agent("two_level_ts", 1, -1)


def test_importing_the_library_and_simulator_loads_no_dev_only_package():
    code = (
        "import sys, bandits, bandits.simulate.cli, bandits.simulate.quality, "
        "bandits.simulate.bench; "
        "print(sorted(m for m in ('mabwiser', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_times_the_pruned_draw_against_select():
    from bandits.simulate.bench import measure_pruned, render_pruned

    small, large = measure_pruned(200, 3), measure_pruned(4_500, 3)
    assert small.pruned_share == 0 and small.drawn == 1  # below min_candidates: policy.select
    assert 0 < large.drawn < 1 and large.pruned_share > 0 and 0 < large.bound <= 1e-4
    assert large.build > 0 and min(*large.full, *large.pruned) > 0
    lines = render_pruned([small, large])
    assert lines[0] == "### Pruned draw (`bandits/topn.py`)"
    assert any(line.startswith("| 4,500 |") for part in lines for line in part.splitlines())
