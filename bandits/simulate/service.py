"""Drive a running postbandit service over HTTP as a :class:`Recommender` (``--target URL``).

The simulation's forum world talks to the real service exactly as the homepage and the app do:
posts are registered (``PUT /v1/posts``) when they are born and withdrawn (``DELETE``) when they
die, every visit asks ``GET /v1/recommendations`` and reports the seen posts as impressions and
the clicked ones as clicks. The service learns with its real asynchronous path (Celery worker,
statistics snapshot refreshed every ``BANDIT_REFRESH_SECONDS``), so comparing it with the
in-process policy on the same seeds measures what that delay costs.

Ids are prefixed with a run id, so runs never share posts, forums or statistics. Each visit uses
its own member id: the simulator's own exclusion of read posts stands in for the service's
re-click filter. Only the standard library is used (``http.client``).
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bandits.candidates import IntArray
from bandits.simulate.recommenders import BoolArray
from bandits.simulate.runner import ForumSetting, Outcome, environment_rng, run_forum

SERVICE_LABEL = "service"
MAX_TTL_SECONDS = 30 * 86_400
MAX_FORUMS = 100
MAX_EXCLUDE = 500


class ServiceError(RuntimeError):
    """The service answered with an unexpected status."""


class ServiceRecommender:
    """A :class:`~bandits.simulate.recommenders.Recommender` backed by the HTTP API."""

    def __init__(self, base_url: str, run_id: str, admin_token: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"target must be an http://host:port URL, got {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout = timeout
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._prefix = f"sim{run_id}"
        self._token = admin_token
        self._visit = 0
        self._request_id = ""
        self.variant: str | None = None  # the experiment variant that served the last slate
        self.requests = 0

    def add_posts(
        self, ids: IntArray, forums: IntArray, created_at: IntArray | None = None
    ) -> None:
        # The service stamps a post's creation time itself when it is registered.
        for post, forum in zip(ids.tolist(), forums.tolist(), strict=True):
            body = {"forum_id": self._forum_id(forum), "ttl_seconds": MAX_TTL_SECONDS}
            self._call("PUT", f"/v1/posts/{self._post_id(post)}", body, admin=True, ok=(200, 201))

    def expire_posts(self, ids: IntArray) -> None:
        for post in ids.tolist():
            self._call("DELETE", f"/v1/posts/{self._post_id(post)}", admin=True, ok=(204, 404))

    def recommend(
        self,
        n: int,
        *,
        allowed_forums: IntArray | None = None,
        exclude: IntArray | None = None,
        per_forum_cap: int | None = None,
    ) -> IntArray:
        """Ask the service; ``per_forum_cap`` is the service's own setting and is not sent."""
        self._visit += 1
        query = f"user_id={self._prefix}-v{self._visit}&n={n}"
        if allowed_forums is not None:
            query += "&forums=" + ",".join(self._forum_id(f) for f in allowed_forums[:MAX_FORUMS])
        if exclude is not None and exclude.size:
            recent = exclude[-MAX_EXCLUDE:]
            query += "&exclude=" + ",".join(self._post_id(p) for p in recent.tolist())
        body = self._call("GET", f"/v1/recommendations?{query}", ok=(200,))
        self._request_id = body["request_id"]
        self.variant = body.get("variant")
        return np.array([self._post_number(i["post_id"]) for i in body["items"]], dtype=np.intp)

    def record(self, shown: IntArray, clicked: BoolArray) -> None:
        for path, posts in (("/v1/impressions", shown), ("/v1/clicks", shown[clicked])):
            if posts.size:
                events = [{"request_id": self._request_id, "post_id": self._post_id(p)}
                          for p in posts.tolist()]  # fmt: skip
                self._call("POST", path, {"events": events}, ok=(202,))

    def close(self) -> None:
        self._conn.close()

    def _post_id(self, number: int) -> str:
        return f"{self._prefix}-p{number}"

    def _forum_id(self, number: int) -> str:
        return f"{self._prefix}-f{number}"

    def _post_number(self, post_id: str) -> int:
        return int(post_id.rsplit("-p", 1)[1])

    def _call(
        self, method: str, path: str, body: Any = None, *, admin: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> Any:  # fmt: skip
        """One request on the kept-alive connection (reconnecting once if the server closed it).

        Raises:
            ServiceError: the status is not in ``ok``.
        """
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if admin:
            headers["Authorization"] = f"Bearer {self._token}"
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._conn.close()
                self._conn = http.client.HTTPConnection(self._host, self._port, self._timeout)
                if attempt == 2:
                    raise
        self.requests += 1
        if response.status not in ok:
            raise ServiceError(
                f"{method} {path.partition('?')[0]}: {response.status} {data[:300]!r}"
            )
        return json.loads(data) if data else None


def run_service(
    setting: ForumSetting,
    seeds: Sequence[int],
    target: str,
    admin_token: str,
    progress: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Run the forum world of each seed against the service at ``target``, one after another.

    The worlds are the ones the in-process policies see for the same seeds.
    """
    run_tag = f"{int(time.time()) % 1_000_000:06d}"
    outcomes = []
    for seed in seeds:
        start = time.perf_counter()
        world = setting.generate(environment_rng(seed))
        rec = ServiceRecommender(target, f"{run_tag}s{seed}", admin_token)
        try:
            outcome = run_forum(world, rec, SERVICE_LABEL, seed, start)
        finally:
            rec.close()
        outcomes.append(outcome)
        line = f"service seed {seed}: CTR {outcome.ctr:.4f}, {rec.requests} requests"
        (progress or _stderr)(f"{line}, {outcome.seconds:.0f} s")
    return outcomes


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
