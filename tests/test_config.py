"""Configuration: defaults, parsing, limits, production requirements, the README table,
Celery settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from celery.app.defaults import flatten

from app import create_app
from bandits import POLICIES, make_policy
from core.queue import celery_settings, make_celery
from core.settings import (
    DEV_ADMIN_TOKEN,
    POLICY_SETTINGS,
    ConfigError,
    PolicyName,
    ServerSettings,
    Settings,
    allowed,
    declared,
    markdown_table,
)

ROOT = Path(__file__).resolve().parent.parent


def test_development_defaults() -> None:
    settings = Settings.from_mapping({})
    assert settings.broker_url == settings.redis_url
    assert settings.admin_token == DEV_ADMIN_TOKEN
    assert settings.attribution_seconds == 86_400
    assert settings.post_ttl_seconds == 72 * 3600
    assert settings.forum_window == 20
    assert (settings.seen_limit, settings.seen_seconds) == (3, 86_400)


@pytest.mark.parametrize(("raw", "window"), [("0", 0), ("1", 1), ("500", 500), (7, 7)])
def test_forum_window_is_a_whole_number(raw: object, window: int) -> None:
    assert Settings.from_mapping({"BANDIT_FORUM_WINDOW": raw}).forum_window == window


PRODUCTION = {"BANDIT_ENV": "production", "BANDIT_ADMIN_TOKEN": "a-production-admin-token"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"BANDIT_ENV": "production"}, "BANDIT_ADMIN_TOKEN is required when BANDIT_ENV=production"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": DEV_ADMIN_TOKEN}, "must not be the development"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": "sixteen-chars-15"[:15]}, "at least 16 characters"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": " "}, "BANDIT_ADMIN_TOKEN must be up to 256 visible"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": DEV_ADMIN_TOKEN + " "}, "no spaces"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": " " + "x" * 20}, "no spaces"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": "x" * 257}, "up to 256"),
        ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": "tökentökentökentöken"}, "ASCII"),
        ({**PRODUCTION, "BANDIT_APP_TOKEN": "short"}, "BANDIT_APP_TOKEN must be at least 16"),
        ({**PRODUCTION, "BANDIT_APP_TOKEN": DEV_ADMIN_TOKEN}, "BANDIT_APP_TOKEN must not be the"),
        ({"BANDIT_APP_TOKEN": "a b"}, "BANDIT_APP_TOKEN must be up to 256 visible ASCII"),
        ({"BANDIT_ENV": "Production"}, "BANDIT_ENV must be one of development, production"),
        ({"BANDIT_ENV": "PRODUCTION"}, "BANDIT_ENV must be one of development, production"),
        ({"BANDIT_ENV": "prod"}, "BANDIT_ENV must be one of development, production, got 'prod'"),
        ({"BANDIT_ENV": ""}, "BANDIT_ENV must be one of"),
        ({"BANDIT_PRIOR_STRENGTH": "strong"}, r"BANDIT_PRIOR_STRENGTH must be a number in \[0.001"),
        (
            {"BANDIT_ATTRIBUTION_SECONDS": "-1"},
            r"BANDIT_ATTRIBUTION_SECONDS must be a whole number",
        ),
        ({"BANDIT_ATTRIBUTION_SECONDS": "0"}, r"BANDIT_ATTRIBUTION_SECONDS .* in \[1, 2592000\]"),
        ({"BANDIT_POST_TTL_SECONDS": "0"}, r"BANDIT_POST_TTL_SECONDS .* in \[60, 2592000\]"),
        ({"BANDIT_POST_TTL_SECONDS": "2592001"}, "BANDIT_POST_TTL_SECONDS"),
        (
            {"BANDIT_REFRESH_SECONDS": "0"},
            r"BANDIT_REFRESH_SECONDS must be a number in \[0.05, 300\]",
        ),
        ({"BANDIT_REFRESH_SECONDS": "nan"}, "BANDIT_REFRESH_SECONDS must be a number in .*'nan'"),
        ({"BANDIT_REFRESH_SECONDS": "NaN"}, "BANDIT_REFRESH_SECONDS"),
        ({"BANDIT_REFRESH_SECONDS": "inf"}, "BANDIT_REFRESH_SECONDS must be a number in .*'inf'"),
        ({"BANDIT_REFRESH_SECONDS": "-inf"}, "BANDIT_REFRESH_SECONDS"),
        ({"BANDIT_REFRESH_SECONDS": float("nan")}, "BANDIT_REFRESH_SECONDS"),
        ({"BANDIT_REFRESH_SECONDS": " 1"}, "BANDIT_REFRESH_SECONDS"),
        ({"BANDIT_REFRESH_SECONDS": "1_0"}, "BANDIT_REFRESH_SECONDS"),
        (
            {"BANDIT_REDIS_TIMEOUT": "1e308"},
            r"BANDIT_REDIS_TIMEOUT must be a number in \[0.01, 30\]",
        ),
        ({"BANDIT_REDIS_TIMEOUT": "1e309"}, "BANDIT_REDIS_TIMEOUT"),
        ({"BANDIT_PUBLISH_TIMEOUT": "0"}, "BANDIT_PUBLISH_TIMEOUT"),
        ({"BANDIT_VISIBILITY_TIMEOUT": "0"}, "BANDIT_VISIBILITY_TIMEOUT"),
        ({"BANDIT_WORKER_METRICS_PORT": "99999"}, r"BANDIT_WORKER_METRICS_PORT .* \[0, 65535\]"),
        ({"BANDIT_WORKER_METRICS_PORT": "-1"}, "BANDIT_WORKER_METRICS_PORT"),
        ({"BANDIT_WORKER_METRICS_HOST": ""}, "BANDIT_WORKER_METRICS_HOST must be a host name"),
        ({"BANDIT_WORKER_METRICS_HOST": "a host"}, "BANDIT_WORKER_METRICS_HOST"),
        ({"BANDIT_SEED": str(2**32)}, "BANDIT_SEED"),
        ({"BANDIT_SEED": "9" * 5000}, r"BANDIT_SEED must be .*9'\.\.\. \(5000 characters\)$"),
        ({"BANDIT_SEED": "\uff15"}, "BANDIT_SEED must be a whole number"),  # a fullwidth 5
        ({"BANDIT_REFRESH_SECONDS": "1e-400"}, "BANDIT_REFRESH_SECONDS"),
        ({"BANDIT_POLICY": " greedy"}, "BANDIT_POLICY must be one of"),
        ({"BANDIT_KEY_PREFIX": "pb\n"}, "BANDIT_KEY_PREFIX must be"),
        ({"BANDIT_ADMIN_TOKEN": "ab\tc"}, "BANDIT_ADMIN_TOKEN must be up to 256 visible"),
        ({"BANDIT_PER_FORUM_CAP": "51"}, "BANDIT_PER_FORUM_CAP"),
        ({"BANDIT_SEEN_LIMIT": "-1"}, r"BANDIT_SEEN_LIMIT must be a whole number in \[0, 100\]"),
        ({"BANDIT_SEEN_LIMIT": "101"}, r"BANDIT_SEEN_LIMIT .* in \[0, 100\], got '101'"),
        ({"BANDIT_SEEN_LIMIT": "three"}, "BANDIT_SEEN_LIMIT must be a whole number"),
        ({"BANDIT_SEEN_SECONDS": "59"}, r"BANDIT_SEEN_SECONDS .* in \[60, 2592000\], got '59'"),
        ({"BANDIT_SEEN_SECONDS": "2592001"}, "BANDIT_SEEN_SECONDS"),
        ({"BANDIT_SEEN_SECONDS": "1.5"}, "BANDIT_SEEN_SECONDS must be a whole number"),
        (
            {"BANDIT_HALF_LIFE_SECONDS": "59"},
            r"BANDIT_HALF_LIFE_SECONDS must be 0, or a whole number in \[60, 31536000\], got 59",
        ),
        ({"BANDIT_HALF_LIFE_SECONDS": "-60"}, "BANDIT_HALF_LIFE_SECONDS must be 0, or a whole"),
        (
            {"BANDIT_HALF_LIFE_SECONDS": "3600.5"},
            "BANDIT_HALF_LIFE_SECONDS must be 0, or a .*'3600.5'",
        ),
        ({"BANDIT_HALF_LIFE_SECONDS": "31536001"}, "BANDIT_HALF_LIFE_SECONDS must be 0, or a"),
        ({"BANDIT_DECISION_LOG_MAXLEN": "1e6"}, "BANDIT_DECISION_LOG_MAXLEN must be a whole"),
        ({"BANDIT_LOG_LEVEL": "trace"}, "BANDIT_LOG_LEVEL must be one of DEBUG, .*got 'trace'"),
        ({"BANDIT_LOG_LEVEL": " info"}, "BANDIT_LOG_LEVEL"),
        ({"BANDIT_KEY_PREFIX": ""}, "BANDIT_KEY_PREFIX must be 1-32 characters"),
        ({"BANDIT_KEY_PREFIX": "pb{x}"}, "BANDIT_KEY_PREFIX"),
        ({"REDIS_URL": ""}, "REDIS_URL must be a redis://"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL must be a redis://"),
        ({"CELERY_BROKER_URL": "amqp://guest@localhost"}, "CELERY_BROKER_URL must be a redis://"),
        (
            {"BANDIT_FORUM_WINDOW": "-1"},
            r"BANDIT_FORUM_WINDOW must be a whole number in \[0, 1000000\], got '-1'",
        ),
        ({"BANDIT_FORUM_WINDOW": "2.5"}, "BANDIT_FORUM_WINDOW must be a whole number .*got '2.5'"),
        ({"BANDIT_FORUM_WINDOW": "5.0"}, "BANDIT_FORUM_WINDOW must be a whole number .*got '5.0'"),
        ({"BANDIT_FORUM_WINDOW": "+5"}, "BANDIT_FORUM_WINDOW must be a whole number"),
        ({"BANDIT_FORUM_WINDOW": "5_0"}, "BANDIT_FORUM_WINDOW must be a whole number"),
        ({"BANDIT_FORUM_WINDOW": "twenty"}, "BANDIT_FORUM_WINDOW must be a whole number"),
        ({"BANDIT_FORUM_WINDOW": ""}, "BANDIT_FORUM_WINDOW must be a whole number .*got ''"),
        ({"BANDIT_FORUM_WINDOW": 2.5}, "BANDIT_FORUM_WINDOW must be a whole number .*got '2.5'"),
        ({"forum_window": True}, "BANDIT_FORUM_WINDOW must be a whole number .*got 'True'"),
        ({"BANDIT_POLICY": "ucb"}, "BANDIT_POLICY must be one of two_level_ts, flat_ts, greedy"),
        ({"BANDIT_POLICY": "Greedy"}, "BANDIT_POLICY must be one of"),
        (
            {"BANDIT_PRIOR_STRENGTH": "0"},
            r"BANDIT_PRIOR_STRENGTH must be a number in \[0.001, 1e9\]",
        ),
        ({"BANDIT_EXPLORATION": "0"}, r"BANDIT_EXPLORATION must be a number in \[0.01, 1\]"),
        ({"BANDIT_EXPLORATION": "1.5"}, r"BANDIT_EXPLORATION must be a number in \[0.01, 1\]"),
        (
            {"BANDIT_POLICY": "greedy", "BANDIT_EXPLORATION": "0.5"},
            "BANDIT_EXPLORATION applies to two_level_ts, not greedy",
        ),
    ],
)
def test_invalid_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping(values)


@pytest.mark.parametrize(
    "secret",
    [
        {"REDIS_URL": "http://:hunter2-secret@127.0.0.1"},
        {"CELERY_BROKER_URL": "amqp://:hunter2-secret@127.0.0.1"},
        {"BANDIT_ADMIN_TOKEN": "hunter2-secret "},
        {"BANDIT_APP_TOKEN": "hunter2-secret "},
        {**PRODUCTION, "BANDIT_APP_TOKEN": "hunter2-secret"},
    ],
)
def test_a_refusal_never_repeats_a_secret(secret: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_mapping(secret)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"BANDIT_LOG_LEVEL": "debug"}, {"log_level": "DEBUG"}),
        ({"BANDIT_LOG_LEVEL": "Warning"}, {"log_level": "WARNING"}),
        ({"BANDIT_REFRESH_SECONDS": "0.05"}, {"refresh_seconds": 0.05}),
        ({"BANDIT_REFRESH_SECONDS": "3e2"}, {"refresh_seconds": 300.0}),
        ({"BANDIT_REFRESH_SECONDS": ".5"}, {"refresh_seconds": 0.5}),
        ({"BANDIT_ATTRIBUTION_SECONDS": "1"}, {"attribution_seconds": 1}),
        ({"BANDIT_POST_TTL_SECONDS": "60"}, {"post_ttl_seconds": 60}),
        ({"BANDIT_WORKER_METRICS_PORT": "65535"}, {"worker_metrics_port": 65_535}),
        ({"BANDIT_WORKER_METRICS_HOST": "::1"}, {"worker_metrics_host": "::1"}),
        (
            {"REDIS_URL": "redis://h:1/2"},
            {"redis_url": "redis://h:1/2", "broker_url": "redis://h:1/2"},
        ),
        ({"CELERY_BROKER_URL": ""}, {"broker_url": "redis://127.0.0.1:6379/0"}),
        ({"BANDIT_ADMIN_TOKEN": ""}, {"admin_token": DEV_ADMIN_TOKEN}),
        ({"BANDIT_ADMIN_TOKEN": "short"}, {"admin_token": "short"}),
        (PRODUCTION, {"env": "production", "admin_token": "a-production-admin-token"}),
        ({"BANDIT_SEED": str(2**32 - 1)}, {"seed": 2**32 - 1}),
        ({"BANDIT_SEEN_LIMIT": "0"}, {"seen_limit": 0}),
        ({"BANDIT_SEEN_SECONDS": "60"}, {"seen_seconds": 60}),
        ({"redis_timeout": 0.5, "seed": 3}, {"redis_timeout": 0.5, "seed": 3}),
        (
            {"BANDIT_SEED": None, "REDIS_URL": None},
            {"seed": 0, "redis_url": "redis://127.0.0.1:6379/0"},
        ),
    ],
)
def test_valid_settings_are_read(values: dict[str, Any], expected: dict[str, Any]) -> None:
    settings = Settings.from_mapping(values)
    assert {name: getattr(settings, name) for name in expected} == expected


def test_the_environment_is_read_as_the_mapping_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANDIT_FORUM_WINDOW", "7")
    monkeypatch.setenv("bandit_env", "production")  # names are case-sensitive: not BANDIT_ENV
    assert (Settings.from_env().forum_window, Settings.from_env().env) == (7, "development")
    monkeypatch.setenv("BANDIT_REFRESH_SECONDS", "nan")
    with pytest.raises(ConfigError, match="BANDIT_REFRESH_SECONDS must be a number"):
        Settings.from_env()


def test_a_mapping_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANDIT_ENV", "production")
    assert Settings.from_mapping({}).env == "development"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"WEB_CONCURRENCY": "0"}, r"WEB_CONCURRENCY must be a whole number in \[1, 64\], got '0'"),
        ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY must be a whole number .*got 'abc'"),
        ({"WEB_CONCURRENCY": "2"}, "PROMETHEUS_MULTIPROC_DIR must be set when WEB_CONCURRENCY > 1"),
        ({"PORT": "0"}, r"PORT must be a whole number in \[1, 65535\]"),
        ({"PORT": "65536"}, "PORT must be"),
        ({"PORT": "80.0"}, "PORT must be"),
        ({"BIND_HOST": ""}, "BIND_HOST must be a host name or IP address"),
        ({"BANDIT_LOG_LEVEL": "trace"}, "BANDIT_LOG_LEVEL must be one of"),
        ({"PROMETHEUS_MULTIPROC_DIR": " "}, "PROMETHEUS_MULTIPROC_DIR must be a directory"),
    ],
)
def test_invalid_server_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], message: str
) -> None:
    for name in ("PORT", "BIND_HOST", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        ServerSettings.from_env()


@pytest.mark.parametrize(
    ("host", "bind"), [("127.0.0.1", "127.0.0.1:8001"), ("::1", "[::1]:8001"), ("h", "h:8001")]
)
def test_server_settings_give_gunicorn_its_bind(
    monkeypatch: pytest.MonkeyPatch, host: str, bind: str
) -> None:
    monkeypatch.setenv("BIND_HOST", host)
    monkeypatch.setenv("PORT", "8001")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/metrics")
    server = ServerSettings.from_env()
    assert (server.bind, server.web_concurrency) == (bind, 3)


def test_the_readme_table_is_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| variable | default | allowed | meaning |")
    end = readme.index("\n\n", start)
    assert readme[start:end] == markdown_table()


@pytest.mark.parametrize(
    ("policy", "raw", "half_life"),
    [("two_level_ts", "0", None), ("two_level_ts", "60", 60.0), ("greedy", "3600", 3600.0),
     ("flat_ts", "31536000", 31536000.0), ("random", "3600", None)],
)  # fmt: skip
def test_the_half_life_reaches_the_policies_that_read_counts(
    policy: str, raw: str, half_life: float | None
) -> None:
    settings = Settings.from_mapping({"BANDIT_POLICY": policy, "BANDIT_HALF_LIFE_SECONDS": raw})
    served = make_policy(policy, **settings.policy_params())
    assert getattr(served, "half_life", None) == half_life


def test_every_variable_is_declared_once_with_its_limits() -> None:
    names = [name for name, _ in declared()]
    assert len(names) == len(set(names)) == 39
    for name, field in declared():
        assert field.description, name
        assert allowed(field), name
        assert name in markdown_table()


def test_the_policy_names_are_the_policies_that_can_be_served() -> None:
    assert set(get_args(PolicyName)) == set(POLICY_SETTINGS) <= set(POLICIES)


@pytest.mark.parametrize("policy", sorted(POLICY_SETTINGS))
@pytest.mark.parametrize("end", ["ge", "le"])
def test_the_declared_limits_are_within_what_the_algorithms_take(policy: str, end: str) -> None:
    fields = Settings.model_fields
    bound = {name: _bound(fields[name], end) for name in POLICY_SETTINGS[policy]}
    settings = Settings.from_mapping({"BANDIT_POLICY": policy, **bound})
    assert make_policy(policy, **settings.policy_params()).name == policy


def _bound(field: Any, end: str) -> float:
    return next(getattr(m, end) for m in field.metadata if hasattr(m, end))


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
