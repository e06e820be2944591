"""Simulated worlds: the true CTRs and every random draw that does not belong to a policy.

An environment is generated once per seed, before any policy runs, so every policy (and
MABWiser) meets exactly the same arms, posts, members, visits and click uniforms: the
comparison is paired by seed. Nothing here knows how a slate is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from bandits.candidates import IntArray
from bandits.posterior import FloatArray, lai_robbins_bound


@dataclass(frozen=True, eq=False)
class BernoulliArms:
    """K Bernoulli arms, one pull per step; the reward of step t is ``uniforms[t] < mean``.

    Sharing ``uniforms`` between policies (common random numbers) pairs their runs.

    Raises:
        ValueError: if a mean is outside [0, 1) or there are fewer than 2 arms.
    """

    means: FloatArray
    uniforms: FloatArray

    def __post_init__(self) -> None:
        if self.means.ndim != 1 or self.means.shape[0] < 2:
            raise ValueError(f"means must be a 1-D array of >= 2 arms, got {self.means.shape}")
        if self.means.min() < 0 or self.means.max() >= 1:
            raise ValueError("means must be in [0, 1)")

    @property
    def horizon(self) -> int:
        """Number of steps the uniforms cover."""
        return int(self.uniforms.shape[0])

    @property
    def gaps(self) -> FloatArray:
        """Expected regret of one pull of each arm."""
        return self.means.max() - self.means

    def lai_robbins(self) -> float:
        """Lai-Robbins asymptotic lower bound at the horizon."""
        return lai_robbins_bound(self.means, self.horizon)


def classic_arms(k: int, epsilon: float, horizon: int, rng: np.random.Generator) -> BernoulliArms:
    """Chapelle & Li (2011): the best arm has mean 0.5, the other ``k - 1`` have 0.5 - epsilon.

    The best arm is placed at a random index so that index order cannot favour it.

    Raises:
        ValueError: if ``k < 2`` or ``epsilon`` is not in (0, 0.5].
    """
    if k < 2:
        raise ValueError(f"arms must be >= 2, got {k}")
    if not 0 < epsilon <= 0.5:
        raise ValueError(f"epsilon must be in (0, 0.5], got {epsilon}")
    means = np.full(k, 0.5 - epsilon)
    means[rng.integers(k)] = 0.5
    return BernoulliArms(means, rng.random(horizon))


def low_ctr_arms(
    k: int, mean: float, concentration: float, horizon: int, rng: np.random.Generator
) -> BernoulliArms:
    """K arms whose CTRs are drawn from Beta(mean * c, (1 - mean) * c), c = concentration.

    Raises:
        ValueError: if ``k < 2``, ``mean`` is not in (0, 1) or ``concentration <= 0``.
    """
    if k < 2:
        raise ValueError(f"arms must be >= 2, got {k}")
    if not 0 < mean < 1 or concentration <= 0:
        raise ValueError("mean must be in (0, 1) and concentration > 0")
    means = rng.beta(mean * concentration, (1 - mean) * concentration, size=k)
    return BernoulliArms(np.minimum(means, 1 - 1e-9), rng.random(horizon))


@dataclass(frozen=True)
class ForumConfig:
    """Parameters of the forum homepage world (defaults: see docs/quality.md).

    CTR levels: forum f has typical CTR ``m_f = ctr_mean * exp(forum_spread * z_f)``
    (z standard normal, clipped to [0.2 %, 20 %]); its posts have CTRs drawn from
    Beta(post_concentration * m_f, post_concentration * (1 - m_f)).
    Arrivals: ``posts_per_visit`` new posts per visit on average, forum f posting in
    proportion to a log-normal activity; every post lives ``lifetime`` visits. At visit 0
    the world already holds a full lifetime's worth of posts of random ages, none of them
    ever shown. Members subscribe to ``min_subscriptions + Poisson(extra_subscriptions)``
    forums chosen by activity; each visit is by a uniformly random member, who is shown
    ``slate`` posts of their forums that they have not clicked before. Slot s (0-based)
    is seen with probability 1 / log2(s + 2) (position bias); a seen post is an
    impression (the client reports what entered the viewport) and is clicked with the
    post's CTR, so each post is a Bernoulli arm per impression, as the policies assume.

    Freshness (each off by default, so the published worlds are unchanged; the named worlds
    of :data:`FRESHNESS_WORLDS` turn them on). A post's true CTR at visit t is

        sigmoid(logit(ctr) + w_f(t)) * 2 ** (-(t - born) / h_f) * fatigue ** k

    * ageing (``age_half_life`` > 0, in visits): forum f's posts lose half their CTR every
      h_f = age_half_life * exp(age_spread * z_f) visits (z standard normal), so forums
      age at different rates;
    * drift (``drift`` > 0): w_f is a Gaussian random walk on the logit of forum f's CTRs,
      with standard deviation ``drift`` per 10,000 visits (w_f(0) = 0), so old forum
      statistics mislead;
    * fatigue (``fatigue`` < 1): k is the number of earlier impressions of the post to the
      visiting member (none clicked: a clicked post is never shown to its member again).

    The oracle and regret use these true, time-varying CTRs, fatigue included.
    """

    forums: int = 20
    members: int = 1000
    visits: int = 40_000
    slate: int = 10
    per_forum_cap: int | None = 5
    ctr_mean: float = 0.03
    forum_spread: float = 0.6
    post_concentration: float = 10.0
    posts_per_visit: float = 0.04
    lifetime: int = 5_000
    min_subscriptions: int = 2
    extra_subscriptions: float = 3.0
    age_half_life: float = 0.0
    age_spread: float = 0.5
    fatigue: float = 1.0
    drift: float = 0.0

    def __post_init__(self) -> None:
        positive = ("forums", "members", "visits", "slate", "lifetime", "min_subscriptions")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.ctr_mean < 1:
            raise ValueError(f"ctr_mean must be in (0, 1), got {self.ctr_mean}")
        if self.posts_per_visit <= 0 or self.post_concentration <= 0:
            raise ValueError("posts_per_visit and post_concentration must be > 0")
        for name in ("age_half_life", "age_spread", "drift"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.fatigue <= 1:
            raise ValueError(f"fatigue must be in (0, 1], got {self.fatigue}")


@dataclass(frozen=True, eq=False)
class ForumWorld:
    """One generated forum homepage world: see :class:`ForumConfig` for its rules.

    Posts are numbered in order of birth; post i lives for visits ``born[i] <= t < dies[i]``.
    Members' subscriptions are stored as CSR (``sub_start``, ``sub_forums``).
    ``forum_half_life`` (inf without ageing) and ``logit_drift`` (visits x forums, ``None``
    without drift) hold the freshness draws; :meth:`ctr_at` gives the true CTRs.
    """

    config: ForumConfig
    forum_ctr: FloatArray
    post_forum: IntArray
    post_ctr: FloatArray
    born: IntArray
    dies: IntArray
    sub_start: IntArray
    sub_forums: IntArray
    visitor: IntArray
    seen_uniforms: FloatArray
    click_uniforms: FloatArray
    position_weight: FloatArray
    forum_half_life: FloatArray
    logit_drift: FloatArray | None

    def ctr_at(self, posts: IntArray, t: int, repeats: npt.ArrayLike = 0) -> FloatArray:
        """True CTRs of ``posts`` at visit ``t`` for a member who has already been shown
        each of them ``repeats`` times (see :class:`ForumConfig`)."""
        forum = self.post_forum[posts]
        if self.logit_drift is not None:
            ctr = special.expit(self._post_logit[posts] + self.logit_drift[t, forum])
        else:
            ctr = self.post_ctr[posts]
        if self.config.age_half_life > 0:
            ctr = ctr * np.exp2((self.born[posts] - t) / self.forum_half_life[forum])
        if self.config.fatigue < 1:
            ctr = ctr * self.config.fatigue ** np.asarray(repeats, np.float64)
        return np.asarray(ctr, np.float64)

    @cached_property
    def _post_logit(self) -> FloatArray:
        return np.asarray(special.logit(self.post_ctr), np.float64)

    @cached_property
    def subscribed(self) -> npt.NDArray[np.bool_]:
        """Members x forums: whether the member subscribes to the forum."""
        mask = np.zeros((self.config.members, self.config.forums), bool)
        members = np.repeat(np.arange(self.config.members), np.diff(self.sub_start))
        mask[members, self.sub_forums] = True
        return mask

    def subscriptions(self, member: int) -> IntArray:
        """Forum indices the member subscribes to (sorted, distinct)."""
        return self.sub_forums[self.sub_start[member] : self.sub_start[member + 1]]

    @property
    def n_posts(self) -> int:
        """Number of posts over the whole run."""
        return int(self.post_forum.shape[0])


def generate_forum_world(config: ForumConfig, rng: np.random.Generator) -> ForumWorld:
    """Draw a forum world from ``config`` (all the environment's randomness, up front)."""
    forum_ctr = np.clip(
        config.ctr_mean * np.exp(config.forum_spread * rng.standard_normal(config.forums)),
        0.002,
        0.2,
    )
    activity = rng.lognormal(0.0, 0.8, config.forums)
    activity /= activity.sum()
    post_forum, born = _arrivals(config, activity, rng)
    conc = config.post_concentration
    post_ctr = rng.beta(conc * forum_ctr[post_forum], conc * (1 - forum_ctr[post_forum]))
    sub_start, sub_forums = _subscriptions(config, activity, rng)
    return ForumWorld(
        config=config,
        forum_ctr=forum_ctr,
        post_forum=post_forum,
        post_ctr=post_ctr,
        born=born,
        dies=born + config.lifetime,
        sub_start=sub_start,
        sub_forums=sub_forums,
        visitor=rng.integers(config.members, size=config.visits).astype(np.intp),
        seen_uniforms=rng.random((config.visits, config.slate)),
        click_uniforms=rng.random((config.visits, config.slate)),
        position_weight=1.0 / np.log2(np.arange(config.slate) + 2.0),
        **_freshness(config, rng),
    )


def _freshness(config: ForumConfig, rng: np.random.Generator) -> dict[str, Any]:
    """The forums' ageing half-lives and logit random walks, drawn after everything else
    so that the rest of a seed's world does not depend on them."""
    spread = np.exp(config.age_spread * rng.standard_normal(config.forums))
    half_life = config.age_half_life * spread if config.age_half_life > 0 else spread * np.inf
    drift = None
    if config.drift > 0:
        steps = rng.standard_normal((config.visits, config.forums)) * (config.drift / 100.0)
        steps[0] = 0.0
        drift = np.cumsum(steps, axis=0)
    return {"forum_half_life": half_life, "logit_drift": drift}


def _arrivals(
    config: ForumConfig, activity: FloatArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Forum and birth visit of every post, sorted by birth (initial posts born <= 0)."""
    start = -config.lifetime + 1
    total = rng.poisson(config.posts_per_visit * (config.visits - start))
    born = np.sort(rng.integers(start, config.visits, size=total)).astype(np.intp)
    forum = rng.choice(config.forums, size=total, p=activity).astype(np.intp)
    return forum, born


def _subscriptions(
    config: ForumConfig, activity: FloatArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    sizes = config.min_subscriptions + rng.poisson(config.extra_subscriptions, config.members)
    sizes = np.minimum(sizes, config.forums)
    weights = np.sqrt(activity) / np.sqrt(activity).sum()
    subs = [np.sort(rng.choice(config.forums, size=s, replace=False, p=weights)) for s in sizes]
    start = np.zeros(config.members + 1, np.intp)
    np.cumsum(sizes, out=start[1:])
    return start, np.concatenate(subs).astype(np.intp)


#: The named forum worlds of the freshness evidence: today's stationary world, then ageing,
#: fatigue and drift each alone, ageing and drift together (the world forgetting is for) and
#: all three together.
FRESHNESS_WORLDS: dict[str, ForumConfig] = {
    "forum": ForumConfig(),
    "forum-ageing": ForumConfig(age_half_life=1_500.0),
    "forum-fatigue": ForumConfig(fatigue=0.5),
    "forum-drift": ForumConfig(drift=1.0),
    "forum-ageing-drift": ForumConfig(age_half_life=1_500.0, drift=1.0),
    "forum-fresh": ForumConfig(age_half_life=1_500.0, fatigue=0.5, drift=1.0),
}
