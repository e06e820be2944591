"""What serves each member: the running experiment's variants, or the default policy.

A :class:`Plan` is built from the stored serving state (core.storage.experiments) when the
snapshot refresh finds that state changed, so the policies of an experiment are built once
per change, not per request; a member's variant is then a pure function of the experiment id
and the member id (:class:`core.experiments.assignment.Allocation`), the same in every
process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bandits import make_policy
from bandits.policies import Policy
from core.experiments.assignment import Allocation
from core.settings import with_half_life
from core.storage.experiments import ServingState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    """The policy that serves a member, and its experiment and variant (None outside one)."""

    policy: Policy
    experiment: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Plan:
    """The default arm (promoted or configured policy) and, while an experiment runs, its
    allocation and one arm per variant."""

    default: Arm
    experiment: str | None = None
    allocation: Allocation | None = None
    arms: Mapping[str, Arm] = field(default_factory=dict)

    def arm(self, user_id: str) -> Arm:
        """The member's arm: their variant's while an experiment runs, else the default."""
        if self.experiment is None or self.allocation is None:
            return self.default
        return self.arms[self.allocation.assign(self.experiment, user_id)]

    @property
    def serving(self) -> list[Arm]:
        """The arms that :meth:`arm` can return: the variants' while an experiment runs."""
        if self.experiment is None or self.allocation is None:
            return [self.default]
        return list(self.arms.values())


def build_plan(state: ServingState, configured: Policy, half_life: float = 0) -> Plan:
    """The plan of ``state``; ``configured`` serves when nothing was promoted. With a
    ``half_life`` (> 0), every stored policy that reads counts is built with it: the snapshot
    then holds the decayed counts (core.settings.with_half_life).

    Raises:
        ValueError: a stored policy or allocation is not valid (any more).
    """
    promoted = state.promoted
    default = Arm(configured if promoted is None else _policy(promoted, half_life))
    if state.experiment is None or state.definition is None:
        return Plan(default)
    variants = state.definition["variants"]
    arms = {v["name"]: Arm(_policy(v, half_life), state.experiment, v["name"]) for v in variants}
    allocation = Allocation.of([(v["name"], v["weight"]) for v in variants])
    return Plan(default, state.experiment, allocation, arms)


def _policy(spec: Mapping[str, Any], half_life: float) -> Policy:
    return make_policy(spec["policy"], **with_half_life(spec["policy"], spec["params"], half_life))


class Plans:
    """The plan of each serving state read, rebuilt only when the state differs from the
    previous one. A state that no longer builds (a stored policy this version refuses) is
    logged and served by the configured policy, rather than stop the refresh."""

    def __init__(self, configured: Policy, half_life: float = 0) -> None:
        self.configured = configured
        self.half_life = half_life
        self._state: ServingState | None = None
        self._plan = Plan(Arm(configured))

    def __call__(self, state: ServingState) -> Plan:
        if state != self._state:
            try:
                self._plan = build_plan(state, self.configured, self.half_life)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("cannot serve the stored experiment state: %s", exc)
                self._plan = Plan(Arm(self.configured))
            self._state = state
        return self._plan
