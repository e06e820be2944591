"""Command line of the simulator: ``python -m bandits.simulate {classic,lowctr,forum,...}``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bandits.policies import make_policy
from bandits.simulate import freshness, report
from bandits.simulate.environments import ForumConfig
from bandits.simulate.members import SEEN_WINDOW, SeenLimit
from bandits.simulate.quality import command as quality_command
from bandits.simulate.quality import freshness_doc
from bandits.simulate.recommenders import FORUM_WINDOW
from bandits.simulate.runner import (
    AgentSpec,
    ClassicSetting,
    ForumSetting,
    Job,
    LowCtrSetting,
    Setting,
    run_jobs,
)
from bandits.simulate.service import ServiceError, run_service


def parse_agent(
    text: str, delay: int, forum_window: int = FORUM_WINDOW, impute_pending: bool = False
) -> AgentSpec:
    """``name[:key=value,...]`` (values: numbers, true/false, none, else text) to a spec.

    ``mabwiser`` is MABWiser's Thompson sampling (single-pull settings only). Forum counts
    take each post's first ``forum_window`` impressions (0: every impression).
    ``impute_pending``: the policy counts its decisions since the last refresh at their
    posterior means (``PolicyRecommender``); not for ``mabwiser``.

    Raises:
        ValueError: for a malformed spec, an unknown policy or an invalid parameter.
    """
    name, _, rest = text.partition(":")
    params = tuple(_parse_param(item) for item in rest.split(",") if item)
    if name != "mabwiser":
        make_policy(name, **dict(params))
    if forum_window < 0:
        raise ValueError(f"--forum-window must be >= 0, got {forum_window}")
    if impute_pending and name == "mabwiser":
        raise ValueError("--impute-pending applies to this library's policies, not mabwiser")
    label = text if delay == 1 else f"{text} D={delay}"
    label += " imputed" if impute_pending else ""
    return AgentSpec(
        label, name, params, delay, forum_window=forum_window or None, impute_pending=impute_pending
    )


def _parse_param(item: str) -> tuple[str, float | bool | str | None]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"policy parameter must be key=value, got {item!r}")
    words: dict[str, bool | None] = {"true": True, "false": False, "none": None}
    if raw.lower() in words:
        return key, words[raw.lower()]
    try:
        return key, float(raw)
    except ValueError:
        return key, raw


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per setting, plus quality and bench."""
    parser = argparse.ArgumentParser(
        prog="python -m bandits.simulate",
        description="Seeded bandit simulations: regret and CTR per policy, paired by seed.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    classic = sub.add_parser("classic", help="Chapelle & Li: best arm 0.5, others 0.5 - eps")
    classic.add_argument("--arms", type=int, default=10, help="K (default 10)")
    classic.add_argument("--epsilon", type=float, default=0.1, help="gap (default 0.1)")
    _run_options(classic, horizon=100_000)
    low = sub.add_parser("lowctr", help="K arms with CTRs drawn from a Beta population")
    low.add_argument("--arms", type=int, default=100, help="K (default 100)")
    low.add_argument("--mean", type=float, default=0.03, help="population mean CTR")
    low.add_argument("--concentration", type=float, default=30.0, help="Beta a + b")
    _run_options(low, horizon=100_000)
    forum = sub.add_parser("forum", help="forum homepage: arrivals, members, slates")
    _forum_options(forum)
    forum.add_argument(
        "--target",
        help="also drive the running service at this URL (e.g. http://127.0.0.1:8000) through "
        "the same worlds, reported as 'service'; start it with the same per-forum cap "
        "(BANDIT_PER_FORUM_CAP)",
    )
    forum.add_argument(
        "--admin-token",
        default=os.environ.get("BANDIT_ADMIN_TOKEN", "dev-admin-token"),
        help="bearer token for registering posts (default $BANDIT_ADMIN_TOKEN or the "
        "development token)",
    )
    forum.add_argument(
        "--seen-limit",
        type=int,
        default=0,
        help="do not recommend a post to a member who was shown it this many times without "
        "a click, within --seen-window visits (default 0: off)",
    )
    forum.add_argument("--seen-window", type=int, default=SEEN_WINDOW, help="in visits")
    _run_options(forum, horizon=None)
    freshness.add_arguments(
        sub.add_parser(
            "freshness",
            help="forgetting and the seen-limit in worlds that age, tire and drift",
            description=freshness.__doc__,
        )
    )
    quality_command.add_arguments(
        sub.add_parser("quality", help="regenerate docs/quality.md and its plots")
    )
    bench = sub.add_parser("bench", help="time slate selection, write docs/benchmarks.md")
    bench.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    bench.add_argument("--repeats", type=int, default=30, help="timed calls per size")
    bench.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    return parser


def _run_options(parser: argparse.ArgumentParser, horizon: int | None) -> None:
    if horizon is not None:
        parser.add_argument("--horizon", type=int, default=horizon, help="steps T")
    parser.add_argument(
        "--policy",
        action="append",
        help="name[:key=value,...], repeatable (default: every policy); 'mabwiser' is "
        "MABWiser's Thompson sampling (classic and lowctr only)",
    )
    parser.add_argument("--delay", type=int, default=1, help="refresh posteriors every D")
    parser.add_argument(
        "--impute-pending",
        action="store_true",
        help="between refreshes, count each decision made since the last one as an "
        "impression clicked at the post's posterior mean",
    )
    parser.add_argument(
        "--forum-window",
        type=int,
        default=FORUM_WINDOW,
        help=f"forum counts: each post's first N impressions, 0 = all (default {FORUM_WINDOW})",
    )
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+n-1")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--plot", type=Path, help="write a PNG of regret over time here")


def _forum_options(parser: argparse.ArgumentParser) -> None:
    for spec in dataclasses.fields(ForumConfig):
        default = spec.default
        flag = "--" + spec.name.replace("_", "-")
        kind = float if isinstance(default, float) else int
        note = " (0: no cap)" if spec.name == "per_forum_cap" else ""
        parser.add_argument(flag, type=kind, default=default, help=f"default {default}{note}")


def _setting(args: argparse.Namespace) -> Setting:
    if args.command == "classic":
        return ClassicSetting(args.arms, args.epsilon, args.horizon)
    if args.command == "lowctr":
        return LowCtrSetting(args.arms, args.mean, args.concentration, args.horizon)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(ForumConfig)}
    fields["per_forum_cap"] = fields["per_forum_cap"] or None
    return ForumSetting(ForumConfig(**fields))


DEFAULT_POLICIES = ("two_level_ts", "flat_ts", "greedy", "epsilon_greedy", "random")
TARGET_POLICIES = ("two_level_ts", "random")


def run_simulation(args: argparse.Namespace) -> str:
    """Run the simulation subcommand and return its markdown report."""
    setting = _setting(args)
    target = getattr(args, "target", None)
    default = TARGET_POLICIES if target else DEFAULT_POLICIES
    agents = [
        parse_agent(p, args.delay, args.forum_window, args.impute_pending)
        for p in args.policy or default
    ]
    if getattr(args, "seen_limit", 0):
        seen = SeenLimit(args.seen_limit, args.seen_window)  # checks them
        agents = [dataclasses.replace(a, seen_limit=seen.limit, seen_window=seen.window)
                  for a in agents]  # fmt: skip
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    served = []
    if target:
        assert isinstance(setting, ForumSetting)
        served = run_service(setting, seeds, target, args.admin_token)
    jobs = [Job(setting, agent, seed) for agent in agents for seed in seeds]
    groups = report.group(run_jobs(jobs, args.jobs) + served)
    text = [f"setting: {setting}", "", report.summary_table(groups, agents[0].label)]
    bounds = [o.bound for outs in groups.values() for o in outs if o.bound is not None]
    if bounds:
        text += ["", f"Lai-Robbins asymptotic bound at T (mean over seeds): {np.mean(bounds):.1f}"]
    if args.plot:
        report.plot_regret(groups, args.plot, str(setting))
        text += ["", f"plot: {args.plot}"]
    return "\n".join(text)


def _freshness(args: argparse.Namespace) -> None:
    """Print the evidence, or with ``--write`` put it in that document's section.

    Raises:
        ValueError: for ``--render`` without ``--write``, or ``--minutes`` <= 0.
    """
    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    if args.write is None:
        if args.render is not None:
            raise ValueError("--render needs --write DOC: the document to rewrite")
        print(freshness.run_freshness(args))
        return
    freshness_doc.say(freshness_doc.main(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "quality":
            quality_command.main(args)
        elif args.command == "freshness":
            _freshness(args)
        elif args.command == "bench":
            from bandits.simulate.bench import write_bench

            write_bench(args.doc, repeats=3 if args.quick else args.repeats)
        else:
            print(run_simulation(args))
    except ValueError as error:
        parser.error(str(error))
    except (OSError, ServiceError) as error:
        print(f"python -m bandits.simulate: the service failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
