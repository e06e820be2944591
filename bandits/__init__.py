"""Thompson-sampling slate selection for a forum homepage: pure algorithms, no I/O.

Public API::

    Candidates(*, post_forum, post_impressions, post_clicks, forum_impressions, forum_clicks,
               post_created_at=None)
    make_policy(name, **params) -> Policy          # name in POLICIES
    Policy.select(cands, n, rng, allowed_forums=None, exclude=None, per_forum_cap=None) -> Slate
    post_posterior(...), forum_posterior(...), beta_bernoulli(...) -> (alpha, beta)
    beta_summary(alpha, beta, level=0.95) -> (mean, lo, hi)
    decayed_update(value, last, now, half_life, increment=0.0) -> (value, time)
    TopNSampler.build(policy, cands, delta=1e-4) -> sampler   # once per refresh
    sampler.select(n, rng, allowed_forums=None, exclude=None, per_forum_cap=None) -> Slate
        # policy.select drawing only the posts that can enter the slate (bandits/topn.py)
"""

from bandits.candidates import Candidates
from bandits.forgetting import decayed_update
from bandits.policies import (
    POLICIES,
    EpsilonGreedy,
    Explore,
    FlatTS,
    Greedy,
    Policy,
    RandomPolicy,
    Recent,
    TwoLevelTS,
    make_policy,
)
from bandits.posterior import (
    beta_bernoulli,
    beta_summary,
    forum_posterior,
    global_posterior,
    kl_bernoulli,
    lai_robbins_bound,
    post_posterior,
)
from bandits.slate import Slate
from bandits.topn import TopNSampler, Trace

__all__ = [
    "POLICIES",
    "Candidates",
    "EpsilonGreedy",
    "Explore",
    "FlatTS",
    "Greedy",
    "Policy",
    "RandomPolicy",
    "Recent",
    "Slate",
    "TopNSampler",
    "Trace",
    "TwoLevelTS",
    "beta_bernoulli",
    "beta_summary",
    "decayed_update",
    "forum_posterior",
    "global_posterior",
    "kl_bernoulli",
    "lai_robbins_bound",
    "make_policy",
    "post_posterior",
]
