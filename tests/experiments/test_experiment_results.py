"""analyse(): known values, the delta method against its textbook form, JSON, text, errors."""

import json

import numpy as np
import pytest

from core.experiments.statistics import (
    ExperimentCounts,
    analyse,
    msprt_p_value,
    ratio_with_variance,
    render_table,
)


def counts(seed=0, lift=0.0, weights=(1, 1), buckets=64):
    rng = np.random.default_rng(seed)
    members = rng.poisson(50, (2, buckets))
    slates = members * 3
    imps = slates * 6
    clicks = rng.binomial(imps, np.array([[0.03], [0.03 * (1 + lift)]]))
    return ExperimentCounts(("control", "treatment"), weights, "control",
                            members, slates, imps, clicks)  # fmt: skip


def test_delta_variance_equals_the_textbook_form():
    """Deng et al. 2018: Var(Ybar / Xbar) = (s_y^2 - 2 R s_xy + R^2 s_x^2) / (n xbar^2)."""
    rng = np.random.default_rng(1)
    x = rng.poisson(100, 64).astype(float)
    y = rng.binomial(x.astype(int), 0.04).astype(float)
    ratio, var = ratio_with_variance(y, x)
    cov = np.cov(y, x)
    r = y.mean() / x.mean()
    expected = (cov[0, 0] - 2 * r * cov[0, 1] + r**2 * cov[1, 1]) / (64 * x.mean() ** 2)
    assert ratio == pytest.approx(r) and var == pytest.approx(expected)


def test_analyse_reports_totals_metrics_differences_and_sample_ratio():
    c = counts(lift=0.3)
    result = analyse(c)
    control, treatment = result.variants
    assert control.clicks == int(c.clicks[0].sum()) and treatment.members == int(c.members[1].sum())
    assert control.ctr == pytest.approx(c.clicks[0].sum() / c.impressions[0].sum())
    assert control.clicks_per_slate == pytest.approx(c.clicks[0].sum() / c.slates[0].sum())
    ctr = result.differences[0]
    assert (ctr.variant, ctr.metric) == ("treatment", "ctr")
    assert ctr.estimate == pytest.approx(treatment.ctr - control.ctr)
    assert ctr.interval[0] < ctr.estimate < ctr.interval[1]
    assert ctr.sequence[0] < ctr.interval[0] and ctr.sequence[1] > ctr.interval[1]
    assert ctr.p_value < 0.05 and ctr.tau == pytest.approx(
        0.1 * (control.ctr + treatment.ctr) / 2, rel=0.05
    )
    assert [d.metric for d in result.differences] == ["ctr", "clicks_per_slate"]
    assert not result.sample_ratio.mismatch


def test_without_data_there_is_no_evidence():
    zeros = np.zeros((2, 4))
    result = analyse(ExperimentCounts(("a", "b"), (1, 1), "a", zeros, zeros, zeros, zeros))
    assert result.variants[0].ctr is None
    assert all(d.p_value == 1.0 and d.estimate is None for d in result.differences)
    assert result.sample_ratio.p_value == 1.0 and not result.sample_ratio.mismatch
    json.loads(result.to_json())
    assert msprt_p_value(0.01, 0.0, 1e-4) == 1.0


def test_sample_ratio_mismatch_is_reported():
    c = counts()
    members = np.array(c.members)
    members[1] = (members[1] * 0.9).round()
    skewed = ExperimentCounts(c.variants, c.weights, c.control, members, c.slates,
                              c.impressions, c.clicks)  # fmt: skip
    assert analyse(skewed).sample_ratio.mismatch
    assert "MISMATCH" in render_table(analyse(skewed))


def test_json_and_text_renderings():
    result = analyse(counts(lift=0.3))
    data = json.loads(result.to_json())
    assert data["control"] == "control" and len(data["variants"]) == 2
    assert set(data["differences"][0]) == {
        "variant", "metric", "estimate", "std_error", "interval", "sequence", "p_value", "tau",
    }  # fmt: skip
    text = render_table(result)
    assert "control *" in text and "treatment" in text and "always-valid p" in text
    assert f"{result.differences[0].estimate:+.4f}" in text


Z = np.zeros((2, 4))
INVALID = [
    (lambda: ExperimentCounts(("a", "b"), (1, 1), "c", Z, Z, Z, Z), "control 'c' must be one of"),
    (lambda: ExperimentCounts(("a", "a"), (1, 1), "a", Z, Z, Z, Z), "must be one of distinct"),
    (lambda: ExperimentCounts(("a",), (1,), "a", Z, Z, Z, Z), "one name and one weight"),
    (lambda: ExperimentCounts(("a", "b"), (1, -1), "a", Z, Z, Z, Z), "weights must be finite"),
    (
        lambda: ExperimentCounts(("a", "b"), (1, 1), "a", Z - 1, Z, Z, Z),
        "members must be finite and >= 0",
    ),
    (
        lambda: ExperimentCounts(("a", "b"), (1, 1), "a", Z, Z[:, :3], Z, Z),
        r"slates must have shape",
    ),
    (
        lambda: ExperimentCounts(("a", "b"), (1, 1), "a", *[np.zeros((2, 1))] * 4),
        "at least 2 member buckets",
    ),
    (lambda: analyse(counts(), mde=0), r"mde must be in \(0, 10\]"),
    (lambda: analyse(counts(), alpha=0.7), r"alpha must be in \(0, 0.5\]"),
]


@pytest.mark.parametrize(("call", "message"), INVALID)
def test_invalid_inputs_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
