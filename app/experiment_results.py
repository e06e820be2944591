"""An experiment's results: its counts per variant and member bucket, as the storage summed
them over its forums, analysed by :func:`core.experiments.statistics.analyse`."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.errors import NotFound
from app.runtime import Runtime
from core.experiments import statistics
from core.experiments.statistics import ExperimentCounts, ExperimentResult, analyse

# What the results report, and where it comes from (the docstring of
# core.experiments.statistics has the formulas).
TEST = {
    "interval": "delta method over 64 member buckets (Deng, Knoblich, Lu, KDD 2018)",
    "p_value": "always valid: mixture sequential probability ratio test with a normal "
    "mixture N(0, tau^2), tau = mde x the metric pooled over the variant and the control "
    "(Johari, Koomen, Pekelis, Walsh, Operations Research 2022)",
    "sample_ratio": f"chi-square of members per variant against the weights, mismatch at "
    f"p < {statistics.SRM_P_VALUE} (Fabijan et al., KDD 2019)",
}


def experiment_result(rt: Runtime, experiment_id: str) -> tuple[ExperimentResult, str]:
    """The analysed result of an experiment, running or stopped, and its status.

    Raises:
        NotFound: unknown id (or one past the history's last 100).
        redis.RedisError: Redis failed.
    """
    record = rt.storage.experiments.get(experiment_id)
    if record is None:
        raise NotFound(f"experiment {experiment_id} is not known", field="experiment_id")
    variants = record.definition["variants"]
    names = [v["name"] for v in variants]
    tallies = rt.storage.experiment_counts.tallies(experiment_id, names)
    arrays = (tallies.members, tallies.slates, tallies.impressions, tallies.clicks)
    counts = ExperimentCounts(
        tuple(names), tuple(float(v["weight"]) for v in variants),
        record.definition["control"], *(a.astype(np.float64) for a in arrays),
    )  # fmt: skip
    return analyse(counts), record.status


def experiment_results(rt: Runtime, experiment_id: str) -> dict[str, Any]:
    """The JSON of ``GET /v1/experiments/{id}/results`` (see :func:`experiment_result`)."""
    result, status = experiment_result(rt, experiment_id)
    return {"experiment_id": experiment_id, "status": status, **result.to_dict(), "test": TEST}
