"""Service configuration: one declaration per environment variable, validated at start-up.

Each variable is one field, with its type, default, allowed values and description, of
:class:`Settings` (what the web tier and the worker read) or :class:`ServerSettings` (what
``gunicorn.conf.py`` reads in gunicorn's master), read by pydantic-settings. The README's
configuration table is rendered from the same fields (:func:`markdown_table`; ``python -m
core.settings`` prints it) and a test keeps the two equal.

Tests and tools pass a mapping instead of the environment (``Settings.from_mapping``). Every
refusal is a :class:`ConfigError` whose message names the variable and what it accepts; tokens
and URLs (which may hold a password) are never repeated in it. In production
(``BANDIT_ENV=production``) the web tier refuses to start without an admin token of its own.

This module imports pydantic and ``bandits`` only: gunicorn's master imports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, Self, TypeVar, get_args
from urllib.parse import urlsplit

from annotated_types import Ge, Le
from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from bandits import make_policy

DEV_ADMIN_TOKEN = "dev-admin-token"  # development only; production refuses it
MIN_PRODUCTION_TOKEN = 16  # characters of a production token: long enough not to be guessed
# A post's lifetime, as the API's ttl_seconds accepts it (app.schemas.MIN_TTL, MAX_TTL).
MIN_TTL, MAX_TTL = 60, 30 * 86_400
# The half-life of the decayed counts, when set: a minute to a year.
MIN_HALF_LIFE, MAX_HALF_LIFE = 60, 365 * 86_400

Role = Literal["web", "worker"]
PolicyName = Literal[
    "two_level_ts", "flat_ts", "greedy", "epsilon_greedy", "random", "recent", "explore"
]


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _exactly(pattern: str, what: str) -> BeforeValidator:
    """Refuse text that is not ``pattern`` as a whole: pydantic alone also reads " 5", "+5",
    "5.0" and "1_0" as numbers, which the table of allowed values does not promise."""
    regex = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, str) and not regex.fullmatch(value):
            raise ValueError(f"not {what}")
        return value

    return BeforeValidator(check)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
WholeNumber = Annotated[int, _exactly("[0-9]+", "a whole number")]
Number = Annotated[float, _exactly(_DECIMAL, "a number")]
# Visible ASCII without spaces: an HTTP client strips spaces around a header value, and the
# header is Latin-1, so a token with either could never match.
Token = Annotated[str, Field(pattern=r"^[!-~]*$", max_length=256)]
Host = Annotated[str, Field(pattern=r"^[A-Za-z0-9.:%_-]{1,253}$")]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(_upper),
    Field(
        default="INFO",
        alias="BANDIT_LOG_LEVEL",
        description="log level; logs are JSON lines on stdout (gunicorn's own on stderr)",
        json_schema_extra={"allowed": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL, any case"},
    ),
]
_REDIS_URL = r"^(?:rediss?|unix)://[!-~]+$"
_URL_ALLOWED = "a redis://, rediss:// or unix:// URL"
# Empty only when the statistics Redis is a cluster, which then refuses it with its reason.
_BROKER_URL = r"^(?:(?:rediss?|unix|sentinel)://[!-~]+)?$"
_BROKER_ALLOWED = (
    "a redis://, rediss:// or unix:// URL, or `sentinel://host:port` URLs joined by `;` "
    "(with `BANDIT_BROKER_MASTER_NAME`)"
)
SENTINEL_SCHEME = "sentinel://"

_CONFIG = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True, allow_inf_nan=False)


class Settings(BaseSettings):
    """What the web tier and the worker read; build with :meth:`from_env` or
    :meth:`from_mapping`."""

    model_config = _CONFIG

    env: Literal["development", "production"] = Field(
        "development", alias="BANDIT_ENV",
        description="`production` refuses to start without an admin token of its own "
        "(`BANDIT_ADMIN_TOKEN`) and refuses short tokens",
    )  # fmt: skip
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", alias="REDIS_URL", pattern=_REDIS_URL,
        description="Redis for statistics (`bin/run` embeds one when unset)",
        json_schema_extra={"allowed": _URL_ALLOWED, "secret": True},
    )  # fmt: skip
    redis_cluster: bool = Field(
        False, alias="BANDIT_REDIS_CLUSTER",
        description="`REDIS_URL` names a node of a Redis Cluster; `CELERY_BROKER_URL` must then "
        "name a separate Redis ([the cluster](#redis-cluster))",
        json_schema_extra={"allowed": "`true` or `false` (also 1/0, yes/no, on/off)",
                           "shown": "`false`"},
    )  # fmt: skip
    # No default of its own: Settings._derived_defaults gives one, from BANDIT_REDIS_CLUSTER.
    journal_replicas: WholeNumber = Field(  # type: ignore[assignment]
        None, alias="BANDIT_JOURNAL_REPLICAS", ge=0, le=5,
        description="replicas that must acknowledge an accepted event batch (Redis `WAIT`) "
        "before the API answers 202; none within half of `BANDIT_REDIS_TIMEOUT`: 503 "
        "([docs/reliability.md](docs/reliability.md#redis-cluster))",
        json_schema_extra={"shown": "`0`; `1` with `BANDIT_REDIS_CLUSTER`"},
    )  # fmt: skip
    broker_url: str = Field(
        "", alias="CELERY_BROKER_URL", pattern=_BROKER_URL,
        description="Celery broker: a plain Redis, or a Sentinel-managed one "
        "([broker modes](#redis-cluster))",
        json_schema_extra={"allowed": _BROKER_ALLOWED, "secret": True,
                           "shown": "= `REDIS_URL` (required with `BANDIT_REDIS_CLUSTER`)"},
    )  # fmt: skip
    broker_master_name: str = Field(
        "", alias="BANDIT_BROKER_MASTER_NAME", pattern=r"^[A-Za-z0-9_.:-]{0,64}$",
        description="the Sentinel master name of the broker; required with a `sentinel://` "
        "`CELERY_BROKER_URL`, refused without one",
        json_schema_extra={"allowed": "up to 64 characters from A-Z a-z 0-9 _ . : -"},
    )  # fmt: skip
    key_prefix: str = Field(
        "pb", alias="BANDIT_KEY_PREFIX", pattern=r"^[A-Za-z0-9_.:-]{1,32}$",
        description="prefix of every Redis key",
        json_schema_extra={"allowed": "1-32 characters from A-Z a-z 0-9 _ . : -"},
    )  # fmt: skip
    admin_token: Token = Field(
        "", alias="BANDIT_ADMIN_TOKEN",
        description="bearer token for catalogue writes; production requires one of at least "
        f"{MIN_PRODUCTION_TOKEN} characters, not the development one",
        json_schema_extra={"allowed": "up to 256 visible ASCII characters, no spaces",
                           "secret": True, "shown": f"`{DEV_ADMIN_TOKEN}` in development"},
    )  # fmt: skip
    app_token: Token = Field(
        "", alias="BANDIT_APP_TOKEN",
        description="bearer token required for event posts when set; in production at least "
        f"{MIN_PRODUCTION_TOKEN} characters",
        json_schema_extra={"allowed": "up to 256 visible ASCII characters, no spaces",
                           "secret": True, "shown": "empty (open)"},
    )  # fmt: skip
    policy: PolicyName = Field(
        "two_level_ts", alias="BANDIT_POLICY",
        description="policy served outside an experiment, unless a stopped experiment promoted "
        "a variant ([experiments](#experiments))",
    )  # fmt: skip
    prior_strength: Number = Field(
        10.0, alias="BANDIT_PRIOR_STRENGTH", ge=1e-3, le=1e9,
        description="pseudo-impressions of a post's prior, centred on its forum (`two_level_ts`, "
        "`greedy`, `epsilon_greedy`; the other policies take no prior strength)",
    )  # fmt: skip
    exploration: Number = Field(
        1.0, alias="BANDIT_EXPLORATION", ge=0.01, le=1.0,
        description="`two_level_ts` only: the post draw comes from the posterior with its "
        "variance scaled by this; 1 is Thompson sampling. Less explores less: "
        "[docs/quality.md](docs/quality.md) shows what 0.2 gains in the forum worlds and what "
        "it risks with a fixed set of posts",
    )  # fmt: skip
    per_forum_cap: WholeNumber = Field(
        0, alias="BANDIT_PER_FORUM_CAP", ge=0, le=50,
        description="most posts of one forum in a slate; 0: no cap",
    )  # fmt: skip
    forum_window: WholeNumber = Field(
        20, alias="BANDIT_FORUM_WINDOW", ge=0, le=1_000_000,
        description="the forum counts that the policy centres post priors on take each post's "
        "first this many impressions and their clicks; `0` takes every impression "
        "([event semantics](#event-semantics))",
    )  # fmt: skip
    half_life_seconds: WholeNumber = Field(
        0, alias="BANDIT_HALF_LIFE_SECONDS", ge=0, le=MAX_HALF_LIFE,
        description="`0`: off. Else the policy forgets: an event's weight in every count it "
        "reads halves every this many seconds (at least 60), so a post clicked long ago no "
        "longer outranks one clicked now ([forgetting](#forgetting-old-clicks))",
        json_schema_extra={"allowed": f"0, or a whole number in [{MIN_HALF_LIFE}, "
                                      f"{MAX_HALF_LIFE}]"},
    )  # fmt: skip
    attribution_seconds: WholeNumber = Field(
        86_400, alias="BANDIT_ATTRIBUTION_SECONDS", ge=1, le=MAX_TTL,
        description="how long a slate's events count: an event counts when it is accepted "
        "(answered 202) within this many seconds of its slate being served",
    )  # fmt: skip
    event_grace_seconds: WholeNumber = Field(
        3_600, alias="BANDIT_EVENT_GRACE_SECONDS", ge=0, le=MAX_TTL,
        description="how late after the attribution window an event accepted within it may "
        "still be applied and count (a worker outage, a backlog): served slates and de-dup "
        "markers are kept for the window plus this, and so is a batch in the journal "
        "([event lifecycle](docs/reliability.md#event-lifecycle))",
    )  # fmt: skip
    post_ttl_seconds: WholeNumber = Field(
        259_200, alias="BANDIT_POST_TTL_SECONDS", ge=MIN_TTL, le=MAX_TTL,
        description="default post lifetime (72 h); the limits are the API's `ttl_seconds`",
    )  # fmt: skip
    reclick_seconds: WholeNumber = Field(
        604_800, alias="BANDIT_RECLICK_SECONDS", ge=0, le=365 * 86_400,
        description="a member's clicked posts are hidden from them this long",
    )  # fmt: skip
    seen_limit: WholeNumber = Field(
        3, alias="BANDIT_SEEN_LIMIT", ge=0, le=100,
        description="a post shown to a member this many times within `BANDIT_SEEN_SECONDS` "
        "without a click is not recommended to them again in that window; `0` turns it off "
        "([seen-limit](#seen-limit))",
    )  # fmt: skip
    seen_seconds: WholeNumber = Field(
        86_400, alias="BANDIT_SEEN_SECONDS", ge=60, le=MAX_TTL,
        description="the seen-limit's window, counted from when each slate was served (a "
        "day: a post a member ignored three times comes back to them a day after the first "
        "of those, if it still lives; posts live 72 h by default)",
    )  # fmt: skip
    refresh_seconds: Number = Field(
        1.0, alias="BANDIT_REFRESH_SECONDS", ge=0.05, le=300.0,
        description="how often each web process refreshes its statistics snapshot",
    )  # fmt: skip
    slate_flush_seconds: Number = Field(
        0.005, alias="BANDIT_SLATE_FLUSH_SECONDS", ge=0.001, le=10.0,
        description="how often each web process writes the slates it served, behind the "
        "responses, in batches (sooner once 256 wait); a web process killed with SIGKILL "
        "loses the slates it holds: those of its last interval (while Redis fails, more)",
    )  # fmt: skip
    snapshot_dir: str = Field(
        "var/snapshots", alias="BANDIT_SNAPSHOT_DIR", pattern=r"^(?:\S(?:.*\S)?)?$",
        description="where web processes keep the last good snapshot, for a worker that starts "
        "while Redis is down ([docs/reliability.md](docs/reliability.md#the-snapshot-file)); "
        "empty turns it off",
        json_schema_extra={"allowed": "a directory, no spaces around it; empty: off"},
    )  # fmt: skip
    redis_timeout: Number = Field(
        0.25, alias="BANDIT_REDIS_TIMEOUT", ge=0.01, le=30.0,
        description="Redis socket timeout of the web tier (s)",
    )  # fmt: skip
    publish_timeout: Number = Field(
        1.0, alias="BANDIT_PUBLISH_TIMEOUT", ge=0.01, le=30.0,
        description="broker socket timeout of the web tier (s): an event post waits at most "
        "about three times this on a hung broker",
    )  # fmt: skip
    visibility_timeout: WholeNumber = Field(
        300, alias="BANDIT_VISIBILITY_TIMEOUT", ge=1, le=86_400,
        description="seconds after which an unacknowledged event task is delivered again, and "
        "a journalled batch not applied is published again "
        "([docs/reliability.md](docs/reliability.md#durability-settings))",
    )  # fmt: skip
    worker_metrics_port: WholeNumber = Field(
        9100, alias="BANDIT_WORKER_METRICS_PORT", ge=0, le=65_535,
        description="port of the worker's own `/metrics` (0 turns it off); a worker that "
        "cannot listen on it refuses to start",
    )  # fmt: skip
    worker_metrics_host: Host = Field(
        "0.0.0.0", alias="BANDIT_WORKER_METRICS_HOST",
        description="address the worker's `/metrics` listens on",
        json_schema_extra={"allowed": "a host name or IP address"},
    )  # fmt: skip
    decision_log_maxlen: WholeNumber = Field(
        100_000, alias="BANDIT_DECISION_LOG_MAXLEN", ge=0, le=10_000_000,
        description="served slates kept in the decision log (0 turns it off)",
    )  # fmt: skip
    decision_log_url: str = Field(
        "", alias="BANDIT_DECISION_LOG_URL", pattern=r"^(?:\S(?:.*\S)?)?$",
        description="where workers drain the decision log to, as Parquet files kept for "
        "offline evaluation: a directory or an fsspec URL (`s3://bucket/postbandit`...); "
        "empty turns it off ([decision log](#decision-log))",
        json_schema_extra={"allowed": "a directory or fsspec URL, no spaces around it; "
                           "empty: off", "secret": True},
    )  # fmt: skip
    decision_log_file_seconds: WholeNumber = Field(
        300, alias="BANDIT_DECISION_LOG_FILE_SECONDS", ge=10, le=86_400,
        description="each decision log file holds the entries of this many seconds; a slice "
        "is drained once it has passed",
    )  # fmt: skip
    decision_log_lock_seconds: WholeNumber = Field(
        300, alias="BANDIT_DECISION_LOG_LOCK_SECONDS", ge=5, le=3_600,
        description="the drain lock's lifetime, renewed after each slice drained: longer "
        "than writing one slice's files takes; a worker killed while draining holds the "
        "drain up this long",
    )  # fmt: skip
    seed: WholeNumber = Field(
        0, alias="BANDIT_SEED", ge=0, le=2**32 - 1,
        description="RNG seed (0: from the OS); each process adds its pid",
    )  # fmt: skip
    log_level: LogLevel

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], role: Role = "web") -> Self:
        """Settings from environment names (``REDIS_URL``...) or attribute names
        (``redis_url``...); the process environment is not read.

        ``role`` is ``web`` or ``worker``; only the web tier needs the admin token.

        Raises:
            ConfigError: a value is not allowed, or production lacks a required value.
        """
        given = _by_alias(cls, values)
        return _validated(lambda: cls(**given), given).require(role)

    @classmethod
    def from_env(cls, role: Role = "web") -> Self:
        """Settings from the process environment; raises as :meth:`from_mapping`."""
        return _validated(cls, os.environ).require(role)

    def require(self, role: Role) -> Self:
        """Self, if the process of ``role`` has what it needs; else :class:`ConfigError`."""
        if role == "web" and not self.admin_token:
            raise ConfigError(
                "BANDIT_ADMIN_TOKEN is required when BANDIT_ENV=production: catalogue writes "
                f"need a token of at least {MIN_PRODUCTION_TOKEN} characters"
            )
        return self

    @property
    def event_keep_seconds(self) -> int:
        """How long what an event needs to count is kept: served slates and de-dup markers
        from serving, journalled batches from acceptance (the window plus the grace)."""
        return self.attribution_seconds + self.event_grace_seconds

    @property
    def seen_window(self) -> tuple[int, int] | None:
        """(``BANDIT_SEEN_SECONDS``, ``BANDIT_SEEN_LIMIT``), None when the seen-limit is off."""
        return (self.seen_seconds, self.seen_limit) if self.seen_limit else None

    def policy_params(self) -> dict[str, float]:
        """The settings the served policy takes, by parameter name (with the half-life when
        one is set and the policy forgets)."""
        params = {name: getattr(self, name) for name in POLICY_SETTINGS[self.policy]}
        return with_half_life(self.policy, params, self.half_life_seconds)

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        # The broker is the statistics Redis unless told otherwise, a cluster's journal waits
        # for one replica unless told otherwise, and development gets the
        # published admin token so that the README's examples work.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not data.get("CELERY_BROKER_URL") and not _truthy(data.get("BANDIT_REDIS_CLUSTER")):
            data["CELERY_BROKER_URL"] = data.get("REDIS_URL", cls.model_fields["redis_url"].default)
        if data.get("BANDIT_JOURNAL_REPLICAS") in (None, ""):  # a cluster's masters have replicas
            data["BANDIT_JOURNAL_REPLICAS"] = (
                "1" if _truthy(data.get("BANDIT_REDIS_CLUSTER")) else "0"
            )
        if not data.get("BANDIT_ADMIN_TOKEN") and data.get("BANDIT_ENV") != "production":
            data["BANDIT_ADMIN_TOKEN"] = DEV_ADMIN_TOKEN
        return data

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.env == "production":
            _check_production_token("BANDIT_ADMIN_TOKEN", self.admin_token)
            _check_production_token("BANDIT_APP_TOKEN", self.app_token)
        _check_broker(self)
        if 0 < self.half_life_seconds < MIN_HALF_LIFE:
            raise ConfigError(
                f"BANDIT_HALF_LIFE_SECONDS must be 0, or a whole number in "
                f"[{MIN_HALF_LIFE}, {MAX_HALF_LIFE}], got {self.half_life_seconds}"
            )
        if self.exploration != 1.0 and "exploration" not in POLICY_SETTINGS[self.policy]:
            raise ConfigError(f"BANDIT_EXPLORATION applies to two_level_ts, not {self.policy}")
        try:
            make_policy(self.policy, **self.policy_params())
        except ValueError as exc:
            named = [env for param, env in _ENV_OF.items() if param in str(exc)]
            raise ConfigError(f"{(named or ['BANDIT_POLICY'])[0]}: {exc}") from exc
        return self


class ServerSettings(BaseSettings):
    """What ``gunicorn.conf.py`` reads in gunicorn's master; build with :meth:`from_env`."""

    model_config = _CONFIG

    port: WholeNumber = Field(
        8000, alias="PORT", ge=1, le=65_535, description="gunicorn's port (`gunicorn.conf.py`)"
    )
    bind_host: Host = Field(
        "0.0.0.0", alias="BIND_HOST", description="address gunicorn listens on",
        json_schema_extra={"allowed": "a host name or IP address"},
    )  # fmt: skip
    web_concurrency: WholeNumber = Field(
        2, alias="WEB_CONCURRENCY", ge=1, le=64, description="gunicorn worker processes"
    )
    log_level: LogLevel
    prometheus_multiproc_dir: str = Field(
        "", alias="PROMETHEUS_MULTIPROC_DIR", pattern=r"^(?:\S(?:.*\S)?)?$",
        description="the web workers' metrics directory, emptied when gunicorn starts; "
        "required with more than one gunicorn worker",
        json_schema_extra={"allowed": "a directory, no spaces around it", "shown": "none"},
    )  # fmt: skip

    @classmethod
    def from_env(cls) -> Self:
        """Settings from the process environment.

        Raises:
            ConfigError: a value is not allowed; the message names the variable.
        """
        return _validated(cls, os.environ)

    @property
    def bind(self) -> str:
        """gunicorn's ``bind``: ``host:port``, an IPv6 address in brackets."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.port}"

    @model_validator(mode="after")
    def _metrics_dir(self) -> Self:
        if self.web_concurrency > 1 and not self.prometheus_multiproc_dir:
            raise ConfigError(
                "PROMETHEUS_MULTIPROC_DIR must be set when WEB_CONCURRENCY > 1: the workers "
                "share their metrics through it"
            )
        return self


# The settings each policy that can be served takes; the others do not apply to it.
POLICY_SETTINGS: dict[str, tuple[str, ...]] = {
    "two_level_ts": ("prior_strength", "exploration"),
    "flat_ts": (),
    "greedy": ("prior_strength",),
    "epsilon_greedy": ("prior_strength",),
    "random": (),
    "recent": (),
    "explore": (),
}
_ENV_OF = {"prior_strength": "BANDIT_PRIOR_STRENGTH", "exploration": "BANDIT_EXPLORATION"}
# The policies that read counts, and so take the half-life of BANDIT_HALF_LIFE_SECONDS.
FORGETTING_POLICIES = ("two_level_ts", "flat_ts", "greedy", "epsilon_greedy")


def with_half_life(policy: str, params: Mapping[str, Any], half_life: float) -> dict[str, Any]:
    """``params`` of ``policy``, plus ``half_life`` when one is set (> 0) and the policy reads
    counts: every policy of the service then reads the decayed counts it is given."""
    if half_life > 0 and policy in FORGETTING_POLICIES:
        return {**params, "half_life": float(half_life)}
    return dict(params)


_T = TypeVar("_T", bound=BaseSettings)
DECLARATIONS: tuple[type[BaseSettings], ...] = (Settings, ServerSettings)


def declared() -> Iterator[tuple[str, FieldInfo]]:
    """Every environment variable with its declaration, once each, in declaration order."""
    seen: set[str] = set()
    for model in DECLARATIONS:
        for field in model.model_fields.values():
            assert field.alias is not None
            if field.alias not in seen:
                seen.add(field.alias)
                yield field.alias, field


def allowed(field: FieldInfo) -> str:
    """What a variable accepts, in words (the README's table and every refusal say this)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "allowed" in extra:
        return str(extra["allowed"])
    if field.annotation in (int, float):
        low = next(m.ge for m in field.metadata if isinstance(m, Ge))
        high = next(m.le for m in field.metadata if isinstance(m, Le))
        kind = "a whole number" if field.annotation is int else "a number"
        return f"{kind} in [{_number(low)}, {_number(high)}]"
    return "one of " + ", ".join(get_args(field.annotation))


def markdown_table() -> str:
    """The README's configuration table: variable, default, allowed values, meaning."""
    rows = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    for name, field in declared():
        rows.append(
            f"| `{name}` | {_shown_default(field)} | {allowed(field)} | {field.description} |"
        )
    return "\n".join(rows)


def _shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("shown", f"`{field.default}`" if field.default != "" else "empty"))


def _number(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:g}".replace("e+0", "e").replace("e+", "e")


def _by_alias(model: type[BaseSettings], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field's value in ``values``, else its default, by environment name and as text
    (as the environment would give it): with every field given, the environment is not read."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        assert field.alias is not None
        value = next((v for v in (values.get(field.alias), values.get(name)) if v is not None),
                     field.default)  # fmt: skip
        # A default of None is derived from other fields (Settings._derived_defaults).
        found[field.alias] = (
            "" if value is None else value if isinstance(value, str) else str(value)
        )
    return found


def _validated(build: Callable[[], _T], given: Mapping[str, str]) -> _T:
    """``build()``, with a pydantic ValidationError turned into a :class:`ConfigError` that
    quotes the value as ``given`` (by environment name), not as a validator changed it."""
    try:
        return build()
    except ValidationError as exc:
        raise ConfigError(_explain(exc, given)) from None


def _explain(exc: ValidationError, given: Mapping[str, str]) -> str:
    """The first error, naming the variable and what it accepts (never a secret value)."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError) or not error["loc"]:
        return str(cause or error["msg"])
    name = str(error["loc"][0])
    field = next(f for alias, f in declared() if alias == name)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    got = "" if extra.get("secret") else f", got {_quoted(given.get(name, error['input']))}"
    return f"{name} must be {allowed(field)}{got}"


def _quoted(value: Any, most: int = 40) -> str:
    """``value`` as a Python literal, cut short: a refusal is one readable line."""
    text = str(value)
    return repr(text) if len(text) <= most else f"{text[:most]!r}... ({len(text)} characters)"


def _truthy(value: Any) -> bool:
    """Whether a boolean setting, as given (text or bool), is on; as pydantic reads it."""
    return str(value).strip().lower() in ("1", "true", "t", "yes", "y", "on")


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """The (host, port) of each sentinel of a ``sentinel://h:p;sentinel://h:p`` broker URL.

    Raises:
        ConfigError: a part is not a ``sentinel://host:port`` URL.
    """
    found = []
    for part in url.split(";"):
        parsed = urlsplit(part)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not part.startswith(SENTINEL_SCHEME) or not parsed.hostname or port is None:
            raise ConfigError(f"CELERY_BROKER_URL must be {_BROKER_ALLOWED}")
        found.append((parsed.hostname, port))
    return found


def _check_broker(settings: Settings) -> None:
    """Refuse the broker settings that cannot work, naming the variable and why."""
    sentinel = settings.broker_url.startswith(SENTINEL_SCHEME)
    if sentinel:
        sentinel_addresses(settings.broker_url)
    if sentinel != bool(settings.broker_master_name):
        raise ConfigError(
            "BANDIT_BROKER_MASTER_NAME must be set with a sentinel:// CELERY_BROKER_URL (the "
            "master the sentinels watch), and only then"
        )
    if settings.redis_cluster and not settings.broker_url:
        raise ConfigError(
            "CELERY_BROKER_URL must be set when BANDIT_REDIS_CLUSTER is on: Celery's Redis "
            "transport has no cluster support, so the broker is a separate Redis (redis://) "
            "or a Sentinel-managed one (sentinel://)"
        )
    if (
        settings.redis_cluster
        and not sentinel
        and _same_server(settings.broker_url, settings.redis_url)
    ):
        raise ConfigError(
            "CELERY_BROKER_URL must not name the statistics cluster (REDIS_URL) when "
            "BANDIT_REDIS_CLUSTER is on: Celery's Redis transport has no cluster support"
        )


def _same_server(one: str, other: str) -> bool:
    a, b = urlsplit(one), urlsplit(other)
    try:
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:  # a port that is not a number: the client will say so when it connects
        return False


def _check_production_token(name: str, token: str) -> None:
    if token == DEV_ADMIN_TOKEN:
        raise ConfigError(
            f"{name} must not be the development token in production: it is published in the README"
        )
    if token and len(token) < MIN_PRODUCTION_TOKEN:
        raise ConfigError(
            f"{name} must be at least {MIN_PRODUCTION_TOKEN} characters in production (it has "
            f"{len(token)}): a short token can be guessed"
        )


if __name__ == "__main__":
    print(markdown_table())
