"""Simulated experiments with member-level clustering, vectorised across seeds.

Each seed draws its own members: activity ~ LogNormal(0, 1) (a few members visit a lot),
impressions per slate uniform on 3..10 per member, CTR ~ Beta(2, 60) per member (mean
3.2 %), variant 50/50 and statistics bucket uniform. Slates go to members in proportion to
activity; each slate's clicks are Binomial(impressions, CTR), with the treatment's CTR
``ctr * (1 + lift) + shift``. Totals are cumulative at each look.
"""

import numpy as np

MEAN_IMPRESSIONS_PER_SLATE = 6.5  # uniform on 3..10


def _members(rng, n_seeds, n_members, buckets):
    act = rng.lognormal(0.0, 1.0, (n_seeds, n_members))
    return {
        "cum": np.cumsum(act, 1) / act.sum(1, keepdims=True),
        "k": rng.integers(3, 11, (n_seeds, n_members)),
        "p": rng.beta(2.0, 60.0, (n_seeds, n_members)),
        "variant": rng.integers(0, 2, (n_seeds, n_members)),
        "bucket": rng.integers(0, buckets, (n_seeds, n_members)),
    }


def _chunk(rng, n_seeds, looks, per_look, n_members, buckets, lift, shift):
    m = _members(rng, n_seeds, n_members, buckets)
    n_slates, rows = looks * per_look, np.arange(n_seeds)[:, None]
    u = rng.random((n_seeds, n_slates)) + rows
    member = np.minimum(np.searchsorted((m["cum"] + rows).ravel(), u.ravel()),
                        (rows * n_members + n_members - 1).repeat(n_slates))  # fmt: skip
    k, p, v = m["k"].ravel()[member], m["p"].ravel()[member], m["variant"].ravel()[member]
    p = np.clip(np.where(v == 1, p * (1 + lift) + shift, p), 0.0, 1.0)
    clicks = rng.binomial(k, p)
    look = np.tile(np.arange(n_slates) // per_look, n_seeds)
    row = np.repeat(np.arange(n_seeds), n_slates)
    cell = ((row * looks + look) * 2 + v) * buckets + m["bucket"].ravel()[member]
    size, shape = n_seeds * looks * 2 * buckets, (n_seeds, looks, 2, buckets)
    out = {name: np.bincount(cell, w, size).reshape(shape)
           for name, w in (("slates", None), ("impressions", k), ("clicks", clicks))}  # fmt: skip
    _, first = np.unique(member, return_index=True)
    out["members"] = np.bincount(cell[first], None, size).reshape(shape)
    arm = cell // buckets
    for name, w in (("cc", clicks * clicks), ("ci", clicks * k), ("ii", k * k)):
        out[name] = np.bincount(arm, w, size // buckets).reshape(shape[:3])
    return {name: np.cumsum(a, axis=1) for name, a in out.items()}


def simulate(seed, n_seeds, looks, per_look, *, n_members=2000, buckets=64, lift=0.0, shift=0.0):
    """Cumulative totals at each look: members, slates, impressions, clicks of shape
    (seeds, looks, 2, buckets), and per (seeds, looks, 2) the slate-level sums of clicks^2,
    clicks * impressions and impressions^2 (for a slate-as-unit variance)."""
    rng, parts = np.random.default_rng(seed), []
    for start in range(0, n_seeds, 100):
        size = min(100, n_seeds - start)
        parts.append(_chunk(rng, size, looks, per_look, n_members, buckets, lift, shift))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
