"""Request and response models: every input limit of the API is declared here, once.

The OpenAPI description and the validation both come from these models, so they cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

ID_CHARS = "[A-Za-z0-9_.:-]"
ID_PATTERN = f"^{ID_CHARS}+$"
ID_MAX = 64
MAX_N = 50
MAX_FORUMS = 100
MAX_EXCLUDE = 500
MAX_EVENTS = 1000
MIN_TTL = 60
MAX_TTL = 30 * 86_400
MAX_BODY_BYTES = 512 * 1024

Id = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]


def _split_csv(value: object) -> object:
    # Empty items are kept so that the id rules refuse them ("a,,b" and "forums=" are 400):
    # in the query string an empty list and a list of one empty id look the same.
    return value.split(",") if isinstance(value, str) else value


CsvIds = Annotated[list[Id], BeforeValidator(_split_csv)]


def _decimal(value: object) -> object:
    # Only ASCII digits are read as a number: int() alone also takes " 5", "5_0" and "+5", and
    # pydantic's lax mode "1.0", none of which the OpenAPI document calls an integer.
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value


QueryInt = Annotated[int, Field(strict=True), BeforeValidator(_decimal)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecommendationQuery(Strict):
    """Query string of ``GET /v1/recommendations``."""

    user_id: Id
    n: QueryInt = Field(default=10, ge=1, le=MAX_N)
    forums: CsvIds | None = Field(default=None, min_length=1, max_length=MAX_FORUMS)
    exclude: CsvIds = Field(default_factory=list, min_length=1, max_length=MAX_EXCLUDE)


class Event(Strict):
    request_id: Id
    post_id: Id


class EventBatch(Strict):
    """Body of ``POST /v1/impressions`` and ``POST /v1/clicks``."""

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class PostIn(Strict):
    """Body of ``PUT /v1/posts/{post_id}``."""

    forum_id: Id
    created_at: datetime | None = None
    ttl_seconds: int | None = Field(default=None, ge=MIN_TTL, le=MAX_TTL)


class Item(Strict):
    post_id: str
    forum_id: str
    rank: int


class Recommendations(Strict):
    request_id: str
    policy: str
    items: list[Item]
    degraded: bool


class Accepted(Strict):
    accepted: int


class Posterior(Strict):
    alpha: float
    beta: float
    mean: float
    interval95: list[float] = Field(min_length=2, max_length=2)


class PostView(Strict):
    """A post's counts and posterior (``GET``/``PUT /v1/posts/{post_id}``)."""

    post_id: str
    forum_id: str
    impressions: int
    clicks: int
    posterior: Posterior
    created_at: float
    expires_at: float
    live: bool
    withdrawn: bool


class PolicyCounts(Strict):
    """A forum's (impressions, clicks) as the policy takes them: over each post's first
    ``window`` impressions (``BANDIT_FORUM_WINDOW``), or over every impression when it is 0."""

    impressions: int
    clicks: int
    window: int


class ForumView(Strict):
    """A forum's totals over every impression, its live posts, the counts the policy takes
    and ``prior_mean``, the forum's posterior mean on which a new post's prior is centred."""

    forum_id: str
    impressions: int
    clicks: int
    ctr: float | None
    live_posts: int
    policy_counts: PolicyCounts
    prior_mean: float


class ForumList(Strict):
    forums: list[ForumView]


class Status(Strict):
    status: Literal["ok"]


class Readiness(Strict):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool]


class ErrorDetail(Strict):
    code: str
    message: str
    field: str | None


class ErrorBody(Strict):
    """The one error shape of the API (see app.errors)."""

    error: ErrorDetail


EventType = Literal["impression", "click"]
