"""What every section of docs/quality.md shares: its targets, links to its plots, the
sentence about a policy's typical and worst seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bandits.simulate import report
from bandits.simulate.report import final_regret
from bandits.simulate.runner import Outcome


@dataclass(frozen=True)
class Target:
    """One line of the summary: what was asked, what was measured, met or not."""

    name: str
    measured: str
    met: bool


Rendered = tuple[str, list[Target]]
"""A section's Markdown and the targets it reports to the summary."""


def status(met: bool) -> str:
    """The summary's status cell (a missed target stands out)."""
    return "met" if met else "**missed**"


def image_link(path: Path, doc: Path) -> str:
    """``path`` relative to the folder of ``doc`` when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(doc.resolve().parent))
    except ValueError:
        return str(path)


def tail_line(label: str, outs: list[Outcome], ts: list[Outcome], name: str) -> str:
    """How a policy that explores less than Thompson sampling (``ts``, called ``name``) fares:
    typical and worst seed."""
    regret, ts_regret = report.values(outs, final_regret), report.values(ts, final_regret)
    wins = int(np.sum(regret < ts_regret))
    return (
        f"- {label}: median regret {np.median(regret):.0f} ({name} {np.median(ts_regret):.0f}), "
        f"lower than {name} on {wins} of {len(outs)} seeds; worst seed {regret.max():.0f} "
        f"({name} {ts_regret.max():.0f})."
    )
