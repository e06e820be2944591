"""``python -m bandits.simulate quality`` (what ``bin/quality`` runs): run the plan, save
every outcome as JSON, write the document and its plots; or render them again from saved
outcomes without running anything."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bandits.simulate.provenance import header_lines
from bandits.simulate.quality.document import write_document
from bandits.simulate.quality.outcomes import Saved, load, save
from bandits.simulate.quality.plan import FULL, QUICK, Plan, run_all, sections

COMMAND = "bin/quality"
DOC = Path("docs/quality.md")
# The document in this repository (the package lives in bandits/simulate/quality/).
PUBLISHED = Path(__file__).resolve().parents[3] / DOC

DESCRIPTION = """Regenerate docs/quality.md and its plots (docs/img/) from seeded simulations,
and save every run's outcome as JSON beside it (docs/quality-outcomes.json). The full plan is
2,000 runs, about 65 minutes on 2 cores; progress, one line per finished run, goes to stderr.
bin/quality runs this from the repository's root, so its relative paths start there."""

EPILOG = """--quick runs the same pipeline on tiny settings and writes to a new temporary
folder (or --doc), never to docs/quality.md, its plots or its outcomes. --render rewrites the
document and its plots from saved outcomes only, e.g. after a change of wording:
`bin/quality --render docs/quality-outcomes.json`. The recorded service run (its section,
"The service over HTTP") is kept from the document being replaced."""


@dataclass(frozen=True)
class Paths:
    """Where the document, its plots and the saved outcomes go."""

    doc: Path
    img: Path
    outcomes: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``quality`` subcommand (and its --help text)."""
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    parser.add_argument(
        "--doc",
        type=Path,
        help=f"the document to write (default {DOC}; for quick runs or their saved outcomes, "
        "quality.md in a new temporary folder)",
    )
    parser.add_argument("--img", type=Path, help="folder of the plots (default: img/ beside --doc)")
    parser.add_argument(
        "--outcomes",
        type=Path,
        help="where a run saves its outcomes (default: beside --doc, named after it: "
        "docs/quality-outcomes.json)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny runs (smoke test)")
    mode.add_argument(
        "--render",
        type=Path,
        metavar="OUTCOMES.json",
        help="run nothing: rewrite --doc and its plots from these saved outcomes",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")


def main(args: argparse.Namespace) -> None:
    """Run (or, with ``--render``, only render) as ``args`` say.

    Raises:
        ValueError: for options that do not go together, unreadable saved outcomes, or
            quick results aimed at docs/quality.md.
    """
    if args.render is not None:
        if args.outcomes is not None:
            raise ValueError("--outcomes is where a run saves its outcomes; --render runs nothing")
        saved = _load(args.render)
        paths = _paths(args, saved.plan)
        write_document(saved, paths.doc, paths.img)
        _say(f"rendered {paths.doc} from {args.render}, no runs")
        return
    plan = QUICK if args.quick else FULL
    paths = _paths(args, plan)
    saved = run(plan, args.jobs)
    save(saved, paths.outcomes)
    write_document(saved, paths.doc, paths.img)
    _say(f"wrote {paths.doc} and {paths.outcomes} in {saved.minutes:.1f} min")


def run(plan: Plan, processes: int) -> Saved:
    """Every run of ``plan``, with the provenance taken before they start."""
    began = time.perf_counter()
    header = header_lines(COMMAND + (" --quick" if plan.name == QUICK.name else ""))
    parts = sections(plan)
    total = sum(len(p.jobs()) for p in parts)
    _say(f"bin/quality: {total} runs on {processes} processes")
    results = run_all(parts, processes)
    return Saved(plan, results, header, (time.perf_counter() - began) / 60)


def _paths(args: argparse.Namespace, plan: Plan) -> Paths:
    """The paths of ``args``, defaults filled in; only the full plan may write the published
    document, its plots or its outcomes.

    Raises:
        ValueError: if a plan other than the full one would replace any of those.
    """
    doc = args.doc
    if doc is None and plan.name != FULL.name:
        doc = Path(tempfile.mkdtemp(prefix="bin-quality-quick-")) / "quality.md"
    doc = doc or DOC
    paths = Paths(doc, args.img or doc.parent / "img", args.outcomes or _outcomes_beside(doc))
    if plan.name != FULL.name:
        published = (PUBLISHED, PUBLISHED.parent / "img", _outcomes_beside(PUBLISHED))
        for option in dataclasses.fields(paths):  # named as the options are
            if getattr(paths, option.name).resolve() in published:
                raise ValueError(
                    f"{plan.name} outcomes never replace docs/quality.md, its plots or its "
                    f"outcomes: give another --{option.name}"
                )
    return paths


def _outcomes_beside(doc: Path) -> Path:
    return doc.with_name(f"{doc.stem}-outcomes.json")


def _load(path: Path) -> Saved:
    try:
        return load(path)
    except OSError as error:
        raise ValueError(f"--render: cannot read {path}: {error.strerror}") from error


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
