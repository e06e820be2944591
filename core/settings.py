"""Service configuration: one line per environment variable, read once at start-up.

Tests and tools pass a mapping instead of the environment (``Settings.from_mapping``).
In production (``BANDIT_ENV=production``) the service refuses to start without an admin token.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from bandits import make_policy

DEV_ADMIN_TOKEN = "dev-admin-token"  # development only; production refuses it


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


# (environment variable, attribute, parser, default, description) -- the README table is built
# from the same facts, so keep descriptions short and true.
VARIABLES: tuple[tuple[str, str, Callable[[str], Any], Any, str], ...] = (
    ("BANDIT_ENV", "env", str, "development", "`production` enforces required settings"),
    ("REDIS_URL", "redis_url", str, "redis://127.0.0.1:6379/0", "Redis for statistics"),
    ("CELERY_BROKER_URL", "broker_url", str, "", "Celery broker; empty means REDIS_URL"),
    ("BANDIT_KEY_PREFIX", "key_prefix", str, "pb", "prefix of every Redis key"),
    ("BANDIT_ADMIN_TOKEN", "admin_token", str, "", "bearer token for catalogue writes"),
    ("BANDIT_APP_TOKEN", "app_token", str, "", "bearer token for event posts (empty: open)"),
    ("BANDIT_POLICY", "policy", str, "two_level_ts", "slate policy served"),
    ("BANDIT_PRIOR_STRENGTH", "prior_strength", float, 10.0, "pseudo-impressions of priors"),
    ("BANDIT_EXPLORATION", "exploration", float, 1.0, "two_level_ts: post draw variance scale"),
    ("BANDIT_PER_FORUM_CAP", "per_forum_cap", int, 0, "max posts per forum in a slate, 0 = none"),
    ("BANDIT_FORUM_WINDOW", "forum_window", int, 20, "forum prior: first W imps a post, 0=all"),
    ("BANDIT_ATTRIBUTION_SECONDS", "attribution_seconds", int, 86_400, "events count this long"),
    ("BANDIT_POST_TTL_SECONDS", "post_ttl_seconds", int, 259_200, "default post lifetime"),
    ("BANDIT_RECLICK_SECONDS", "reclick_seconds", int, 604_800, "clicked posts hidden this long"),
    ("BANDIT_REFRESH_SECONDS", "refresh_seconds", float, 1.0, "statistics snapshot refresh"),
    ("BANDIT_SNAPSHOT_DIR", "snapshot_dir", str, "var/snapshots", "last good snapshot, ''=off"),
    ("BANDIT_REDIS_TIMEOUT", "redis_timeout", float, 0.25, "socket timeout on request path (s)"),
    ("BANDIT_PUBLISH_TIMEOUT", "publish_timeout", float, 1.0, "web's broker socket timeout (s)"),
    ("BANDIT_VISIBILITY_TIMEOUT", "visibility_timeout", int, 300, "unacked task re-delivery (s)"),
    ("BANDIT_WORKER_METRICS_PORT", "worker_metrics_port", int, 9100, "worker /metrics port, 0=off"),
    ("BANDIT_WORKER_METRICS_HOST", "worker_metrics_host", str, "0.0.0.0", "worker /metrics bind"),
    ("BANDIT_DECISION_LOG_MAXLEN", "decision_log_maxlen", int, 100_000, "decisions kept, 0=off"),
    ("BANDIT_SEED", "seed", int, 0, "RNG seed; 0 = from the OS (per process)"),
    ("BANDIT_LOG_LEVEL", "log_level", str, "INFO", "log level"),
)


@dataclass(frozen=True)
class Settings:
    """Typed settings; build with :meth:`from_env` or :meth:`from_mapping`."""

    env: str
    redis_url: str
    broker_url: str
    key_prefix: str
    admin_token: str
    app_token: str
    policy: str
    prior_strength: float
    exploration: float
    per_forum_cap: int
    forum_window: int
    attribution_seconds: int
    post_ttl_seconds: int
    reclick_seconds: int
    refresh_seconds: float
    snapshot_dir: str
    redis_timeout: float
    publish_timeout: float
    visibility_timeout: int
    worker_metrics_port: int
    worker_metrics_host: str
    decision_log_maxlen: int
    seed: int
    log_level: str

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], role: str = "web") -> Settings:
        """Build settings from environment-style names (``REDIS_URL``...) or attribute names.

        ``role`` is ``web`` or ``worker``; only the web tier needs the admin token.

        Raises:
            ConfigError: a value does not parse, or production lacks a required value.
        """
        kwargs = {attr: _read(values, name, attr, parse, default)
                  for name, attr, parse, default, _ in VARIABLES}  # fmt: skip
        if not kwargs["broker_url"]:
            kwargs["broker_url"] = kwargs["redis_url"]
        if not kwargs["admin_token"] and kwargs["env"] != "production":
            kwargs["admin_token"] = DEV_ADMIN_TOKEN
        settings = cls(**kwargs)
        settings.check(role)
        return settings

    @classmethod
    def from_env(cls, role: str = "web") -> Settings:
        return cls.from_mapping(os.environ, role)

    def check(self, role: str = "web") -> None:
        """Raise :class:`ConfigError` for values out of range or missing in production."""
        weak_token = not self.admin_token or self.admin_token == DEV_ADMIN_TOKEN
        if self.env == "production" and role == "web" and weak_token:
            raise ConfigError("BANDIT_ADMIN_TOKEN is required when BANDIT_ENV=production")
        for name, attr, *_ in VARIABLES:
            value = getattr(self, attr)
            if isinstance(value, int | float) and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if min(self.refresh_seconds, self.redis_timeout, self.publish_timeout) <= 0:
            names = "BANDIT_REFRESH_SECONDS, BANDIT_REDIS_TIMEOUT and BANDIT_PUBLISH_TIMEOUT"
            raise ConfigError(f"{names} must be > 0")
        if self.visibility_timeout < 1:
            raise ConfigError("BANDIT_VISIBILITY_TIMEOUT must be >= 1")
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise ConfigError(f"BANDIT_LOG_LEVEL must be a level name, got {self.log_level}")
        self._check_policy()

    def policy_params(self) -> dict[str, float]:
        """The settings the served policy takes, by parameter name."""
        return {name: getattr(self, name) for name in POLICY_SETTINGS.get(self.policy, ())}

    def _check_policy(self) -> None:
        if self.policy not in POLICY_SETTINGS:
            names = ", ".join(POLICY_SETTINGS)
            raise ConfigError(f"BANDIT_POLICY must be one of {names}, got {self.policy!r}")
        if self.exploration != 1.0 and "exploration" not in POLICY_SETTINGS[self.policy]:
            raise ConfigError(f"BANDIT_EXPLORATION applies to two_level_ts, not {self.policy}")
        try:
            make_policy(self.policy, **self.policy_params())
        except ValueError as exc:
            named = [env for param, env in _ENV_OF.items() if param in str(exc)]
            raise ConfigError(f"{(named or ['BANDIT_POLICY'])[0]}: {exc}") from exc

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The settings each policy that can be served takes; the others do not apply to it.
POLICY_SETTINGS: dict[str, tuple[str, ...]] = {
    "two_level_ts": ("prior_strength", "exploration"),
    "flat_ts": (),
    "greedy": ("prior_strength",),
    "epsilon_greedy": ("prior_strength",),
    "random": (),
}
_ENV_OF = {"prior_strength": "BANDIT_PRIOR_STRENGTH", "exploration": "BANDIT_EXPLORATION"}

# What a parser of VARIABLES accepts, for the error message.
_EXPECTED: dict[Callable[[str], Any], str] = {int: "a whole number", float: "a number"}


def _read(
    values: Mapping[str, Any], name: str, attr: str, parse: Callable[[str], Any], default: Any
) -> Any:
    raw = values.get(name, values.get(attr))
    if raw is None:
        return default
    if parse is str:
        return raw
    try:
        return parse(str(raw))
    except ValueError as exc:
        raise ConfigError(f"{name} must be {_EXPECTED[parse]}, got {raw!r}") from exc
