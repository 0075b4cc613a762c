"""The link checker's settings: safe defaults, and one line naming a bad setting."""
from __future__ import annotations

import pytest
from delinkcious.kit.serving.config import ConfigurationError, load_settings
from delinkcious.link_checker.app import DEFAULT_USER_AGENT, LinkCheckerSettings
from delinkcious.link_checker.domain import OutageRule, RetryPolicy

REQUIRED = {"service_name": "link-checker", "nats_url": "nats://127.0.0.1:4222", "redis_url": "redis://127.0.0.1:6379/0",
            "caller_auth": "disabled"}


def test_defaults_are_the_documented_ones_with_the_guard_on():
    settings = load_settings(LinkCheckerSettings, **REQUIRED)
    assert settings.port == 8085
    assert settings.link_checker_allow_private_addresses is False
    assert settings.link_checker_allowed_networks == ""
    assert (settings.link_checker_connect_timeout, settings.link_checker_timeout) == (5.0, 10.0)
    assert settings.link_checker_max_redirects == 5
    assert settings.link_checker_host_interval == 1.0 and settings.link_checker_result_ttl == 3600.0
    assert settings.link_checker_user_agent == DEFAULT_USER_AGENT and "Delinkcious" in DEFAULT_USER_AGENT
    assert settings.attempt_lease_s >= settings.link_checker_timeout + settings.link_checker_max_host_wait
    # Inconclusive checks: 8 attempts from 1 minute apart, doubling up to 6 hours, for at most a day.
    assert settings.retry_policy == RetryPolicy(max_attempts=8, backoff_initial_s=60, backoff_max_s=21600,
                                                retry_after_max_s=3600, max_age_s=86400)
    assert settings.link_checker_retry_concurrency == 4
    # Own outage: 80 % of at least 10 checks in the last minute failing the same way, on 3 hosts or more.
    assert settings.outage_rule == OutageRule(window_s=60, min_checks=10, threshold=0.8, min_hosts=3)
    assert settings.link_checker_probe_interval == 30 and settings.link_checker_canary_urls == ""
    assert settings.shutdown_drain_timeout == 10.0  # checks give way at once on SIGTERM: the kit's default


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES", "true")
    monkeypatch.setenv("LINK_CHECKER_ALLOWED_NETWORKS", "10.0.0.0/8, fd00::/8")
    monkeypatch.setenv("LINK_CHECKER_RESULT_TTL", "0")
    settings = load_settings(LinkCheckerSettings, **REQUIRED)
    assert settings.link_checker_allow_private_addresses is True
    assert settings.link_checker_allowed_networks == "10.0.0.0/8, fd00::/8"
    assert settings.link_checker_result_ttl == 0


@pytest.mark.parametrize("name, value, message", [
    ("link_checker_allowed_networks", "10.0.0.0/8,intranet", "LINK_CHECKER_ALLOWED_NETWORKS: Value error, 'intranet'"),
    ("link_checker_max_attempts", 0, "LINK_CHECKER_MAX_ATTEMPTS"),
    ("link_checker_canary_urls", "https://canary.example/,ftp://x", "LINK_CHECKER_CANARY_URLS: Value error, 'ftp://x'"),
    ("link_checker_outage_threshold", 1.5, "LINK_CHECKER_OUTAGE_THRESHOLD"),
    ("link_checker_backoff_max", 10, "LINK_CHECKER_BACKOFF_MAX must not be shorter than LINK_CHECKER_BACKOFF_INITIAL"),
    ("link_checker_timeout", 0, "LINK_CHECKER_TIMEOUT"),
    ("redis_url", "http://redis", "REDIS_URL"),
])
def test_a_bad_setting_is_named(name, value, message):
    with pytest.raises(ConfigurationError) as raised:
        load_settings(LinkCheckerSettings, **{**REQUIRED, name: value})
    assert message in raised.value.message
