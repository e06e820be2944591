"""Configuration: defaults, parsing, production requirements, Celery settings."""

from __future__ import annotations

from typing import Any

import pytest
from celery.app.defaults import flatten

from app import create_app
from core.queue import celery_settings, make_celery
from core.settings import DEV_ADMIN_TOKEN, POLICY_SETTINGS, ConfigError, Settings


def test_development_defaults() -> None:
    settings = Settings.from_mapping({})
    assert settings.broker_url == settings.redis_url
    assert settings.admin_token == DEV_ADMIN_TOKEN
    assert settings.attribution_seconds == 86_400
    assert settings.post_ttl_seconds == 72 * 3600
    assert settings.forum_window == 20


@pytest.mark.parametrize(("raw", "window"), [("0", 0), ("1", 1), ("500", 500), (7, 7)])
def test_forum_window_is_a_whole_number(raw: object, window: int) -> None:
    assert Settings.from_mapping({"BANDIT_FORUM_WINDOW": raw}).forum_window == window


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"BANDIT_ENV": "production"}, "BANDIT_ADMIN_TOKEN is required"),
        (
            {"BANDIT_ENV": "production", "BANDIT_ADMIN_TOKEN": DEV_ADMIN_TOKEN},
            "BANDIT_ADMIN_TOKEN is required",
        ),
        ({"BANDIT_PRIOR_STRENGTH": "strong"}, "BANDIT_PRIOR_STRENGTH"),
        ({"BANDIT_ATTRIBUTION_SECONDS": "-1"}, "BANDIT_ATTRIBUTION_SECONDS must be >= 0"),
        ({"BANDIT_REFRESH_SECONDS": "0"}, "BANDIT_REFRESH_SECONDS"),
        ({"BANDIT_FORUM_WINDOW": "-1"}, "BANDIT_FORUM_WINDOW must be >= 0, got -1"),
        ({"BANDIT_FORUM_WINDOW": "2.5"}, "BANDIT_FORUM_WINDOW must be a whole number, got '2.5'"),
        ({"BANDIT_FORUM_WINDOW": "twenty"}, "BANDIT_FORUM_WINDOW must be a whole number"),
        ({"BANDIT_FORUM_WINDOW": ""}, "BANDIT_FORUM_WINDOW must be a whole number, got ''"),
        ({"BANDIT_FORUM_WINDOW": 2.5}, "BANDIT_FORUM_WINDOW must be a whole number, got 2.5"),
        ({"forum_window": True}, "BANDIT_FORUM_WINDOW must be a whole number, got True"),
        ({"BANDIT_POLICY": "ucb"}, "BANDIT_POLICY must be one of two_level_ts, flat_ts, greedy"),
        ({"BANDIT_PRIOR_STRENGTH": "0"}, r"BANDIT_PRIOR_STRENGTH: prior_strength must be in \["),
        ({"BANDIT_EXPLORATION": "0"}, r"BANDIT_EXPLORATION: exploration must be in \[0.01, 1\]"),
        ({"BANDIT_EXPLORATION": "1.5"}, r"BANDIT_EXPLORATION: exploration must be in \[0.01, 1\]"),
        (
            {"BANDIT_POLICY": "greedy", "BANDIT_EXPLORATION": "0.5"},
            "BANDIT_EXPLORATION applies to two_level_ts, not greedy",
        ),
    ],
)
def test_invalid_settings_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping(values)


@pytest.mark.parametrize("policy", sorted(POLICY_SETTINGS))
def test_every_policy_can_be_served_and_gets_only_its_own_settings(
    config: dict[str, Any], policy: str
) -> None:
    app = create_app({**config, "BANDIT_POLICY": policy, "BANDIT_PRIOR_STRENGTH": "4"})
    served = app.extensions["postbandit"].policy
    assert served.name == policy
    if policy in ("two_level_ts", "greedy", "epsilon_greedy"):
        assert served.prior_strength == 4.0
    assert not hasattr(served, "exploration") or served.exploration == 1.0


def test_exploration_reaches_the_served_policy(config: dict[str, Any]) -> None:
    app = create_app({**config, "BANDIT_EXPLORATION": "0.2"})
    assert app.extensions["postbandit"].policy.exploration == 0.2


def test_worker_in_production_needs_no_admin_token() -> None:
    assert Settings.from_mapping({"BANDIT_ENV": "production"}, role="worker").admin_token == ""


def test_every_celery_setting_is_a_known_one() -> None:
    known = {name for name, _ in flatten(__import__("celery").app.defaults.NAMESPACES)}
    ours = set(celery_settings(Settings.from_mapping({})))
    assert ours - known == set()


def test_celery_app_is_configured_for_no_lost_events() -> None:
    conf = make_celery(Settings.from_mapping({"BANDIT_VISIBILITY_TIMEOUT": "42"})).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.broker_transport_options["visibility_timeout"] == 42
    assert conf.task_serializer == "json"
