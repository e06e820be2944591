"""GET /v1/posts/{id} and /v1/forums/{id} read one forum, whatever the number of forums."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis
from flask.testing import FlaskClient

from app.runtime import Runtime
from bandits import beta_summary, forum_posterior, post_posterior
from core.storage import Storage


def seed(storage: Storage, forums: int) -> None:
    """Forums f0..f{forums-1}, one post each; f0 and f1 get a few counted events."""
    now = time.time()
    for f in range(forums):
        storage.catalogue.put_post(f"p{f}", f"f{f}", now, now + 3600, 60)
    storage.counting.apply_events("c", [(f"r{r}", "p0", "f0") for r in range(3)], 60)
    storage.counting.apply_events("i", [(f"r{r}", "p0", "f0") for r in range(3, 8)], 60)
    if forums > 1:
        storage.counting.apply_events("i", [(f"r{r}", "p1", "f1") for r in range(4)], 60)


def expected_views(storage: Storage, rt: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The posterior of p0 and the prior mean of f0 as computed before, from every forum."""
    forums = storage.catalogue.get_forums(storage.catalogue.forum_ids(), time.time())
    imps = np.array([f.policy_counts[0] for f in forums])
    clicks = np.array([f.policy_counts[1] for f in forums])
    (f0,) = [i for i, f in enumerate(forums) if f.forum_id == "f0"]
    post = storage.catalogue.get_post("p0")
    assert post is not None
    alpha, beta = post_posterior(
        np.array([post.impressions]), np.array([post.clicks]), imps[[f0]], clicks[[f0]],
        imps.sum(), clicks.sum(), rt.settings.prior_strength,
    )  # fmt: skip
    mean, low, high = beta_summary(alpha, beta, 0.95)
    posterior = {"alpha": float(alpha[0]), "beta": float(beta[0]), "mean": float(mean[0]),
                 "interval95": [float(low[0]), float(high[0])]}  # fmt: skip
    f_alpha, f_beta = forum_posterior(imps, clicks, imps.sum(), clicks.sum())
    prior_mean = float(f_alpha[f0] / (f_alpha[f0] + f_beta[f0]))
    return posterior, {"prior_mean": prior_mean, "impressions": 8, "clicks": 3}


def commands(client: redis.Redis) -> int:
    """Commands the server ran so far, the INFO calls of this count left out."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def cost(rclient: redis.Redis, client: FlaskClient, path: str) -> tuple[int, dict[str, Any]]:
    before = commands(rclient)
    response = client.get(path)
    used = commands(rclient) - before
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return used, body


@pytest.mark.parametrize("loaded", [True, False], ids=["snapshot", "no-snapshot-yet"])
def test_post_and_forum_views_give_the_numbers_computed_from_every_forum(
    client: FlaskClient, rt: Runtime, loaded: bool
) -> None:
    seed(rt.storage, 3)
    if loaded:
        assert rt.snapshots.get() is not None
    posterior, forum = expected_views(rt.storage, rt)
    view = client.get("/v1/posts/p0").json
    assert view is not None
    interval = view["posterior"].pop("interval95")
    assert interval == pytest.approx(posterior.pop("interval95"))
    assert view["posterior"] == pytest.approx(posterior)
    f0 = client.get("/v1/forums/f0").json
    assert f0 is not None
    assert f0["prior_mean"] == pytest.approx(forum["prior_mean"])
    assert (f0["impressions"], f0["clicks"]) == (forum["impressions"], forum["clicks"])
    listed = {f["forum_id"]: f for f in client.get("/v1/forums").json["forums"]}  # type: ignore[index]
    assert listed["f0"] == f0


def test_post_and_forum_reads_do_not_grow_with_the_number_of_forums(
    config: dict[str, Any], rclient: redis.Redis
) -> None:
    from app import create_app

    used = {}
    for forums in (1, 500):
        rclient.flushdb()
        app = create_app(config)
        try:
            rt: Runtime = app.extensions["postbandit"]
            seed(rt.storage, forums)
            assert rt.snapshots.get() is not None  # a serving process has its snapshot
            client = app.test_client()
            used[forums] = (cost(rclient, client, "/v1/posts/p0")[0],
                            cost(rclient, client, "/v1/forums/f0")[0])  # fmt: skip
        finally:
            app.extensions["postbandit"].snapshots.stop()
    assert used[1] == used[500]
    assert max(used[1]) <= 5  # the forum, its counts, its live posts, the experiment state
