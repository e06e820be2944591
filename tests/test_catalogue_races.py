"""Catalogue writes racing each other through a real gunicorn (2 workers), with real threads:
a withdrawal answered 204 is never undone, and one id never ends up in two forums."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import requests

from tests.processes import ADMIN, ADMIN_TOKEN, Proc, service_env, start_web, stop_all, wait_for

RACES = 150


@pytest.fixture
def web(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[str]:
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=ADMIN_TOKEN)
    procs: list[Proc] = []
    try:
        proc, base = start_web(env, tmp_path, workers=2)
        procs.append(proc)
        yield base
    finally:
        stop_all(procs)


def race(*calls: Callable[[], int]) -> list[int]:
    """Run the calls at the same moment, each in its own thread; their status codes."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], int]) -> int:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def put(session: requests.Session, base: str, post_id: str, forum_id: str) -> int:
    url, body = f"{base}/v1/posts/{post_id}", {"forum_id": forum_id, "ttl_seconds": 3600}
    return session.put(url, json=body, headers=ADMIN, timeout=30).status_code


def delete(session: requests.Session, base: str, post_id: str) -> int:
    return session.delete(f"{base}/v1/posts/{post_id}", headers=ADMIN, timeout=30).status_code


def served(base: str, forum_id: str) -> set[str]:
    query = {"user_id": "reader", "n": 50, "forums": forum_id}
    body = requests.get(f"{base}/v1/recommendations", params=query, timeout=30).json()
    return {item["post_id"] for item in body["items"]}


def test_a_withdrawal_answered_204_is_never_undone_by_a_racing_update(web: str) -> None:
    editor, moderator = requests.Session(), requests.Session()
    for i in range(RACES):
        assert put(editor, web, f"p{i}", "news") == 201
    outcomes = [
        race(partial(put, editor, web, f"p{i}", "news"), partial(delete, moderator, web, f"p{i}"))
        for i in range(RACES)
    ]
    assert all(d == 204 and p in (200, 409) for p, d in outcomes), outcomes
    for i in range(RACES):
        view = editor.get(f"{web}/v1/posts/p{i}", timeout=30).json()
        assert (view["withdrawn"], view["live"]) == (True, False), view
        assert put(editor, web, f"p{i}", "news") == 409
    # Once both web workers serve a post registered after the races, their snapshots are newer
    # than every withdrawal: the withdrawn posts must never be served again.
    assert put(editor, web, "sentinel", "news") == 201
    wait_for(lambda: all(served(web, "news") == {"sentinel"} for _ in range(10)), 30,
             "every web worker to serve the sentinel alone")  # fmt: skip
    for _ in range(40):
        assert served(web, "news") == {"sentinel"}


def test_a_new_id_registered_in_two_forums_at_once_lands_in_one(web: str) -> None:
    first, second = requests.Session(), requests.Session()
    for i in range(RACES // 3):
        statuses = race(partial(put, first, web, f"q{i}", "red"),
                        partial(put, second, web, f"q{i}", "blue"))  # fmt: skip
        assert sorted(statuses) == [201, 409], statuses
        winner = "red" if statuses[0] == 201 else "blue"
        view = first.get(f"{web}/v1/posts/q{i}", timeout=30).json()
        assert view["forum_id"] == winner
    listed = first.get(f"{web}/v1/forums", timeout=30).json()["forums"]
    assert sum(f["live_posts"] for f in listed) == RACES // 3
