"""The decision log: every served slate, kept for offline evaluation and joined with outcomes.

The web tier appends each non-empty slate to a capped Redis Stream in the same round trip that
remembers it for attribution (an empty slate has nothing to evaluate; it is counted in
``postbandit_recommendations_total{result="empty"}`` and logged). The workers append every
event that counts (duplicates never) to its forum's outcome stream, in the step that counts
it. :func:`export` merges the forums' streams and joins them with the decisions as JSON lines,
one per decision::

    {"request_id", "time", "user_id", "policy", "experiment", "variant", "candidates", "final",
     "items": [{"rank", "post_id", "forum_id", "score", "alpha", "beta", "propensity",
                "impression", "click"}]}

``candidates`` is how many posts were eligible for the request; ``score`` is the sampled
(Thompson), mean (greedy) or random score that ranked the post and ``alpha``/``beta`` the
posterior the policy used. ``experiment`` and ``variant`` name the experiment arm that served
the slate (null outside an experiment); ``propensity`` is the exact probability that the
policy put the post at its rank where the policy knows it (``explore``: 1 / candidates), else
null. ``final`` is true once the attribution window of the slate and the grace after it
(``BANDIT_EVENT_GRACE_SECONDS``, while events accepted in the window may still be applied) have
passed, so no later event can change its outcomes. A click counts its impression too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

import numpy as np
import orjson
from redis.typing import EncodableT

from bandits import Slate
from bandits.posterior import FloatArray
from core.storage import StreamEntry, request_time
from core.storage.decision_log import DecisionLog

PAGE = 1000
ITEM_FIELDS = ("posts", "forums", "scores", "alpha", "beta")
# Stream ids are the Redis server's clock, request ids the web process's: allow for skew.
CLOCK_SKEW_SECONDS = 60.0


def fields(
    request_id: str,
    now: float,
    user_id: str,
    slate: Slate,
    items: Sequence[dict[str, Any]],
    experiment: str | None = None,
    variant: str | None = None,
) -> dict[EncodableT, EncodableT]:
    """The stream entry of one served slate (``items`` as served, aligned with ``slate``),
    served by ``variant`` of ``experiment`` when given.

    Per-post values are stored as parallel compact JSON arrays, encoded by orjson straight
    from the slate's numpy arrays (the shortest text that reads back as the same float, as
    with ``json.dumps``, though a float below 1e-4 may be spelt without an exponent; a float
    that is not finite would be ``null``): encoding them is the one cost the
    decision log adds to the request path. The experiment, variant and propensities are
    fields only when there are any.
    """
    entry: dict[EncodableT, EncodableT] = {
        "request_id": request_id,
        "time": round(now, 3),
        "user_id": user_id,
        "policy": slate.policy,
        "candidates": slate.eligible,
        "posts": orjson.dumps([item["post_id"] for item in items]),
        "forums": orjson.dumps([item["forum_id"] for item in items]),
        "scores": _array(slate.scores),
        "alpha": _array(slate.alpha),
        "beta": _array(slate.beta),
    }
    if experiment is not None and variant is not None:
        entry.update(experiment=experiment, variant=variant)
    if slate.propensities is not None:
        entry["propensities"] = _array(slate.propensities)
    return entry


def _array(values: FloatArray) -> bytes:
    """A float array as a JSON array (a view that is not contiguous through ``tolist``)."""
    return orjson.dumps(values, default=_listed, option=orjson.OPT_SERIALIZE_NUMPY)


def _listed(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a float array")


@dataclass
class ExportSummary:
    decisions: int = 0
    final: int = 0
    outcomes_trimmed: bool = False  # outcomes older than the oldest kept may be missing


def export(
    log: DecisionLog, since: float, until: float, horizon: int, now: float, out: IO[str]
) -> ExportSummary:
    """Write the decisions served in [since, until] (unix seconds) with their outcomes to ``out``;
    ``horizon`` is how long after serving an event may still be applied (the attribution window
    plus the grace).

    Raises:
        redis.RedisError: Redis failed (the output is then incomplete).
    """
    outcomes = _outcomes(log, since, until, horizon)
    kept_since = log.outcomes_kept_since()
    summary = ExportSummary(outcomes_trimmed=kept_since is not None and kept_since > since)
    for _, entry in _scan(log.read_decisions, since, until):
        record = _joined(entry, outcomes.get(entry["request_id"], {}), now, horizon)
        out.write(json.dumps(record) + "\n")
        summary.decisions += 1
        summary.final += record["final"]
    return summary


def _joined(
    entry: dict[str, str], seen: dict[str, set[str]], now: float, horizon: int
) -> dict[str, Any]:
    served_at = float(entry["time"])
    columns = zip(*(json.loads(entry[name]) for name in ITEM_FIELDS), strict=True)
    posts = json.loads(entry["posts"])
    chances = json.loads(entry.get("propensities", "null")) or [None] * len(posts)
    items = []
    for rank, (post_id, forum_id, score, alpha, beta) in enumerate(columns, start=1):
        kinds = seen.get(post_id, set())
        items.append({"rank": rank, "post_id": post_id, "forum_id": forum_id, "score": score,
                      "alpha": alpha, "beta": beta, "propensity": chances[rank - 1],
                      "impression": bool(kinds), "click": "c" in kinds})  # fmt: skip
    return {
        "request_id": entry["request_id"],
        "time": served_at,
        "user_id": entry["user_id"],
        "policy": entry["policy"],
        "experiment": entry.get("experiment"),
        "variant": entry.get("variant"),
        "candidates": int(entry["candidates"]),
        "final": now > served_at + horizon,
        "items": items,
    }


def _outcomes(
    log: DecisionLog, since: float, until: float, horizon: int
) -> dict[str, dict[str, set[str]]]:
    """request id -> post id -> kinds seen ('i', 'c'), for requests issued in [since, until]."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for stream in log.outcome_streams():  # one a forum: the union is the set of outcomes
        for _, entry in _scan(partial(log.read_outcomes, stream), since, until + horizon):
            issued = request_time(entry["r"])
            if (
                issued is not None
                and since - CLOCK_SKEW_SECONDS <= issued <= until + CLOCK_SKEW_SECONDS
            ):
                found[entry["r"]][entry["p"]].add(entry["k"])
    return found


Reader = Callable[[str, str, int], list[StreamEntry]]


def _scan(read: Reader, since: float, until: float) -> Iterator[StreamEntry]:
    """Every entry of a stream with ids in [since, until], a page at a time."""
    start, end = str(int(since * 1000)), str(int(until * 1000))
    while True:
        page: list[StreamEntry] = read(start, end, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        start = f"({page[-1][0]}"
