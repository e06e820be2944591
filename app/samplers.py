"""The pruned Thompson draws of a snapshot, built on the refresh thread (never in a request).

A :class:`bandits.topn.TopNSampler` is built per serving arm (:attr:`app.plans.Plan.serving`)
on the candidates that arm draws from (:meth:`app.snapshot_data.Snapshot.candidates_of`), with
the arm's own policy: with ``BANDIT_HALF_LIFE_SECONDS`` that policy has the half-life, and
the sampler reads the same decayed counts as its ``select`` would (``Candidates.decayed`` is
cached per candidates, at their ``as_of``). Only samplers that can prune are kept: for fewer
than ``MIN_CANDIDATES`` candidates, or a policy other than ``two_level_ts`` / ``flat_ts``, the
request draws with the policy itself, as before. A refresh that kept an arm's candidates and
policy keeps its sampler.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping

from app.plans import Arm
from bandits import Candidates, TopNSampler

log = logging.getLogger(__name__)

#: Bound on the total variation distance between a served slate's distribution and the full
#: draw's (bandits.topn): a slate differs from the full draw's with probability <= DELTA.
DELTA = 1e-4
#: Below this many eligible posts a request draws every candidate (the full draw is cheaper).
MIN_CANDIDATES = 4_000

Samplers = Mapping[str | None, TopNSampler]


def build_samplers(
    arms: Iterable[Arm],
    candidates_of: Callable[[str | None], Candidates],
    previous: Samplers,
    min_candidates: int = MIN_CANDIDATES,
) -> dict[str | None, TopNSampler]:
    """The sampler of each arm that can prune, by variant; ``previous`` ones are kept where
    the arm's candidates (the same object) and policy (equal) did not change.

    A policy that cannot read its candidates (a half-life without count times) gets no
    sampler: its ``select`` raises as before, in the request that uses it.
    """
    samplers: dict[str | None, TopNSampler] = {}
    for arm in arms:
        cands, old = candidates_of(arm.variant), previous.get(arm.variant)
        if old is not None and old.cands is cands and old.policy == arm.policy:
            same = old.policy is arm.policy
            samplers[arm.variant] = old if same else dataclasses.replace(old, policy=arm.policy)
            continue
        try:
            sampler = TopNSampler.build(
                arm.policy, cands, delta=DELTA, min_candidates=min_candidates
            )
        except ValueError as exc:
            log.warning("no pruned draw for policy %s: %s", arm.policy.name, exc)
            continue
        if sampler.active:
            samplers[arm.variant] = sampler
    return samplers
