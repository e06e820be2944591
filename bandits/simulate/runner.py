"""Driving recommenders through environments, over many seeds, on several processes."""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bandits.candidates import IntArray
from bandits.policies import make_policy
from bandits.posterior import FloatArray
from bandits.simulate.environments import (
    BernoulliArms,
    ForumConfig,
    ForumWorld,
    classic_arms,
    generate_forum_world,
    low_ctr_arms,
)
from bandits.simulate.members import SEEN_WINDOW, CountArray, MemberHistory, SeenLimit
from bandits.simulate.recommenders import (
    FORUM_WINDOW,
    BoolArray,
    MabwiserTS,
    PolicyRecommender,
    Recommender,
)
from bandits.slate import top_with_cap

CHECKPOINTS = 200


@dataclass(frozen=True)
class ClassicSetting:
    """Chapelle & Li's Bernoulli bandit: best arm 0.5, the others 0.5 - epsilon."""

    arms: int = 10
    epsilon: float = 0.1
    horizon: int = 100_000

    def generate(self, rng: np.random.Generator) -> BernoulliArms:
        """The arms and reward uniforms of one seed."""
        return classic_arms(self.arms, self.epsilon, self.horizon, rng)


@dataclass(frozen=True)
class LowCtrSetting:
    """K arms with CTRs drawn from Beta(mean * concentration, (1 - mean) * concentration)."""

    arms: int = 100
    mean: float = 0.03
    concentration: float = 30.0
    horizon: int = 100_000

    def generate(self, rng: np.random.Generator) -> BernoulliArms:
        """The arms and reward uniforms of one seed."""
        return low_ctr_arms(self.arms, self.mean, self.concentration, self.horizon, rng)


@dataclass(frozen=True)
class ForumSetting:
    """The forum homepage world."""

    config: ForumConfig = field(default_factory=ForumConfig)

    def generate(self, rng: np.random.Generator) -> ForumWorld:
        """The world of one seed."""
        return generate_forum_world(self.config, rng)


Setting = ClassicSetting | LowCtrSetting | ForumSetting


@dataclass(frozen=True)
class AgentSpec:
    """How to build the recommender of a run: a named policy, or ``mabwiser`` (peer TS).

    ``forum_window``: forum counts over each post's first N impressions (``None``: all).
    ``impute_pending``: see :class:`~bandits.simulate.recommenders.PolicyRecommender`.
    ``seen_limit``, ``seen_window``: the homepage's seen-limit in forum runs
    (:class:`~bandits.simulate.members.SeenLimit`; 0 = off).
    """

    label: str
    policy: str
    params: tuple[tuple[str, float | bool | str | None], ...] = ()
    delay: int = 1
    seed_salt: int = 0
    forum_window: int | None = FORUM_WINDOW
    impute_pending: bool = False
    seen_limit: int = 0
    seen_window: int = SEEN_WINDOW

    def build(self, n_forums: int, seed: int) -> Recommender:
        """A fresh recommender whose randomness comes from ``seed`` only."""
        if self.policy == "mabwiser":
            return MabwiserTS(n_forums, self.delay, seed)
        policy = make_policy(self.policy, **dict(self.params))
        rng = np.random.default_rng(seed)
        return PolicyRecommender(
            policy, n_forums, self.delay, rng, self.forum_window, self.impute_pending
        )


@dataclass(frozen=True)
class Job:
    """One run: a setting, a recommender and a seed."""

    setting: Setting
    agent: AgentSpec
    seed: int


@dataclass(frozen=True, eq=False)
class Outcome:
    """What one run measured.

    ``regret`` is cumulative expected regret (from the true means) at the steps ``at``;
    ``impressions``, ``clicks`` (realised) and ``expected_clicks`` are totals. Forum runs
    also keep ``visits`` and ``repeats``: the number of slates whose most-shown post had
    been shown to the member 0, 1, ... times before (last bin: that many or more).
    """

    label: str
    seed: int
    at: IntArray
    regret: FloatArray
    impressions: int
    clicks: int
    expected_clicks: float
    bound: float | None
    seconds: float
    visits: int = 0
    repeats: IntArray | None = None

    @property
    def ctr(self) -> float:
        """Realised clicks per impression."""
        return self.clicks / max(self.impressions, 1)

    @property
    def clicks_per_visit(self) -> float:
        """Realised clicks per visit (forum runs; 0 without visits)."""
        return self.clicks / self.visits if self.visits else 0.0

    def repeat_share(self, limit: int) -> float:
        """Share of slates holding a post already shown to the member ``limit`` times or more.

        Raises:
            ValueError: for a run without repeat counts or a limit outside [1, bins).
        """
        if self.repeats is None or not 1 <= limit < self.repeats.shape[0]:
            raise ValueError(f"no repeat counts for limit {limit} in this run")
        return float(self.repeats[limit:].sum() / max(self.repeats.sum(), 1))

    @property
    def final_regret(self) -> float:
        """Cumulative regret at the end of the run."""
        return float(self.regret[-1])


def _seeds(seed: int, salt: int = 0) -> tuple[np.random.Generator, int]:
    """Environment generator and recommender seed, independent streams of ``seed``.

    The environment depends on ``seed`` only; a non-zero ``salt`` gives the recommender a
    different, independent stream on the same environment.
    """
    env, agent = np.random.SeedSequence(seed).spawn(2)
    if salt:
        agent = np.random.SeedSequence([seed, salt])
    return np.random.default_rng(env), int(agent.generate_state(1)[0])


def environment_rng(seed: int) -> np.random.Generator:
    """The generator of the environment of ``seed``: the same world for every recommender."""
    return _seeds(seed)[0]


def checkpoints(horizon: int) -> IntArray:
    """Steps (1-based counts) at which regret curves are kept."""
    return np.unique(np.linspace(1, horizon, CHECKPOINTS).astype(np.intp))


def run_job(job: Job) -> Outcome:
    """Generate the environment of ``job.seed`` and run the recommender through it."""
    start = time.perf_counter()
    env_rng, agent_seed = _seeds(job.seed, job.agent.seed_salt)
    if isinstance(job.setting, ForumSetting):
        world = job.setting.generate(env_rng)
        rec = job.agent.build(world.config.forums, agent_seed)
        seen = SeenLimit(job.agent.seen_limit, job.agent.seen_window)
        return run_forum(world, rec, job.agent.label, job.seed, start, seen)
    arms = job.setting.generate(env_rng)
    rec = job.agent.build(arms.means.shape[0], agent_seed)
    return run_arms(arms, rec, job.agent.label, job.seed, start)


def run_arms(arms: BernoulliArms, rec: Recommender, label: str, seed: int, start: float) -> Outcome:
    """One pull per step for ``arms.horizon`` steps; every arm is a post of forum 0."""
    k, horizon = arms.means.shape[0], arms.horizon
    rec.add_posts(np.arange(k, dtype=np.intp), np.zeros(k, np.intp))
    chosen = np.empty(horizon, np.intp)
    means, uniforms = arms.means, arms.uniforms
    for t in range(horizon):
        arm = rec.recommend(1)
        chosen[t] = arm[0]
        rec.record(arm, uniforms[t : t + 1] < means[arm])
    at = checkpoints(horizon)
    regret = np.cumsum(arms.gaps[chosen])[at - 1]
    clicks = int(np.count_nonzero(uniforms < means[chosen]))
    return Outcome(
        label,
        seed,
        at,
        regret,
        horizon,
        clicks,
        float(means[chosen].sum()),
        arms.lai_robbins(),
        time.perf_counter() - start,
    )


@dataclass
class _Tally:
    expected: FloatArray
    oracle: FloatArray
    impressions: int = 0
    clicks: int = 0


def run_forum(
    world: ForumWorld,
    rec: Recommender,
    label: str,
    seed: int,
    start: float,
    seen: SeenLimit | None = None,
) -> Outcome:
    """Serve every visit of ``world`` with ``rec``; regret is against the oracle slate.

    ``seen``: the seen-limit the homepage applies on top of ``rec`` (default: off).
    """
    visits = world.config.visits
    tally = _Tally(np.zeros(visits), np.zeros(visits))
    history = MemberHistory(world.config.members, world.n_posts, seen or SeenLimit())
    live = (0, 0)
    for t in range(visits):
        live = _advance(world, rec, live, t)
        _serve(world, rec, t, live, _Memory(history, tally))
    at = checkpoints(visits)
    regret = np.cumsum(tally.oracle - tally.expected)[at - 1]
    return Outcome(
        label,
        seed,
        at,
        regret,
        tally.impressions,
        tally.clicks,
        float(tally.expected.sum()),
        None,
        time.perf_counter() - start,
        visits,
        history.repeats,
    )


def _advance(world: ForumWorld, rec: Recommender, live: tuple[int, int], t: int) -> tuple[int, int]:
    """Announce the posts born at ``t`` and expire those that died; returns [lo, hi)."""
    hi = int(np.searchsorted(world.born, t, side="right"))
    lo = int(np.searchsorted(world.dies, t, side="right"))
    if hi > live[1]:
        new = np.arange(live[1], hi, dtype=np.intp)
        rec.add_posts(new, world.post_forum[new], created_at=world.born[new])
    if lo > live[0]:
        rec.expire_posts(np.arange(live[0], lo, dtype=np.intp))
    return lo, hi


@dataclass(frozen=True)
class _Memory:
    history: MemberHistory
    tally: _Tally


def _serve(
    world: ForumWorld, rec: Recommender, t: int, live: tuple[int, int], memory: _Memory
) -> None:
    """One visit: ask for a slate, draw the clicks, feed them back, keep score."""
    history, tally = memory.history, memory.tally
    cfg, member = world.config, int(world.visitor[t])
    subs = world.subscriptions(member)
    read = history.clicked(member, live[0])
    over = history.over_limit(member, live, t)
    exclude = np.concatenate([read, over]) if over.shape[0] else read
    shown = rec.recommend(
        cfg.slate, allowed_forums=subs, exclude=exclude, per_forum_cap=cfg.per_forum_cap
    )
    k = shown.shape[0]
    ctr = world.ctr_at(shown, t, history.shown[member, shown])
    seen = world.seen_uniforms[t, :k] < world.position_weight[:k]
    clicked = seen & (world.click_uniforms[t, :k] < ctr)
    tally.expected[t] = np.sum(world.position_weight[:k] * ctr)
    tally.oracle[t] = _oracle(world, t, live, world.subscribed[member], read, history.shown[member])
    rec.record(shown[seen], clicked[seen])
    history.record(member, t, shown, seen)
    history.click(member, shown[clicked])
    tally.impressions += int(np.count_nonzero(seen))
    tally.clicks += int(np.count_nonzero(clicked))


def _oracle(
    world: ForumWorld,
    t: int,
    live: tuple[int, int],
    subscribed: BoolArray,
    read: IntArray,
    shown: CountArray,
) -> float:
    """Expected clicks of the best slate: the eligible live posts (in the member's forums,
    ``subscribed``; not clicked) with the highest true CTRs at visit ``t`` for this member
    (``shown``: the member's impressions per post so far, for fatigue). The seen-limit is
    the homepage's choice, not the world's, so the oracle ignores it."""
    lo, hi = live
    keep = subscribed[world.post_forum[lo:hi]]
    keep[read - lo] = False
    posts = np.flatnonzero(keep) + lo
    ctr = world.ctr_at(posts, t, shown[posts])
    cfg = world.config
    best = top_with_cap(ctr, world.post_forum[posts], cfg.slate, posts.shape[0], cfg.per_forum_cap)
    return float(np.sum(world.position_weight[: best.shape[0]] * ctr[best]))


def run_jobs(
    jobs: Sequence[Job], processes: int = 2, progress: Callable[[str], None] | None = None
) -> list[Outcome]:
    """Run ``jobs`` on ``processes`` worker processes, reporting each finished one.

    Progress lines go to ``progress`` (stderr by default). Results keep the job order.
    """
    outcomes = run_jobs_until(jobs, processes, None, progress)
    return [out for out in outcomes if out is not None]


def run_jobs_until(
    jobs: Sequence[Job],
    processes: int = 2,
    deadline: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Outcome | None]:
    """:func:`run_jobs`, except that a job not started by ``deadline`` (``time.time()``;
    ``None``: no deadline) is skipped and gives ``None``. Jobs start in the given order."""
    report = progress or _stderr
    began = time.perf_counter()
    results: dict[int, Outcome | None] = {}
    items = [(i, job, deadline) for i, job in enumerate(jobs)]
    for done, (i, out) in enumerate(_execute(items, processes), start=1):
        results[i] = out
        if out is None:
            continue
        report(
            f"[{done:>4}/{len(jobs)}] {out.label:<34} seed {out.seed:>3}  "
            f"regret {out.final_regret:>9.1f}  ctr {out.ctr:.4f}  "
            f"{out.seconds:5.1f} s  (elapsed {time.perf_counter() - began:6.0f} s)"
        )
    return [results[i] for i in range(len(jobs))]


_Item = tuple[int, Job, float | None]


def _execute(items: list[_Item], processes: int) -> Iterable[tuple[int, Outcome | None]]:
    if processes <= 1:
        yield from map(_run_indexed, items)
        return
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        yield from pool.imap_unordered(_run_indexed, items)


def _run_indexed(item: _Item) -> tuple[int, Outcome | None]:
    index, job, deadline = item
    if deadline is not None and time.time() > deadline:
        return index, None
    return index, run_job(job)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
