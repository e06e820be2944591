"""Request and response models of the experiment API (``/v1/experiments``).

What a model cannot say alone (distinct names, a known control, the parameters that each
policy takes, a weight large enough to win members) is checked by :mod:`app.experiments`,
with the field named as pydantic would name it (``variants[2].params.epsilon``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.schemas import Id, Strict
from core.settings import PolicyName

MIN_VARIANTS = 2
MAX_VARIANTS = 10
# Weights are relative; a bound keeps their sum finite (1e308 + 1e308 is inf).
MAX_WEIGHT = 1_000_000
MAX_PARAMS = 8

Finite = Annotated[float, Field(allow_inf_nan=False)]
ParamName = Annotated[str, Field(min_length=1, max_length=64)]


class VariantIn(Strict):
    """One arm of an experiment: a policy that ``bandits.make_policy`` serves, with the
    parameters its settings allow (``POLICY_SETTINGS``; the configured ones when omitted),
    and a relative weight: the share of members it gets."""

    name: Id
    policy: PolicyName
    params: dict[ParamName, Finite] = Field(default_factory=dict, max_length=MAX_PARAMS)
    weight: Annotated[float, Field(gt=0, le=MAX_WEIGHT, allow_inf_nan=False)]


class ExperimentIn(Strict):
    """Body of ``PUT /v1/experiments/{experiment_id}``: 2-10 variants with distinct names,
    and the control, one of them."""

    variants: list[VariantIn] = Field(min_length=MIN_VARIANTS, max_length=MAX_VARIANTS)
    control: Id


class StopIn(Strict):
    """Body of ``POST /v1/experiments/{experiment_id}/stop`` (optional): the variant whose
    policy then serves everyone; without it, the configured policy does."""

    promote: Id | None = None


class VariantView(Strict):
    name: str
    policy: str
    params: dict[str, float]
    weight: float


class ExperimentView(Strict):
    """An experiment: its definition (parameters as served), status, start and stop times
    (unix seconds) and the variant promoted when it stopped."""

    experiment_id: str
    variants: list[VariantView]
    control: str
    status: Literal["running", "stopped"]
    started_at: float
    stopped_at: float | None
    promoted: str | None


class Promotion(Strict):
    experiment: str
    variant: str


class DefaultPolicy(Strict):
    """The policy that serves everyone outside an experiment: the promoted variant's, else
    the configured one (``promoted`` null)."""

    policy: str
    params: dict[str, float]
    promoted: Promotion | None


class ExperimentList(Strict):
    """The running experiment's id (or null), the policy outside an experiment, and the last
    100 experiments, most recently started first."""

    running: str | None
    default_policy: DefaultPolicy
    experiments: list[ExperimentView]


class VariantResult(Strict):
    """One variant's totals and metrics (null without a denominator)."""

    name: str
    weight: float
    members: int
    slates: int
    impressions: int
    clicks: int
    ctr: float | None
    clicks_per_slate: float | None


class DifferenceResult(Strict):
    """One metric of one variant minus the control's: the 95 % interval (one read at a
    planned horizon), and the confidence sequence and p-value valid at every read."""

    variant: str
    metric: Literal["ctr", "clicks_per_slate"]
    estimate: float | None
    std_error: float | None
    interval: tuple[float | None, float | None]
    sequence: tuple[float | None, float | None]
    p_value: float
    tau: float | None


class SampleRatioResult(Strict):
    members: list[int]
    expected_shares: list[float]
    p_value: float
    mismatch: bool


class ExperimentResults(Strict):
    """``GET /v1/experiments/{experiment_id}/results``: what each variant counted and how
    it compares with the control (``core.experiments.statistics.analyse``), and the test."""

    experiment_id: str
    status: Literal["running", "stopped"]
    control: str
    variants: list[VariantResult]
    differences: list[DifferenceResult]
    sample_ratio: SampleRatioResult
    mde: float
    alpha: float
    method: str
    test: dict[str, str]
