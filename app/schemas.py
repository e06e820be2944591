"""Request and response models: every input limit of the API is declared here, once.

The OpenAPI description and the validation both come from these models, so they cannot drift.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

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
# How far ahead of this server's clock a caller's created_at may be (its clock may run fast).
MAX_CLOCK_SKEW_SECONDS = 300
# gunicorn's limit on the request line (method, path, query, protocol), its largest setting;
# gunicorn.conf.py sets it and answers a longer line in the error shape of the API.
MAX_REQUEST_LINE = 8190

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


def _whole(value: object) -> object:
    # JSON Schema calls 3600.0 and 36e2 integers, so the OpenAPI document does; "3600" and
    # true it does not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds sit before the validator: put after it, in a union with None, pydantic writes them
# into the JSON schema as "ge"/"le", which JSON Schema does not know.
Ttl = Annotated[int, Field(strict=True, ge=MIN_TTL, le=MAX_TTL), BeforeValidator(_whole)]


# RFC 3339 section 5.6 (with its "T" and "Z" in either case): seconds and an offset required.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    """An RFC 3339 string as an aware datetime; anything else as it is, for the strict
    datetime type to refuse. (pydantic alone also takes "2026-11-29", "1700000000", a space
    for the T and "+0100".)"""
    if not isinstance(value, str):
        return value
    if not RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc3339",
            "Input should be an RFC 3339 date-time with a timezone, like 2024-06-01T12:00:00Z",
        )
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise PydanticCustomError(
            "datetime_parsing", "Input should be a valid datetime, {reason}", {"reason": str(exc)}
        ) from exc


def _not_ahead(value: datetime) -> datetime:
    if value.timestamp() > time.time() + MAX_CLOCK_SKEW_SECONDS:
        raise PydanticCustomError(
            "in_future",
            "Input should be at most {skew} seconds in the future",
            {"skew": MAX_CLOCK_SKEW_SECONDS},
        )
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_not_ahead)]


# GET /v1/forums pages: forums per page, and the opaque cursor (a forum id's bytes in hex).
MAX_FORUM_PAGE = 100
CURSOR_MAX = 2 * ID_MAX
CURSOR_PATTERN = r"^(?:[0-9a-f]{2})+$"


class Strict(BaseModel):
    """Unknown fields are refused, and nothing is coerced: a JSON string is not an integer
    (``"3600"``), nor an integer a date-time."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RecommendationBody(Strict):
    """Body of ``POST /v1/recommendations``: the query of ``GET`` as JSON, for lists too long
    for a request line (``MAX_REQUEST_LINE``). ``exclude`` may be empty here."""

    user_id: Id
    n: Annotated[int, Field(strict=True, ge=1, le=MAX_N), BeforeValidator(_whole)] = 10
    forums: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_FORUMS)
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDE)


class RecommendationQuery(RecommendationBody):
    """Query string of ``GET /v1/recommendations``: the fields of the body, read from text
    (lists comma-separated, so an empty one cannot be spelt)."""

    n: QueryInt = Field(default=10, ge=1, le=MAX_N)
    forums: CsvIds | None = Field(default=None, min_length=1, max_length=MAX_FORUMS)
    exclude: CsvIds = Field(default_factory=list, min_length=1, max_length=MAX_EXCLUDE)


# One event of a batch: validated as strictly as a model's fields (the same errors), kept as
# the parsed dict: a batch holds up to MAX_EVENTS, and a model each made validation a third
# slower. (No docstring: it would become the OpenAPI description.)
class Event(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]
    request_id: Id
    post_id: Id


class EventBatch(Strict):
    """Body of ``POST /v1/impressions`` and ``POST /v1/clicks``."""

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class PostIn(Strict):
    """Body of ``PUT /v1/posts/{post_id}``. An update keeps the post's ``created_at`` and
    lifetime (``ttl_seconds``) unless it gives them; a new post defaults to now and
    ``BANDIT_POST_TTL_SECONDS``."""

    forum_id: Id
    created_at: Moment | None = Field(
        default=None,
        description=f"RFC 3339 date-time with a timezone, at most {MAX_CLOCK_SKEW_SECONDS} s "
        "ahead of the server's clock",
    )
    ttl_seconds: Ttl | None = None


class Item(Strict):
    post_id: str
    forum_id: str
    rank: int


class Recommendations(Strict):
    """A slate; ``experiment`` and ``variant`` name the experiment arm that chose it (null
    outside an experiment), ``policy`` the policy that did."""

    request_id: str
    policy: str
    experiment: str | None
    variant: str | None
    items: list[Item]
    degraded: bool


class Accepted(Strict):
    accepted: int


class Posterior(Strict):
    alpha: float
    beta: float
    mean: float
    interval95: list[float] = Field(min_length=2, max_length=2)


class VariantTotals(Strict):
    """What one variant's slates of the running experiment counted."""

    impressions: int
    clicks: int


class DecayedCounts(Strict):
    """A post's decayed counts at the time of the read: each event weighs
    ``2 ** (-age / half_life_seconds)`` (``BANDIT_HALF_LIFE_SECONDS``)."""

    impressions: float
    clicks: float


class PostView(Strict):
    """A post's counts and posterior (``GET``/``PUT /v1/posts/{post_id}``); while an
    experiment runs, ``variants``: the part of the counts from each variant's slates.
    ``impressions`` and ``clicks`` are the exact totals; with a half-life
    (``half_life_seconds``, else null) ``decayed`` holds the decayed counts that the policy
    reads, and ``posterior`` is computed from them (and the forum's decayed counts)."""

    post_id: str
    forum_id: str
    impressions: int
    clicks: int
    posterior: Posterior
    created_at: float
    expires_at: float
    live: bool
    withdrawn: bool
    half_life_seconds: int | None
    decayed: DecayedCounts | None
    variants: dict[str, VariantTotals] | None = None


class PolicyCounts(Strict):
    """A forum's (impressions, clicks) as the policy takes them: over each post's first
    ``window`` impressions (``BANDIT_FORUM_WINDOW``), or over every impression when it is 0;
    with a half-life (``half_life_seconds``, else null) decayed to the time of the read."""

    impressions: float
    clicks: float
    window: int
    half_life_seconds: int | None


class ForumView(Strict):
    """A forum's totals over every impression, its live posts, the counts the policy takes
    and ``prior_mean``, the forum's posterior mean on which a new post's prior is centred;
    while an experiment runs, ``variants``: the part of the totals from each variant's
    slates."""

    forum_id: str
    impressions: int
    clicks: int
    ctr: float | None
    live_posts: int
    policy_counts: PolicyCounts
    prior_mean: float
    variants: dict[str, VariantTotals] | None = None


class ForumsQuery(Strict):
    """Query string of ``GET /v1/forums``: a page of at most ``limit`` forums, after the
    ``cursor`` that the previous page gave as ``next_cursor``."""

    limit: QueryInt = Field(default=MAX_FORUM_PAGE, ge=1, le=MAX_FORUM_PAGE)
    cursor: str | None = Field(default=None, min_length=1, max_length=CURSOR_MAX,
                               pattern=CURSOR_PATTERN)  # fmt: skip


class ForumList(Strict):
    """A page of the forums that have posts, in id order; ``next_cursor`` fetches the next
    page (``?cursor=``), null on the last."""

    forums: list[ForumView]
    next_cursor: str | None


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
