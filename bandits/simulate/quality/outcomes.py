"""Every run's outcome, saved as JSON beside docs/quality.md, so that the document can be
rendered again without running anything.

The file holds the plan, the provenance of the runs (command, machine, commit, date,
versions, as the document's header shows them), their wall time, and per section and
recommender the checkpoints and each seed's regret curve and totals. Floats are written with
Python's shortest round-trip repr, so what is loaded equals what was run, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bandits.simulate.environments import ForumConfig
from bandits.simulate.quality.plan import Plan, Results, sections
from bandits.simulate.runner import ClassicSetting, ForumSetting, LowCtrSetting, Outcome

FORMAT = "bin/quality outcomes, version 1"


@dataclass(frozen=True)
class Saved:
    """What docs/quality.md is computed from.

    ``provenance``: the header's Markdown lines, taken when the runs began;
    ``minutes``: the wall time of the runs.
    """

    plan: Plan
    results: Results
    provenance: list[str]
    minutes: float


def save(saved: Saved, path: Path) -> None:
    """Write ``saved`` to ``path`` as JSON (parent folders are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(saved), separators=(",", ":")) + "\n")


def load(path: Path) -> Saved:
    """Read what :func:`save` wrote.

    Raises:
        OSError: if ``path`` cannot be read.
        ValueError: if it is not a bin/quality outcomes file of this version, or its
            outcomes do not match its plan.
    """
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bin/quality outcomes file ({FORMAT!r})")
    try:
        return from_json(data)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: malformed outcomes ({error!r})") from error


def to_json(saved: Saved) -> dict[str, Any]:
    """The JSON object :func:`save` writes."""
    return {
        "format": FORMAT,
        "provenance": saved.provenance,
        "wall_minutes": saved.minutes,
        "plan": dataclasses.asdict(saved.plan),
        "outcomes": {
            key: {label: _group_json(outs) for label, outs in groups.items()}
            for key, groups in saved.results.items()
        },
    }


def from_json(data: dict[str, Any]) -> Saved:
    """The inverse of :func:`to_json`.

    Raises:
        ValueError: if the sections or recommenders differ from those of the saved plan.
        KeyError, TypeError: if a field is missing or of the wrong kind.
    """
    plan = _plan_from_json(data["plan"])
    results = {
        key: {label: _group_from_json(label, group) for label, group in groups.items()}
        for key, groups in data["outcomes"].items()
    }
    _check_against(plan, results)
    return Saved(plan, results, list(data["provenance"]), float(data["wall_minutes"]))


def _group_json(outs: list[Outcome]) -> dict[str, Any]:
    """One recommender's runs: the checkpoints (shared by its seeds), then one entry per seed."""
    at = outs[0].at
    if any(not np.array_equal(o.at, at) for o in outs):
        raise ValueError(f"{outs[0].label}: runs with different checkpoints")
    runs = [
        {
            "seed": o.seed,
            "regret": o.regret.tolist(),
            "impressions": o.impressions,
            "clicks": o.clicks,
            "expected_clicks": o.expected_clicks,
            "bound": o.bound,
            "seconds": o.seconds,
        }
        for o in outs
    ]
    return {"at": at.tolist(), "runs": runs}


def _group_from_json(label: str, group: dict[str, Any]) -> list[Outcome]:
    at = np.array(group["at"], np.intp)
    return [
        Outcome(
            label,
            int(run["seed"]),
            at,
            np.array(run["regret"], np.float64),
            int(run["impressions"]),
            int(run["clicks"]),
            float(run["expected_clicks"]),
            None if run["bound"] is None else float(run["bound"]),
            float(run["seconds"]),
        )
        for run in group["runs"]
    ]


def _plan_from_json(fields: dict[str, Any]) -> Plan:
    values = dict(fields)
    values["classic"] = ClassicSetting(**fields["classic"])
    values["lowctr"] = LowCtrSetting(**fields["lowctr"])
    for key in ("forum", "dense"):
        values[key] = ForumSetting(ForumConfig(**fields[key]["config"]))
    return Plan(**values)


def _check_against(plan: Plan, results: Results) -> None:
    """Every section of ``plan``, each with its recommenders in order and its seeds."""
    parts = sections(plan)
    if list(results) != [part.key for part in parts]:
        raise ValueError(f"sections {list(results)} differ from the plan's")
    for part in parts:
        labels = [agent.label for agent in part.agents]
        if list(results[part.key]) != labels:
            raise ValueError(f"{part.key}: recommenders {list(results[part.key])} != {labels}")
        for label, outs in results[part.key].items():
            if [o.seed for o in outs] != list(range(part.seeds)):
                raise ValueError(f"{part.key}, {label}: seeds are not 0-{part.seeds - 1}")
