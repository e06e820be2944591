"""A small demo catalogue, so a fresh development server has posts to recommend."""

from __future__ import annotations

from app import service
from app.runtime import Runtime
from app.schemas import PostIn

DEMO_FORUMS = ("maths", "physics", "housing", "sports", "jobs")


def load(rt: Runtime, posts_per_forum: int = 8) -> int:
    """Register ``posts_per_forum`` posts in each demo forum (idempotent); the count."""
    count = 0
    for forum_id in DEMO_FORUMS:
        for i in range(1, posts_per_forum + 1):
            service.put_post(rt, f"{forum_id}-{i}", PostIn(forum_id=forum_id))
            count += 1
    return count
