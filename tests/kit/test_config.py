"""Settings: environment variables, NAME_FILE secrets, and one clear line when something is wrong."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from delinkcious.kit.serving.config import ConfigurationError, load_settings
from delinkcious.link.app import LinkSettings

BASE = {
    "SERVICE_NAME": "link",
    "DATABASE_URL": "postgresql://link@127.0.0.1:5432/link",
    "NATS_URL": "nats://127.0.0.1:4222",
    "CALLER_AUTH": "disabled",
}


@pytest.fixture
def environment(monkeypatch):
    for name in ("DATABASE_URL", "DATABASE_PASSWORD", "NATS_URL", "MAX_LINKS_PER_USER", "PORT",
                 "TRUSTED_CALLERS_DIR", "CALLER_AUTH"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_settings_from_environment_with_defaults(environment):
    environment.setenv("MAX_LINKS_PER_USER", "7")
    settings = load_settings(LinkSettings)
    assert settings.max_links_per_user == 7 and settings.port == 8081 and settings.log_format == "json"


def test_secret_from_a_mounted_file(environment, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    environment.setenv("DATABASE_PASSWORD_FILE", str(secret))
    settings = load_settings(LinkSettings)
    assert settings.database_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_unreadable_secret_file_names_the_setting(environment, tmp_path):
    environment.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError) as raised:
        load_settings(LinkSettings)
    assert raised.value.message.startswith("configuration error: DATABASE_PASSWORD_FILE")


@pytest.mark.parametrize("name,value,expected", [
    ("DATABASE_URL", None, "DATABASE_URL: Field required"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
    ("NATS_URL", "http://x", "NATS_URL"),
    ("PORT", "http", "PORT"),
    ("MAX_LINKS_PER_USER", "0", "MAX_LINKS_PER_USER"),
    ("CALLER_AUTH", "token", "TRUSTED_CALLERS_DIR"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL"),
])
def test_wrong_settings_name_the_setting(environment, name, value, expected):
    if value is None:
        environment.delenv(name)
    else:
        environment.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(LinkSettings)
    assert expected in raised.value.message and "\n" not in raised.value.message


def test_token_auth_needs_allowed_callers(environment, tmp_path):
    environment.setenv("CALLER_AUTH", "token")
    environment.setenv("TRUSTED_CALLERS_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError) as raised:
        load_settings(LinkSettings)
    assert "ALLOWED_CALLERS" in raised.value.message


def test_unrestricted_callers_must_be_allowed_callers(environment, tmp_path):
    environment.setenv("CALLER_AUTH", "token")
    environment.setenv("TRUSTED_CALLERS_DIR", str(tmp_path))
    environment.setenv("ALLOWED_CALLERS", "api-gateway,developer")
    environment.setenv("UNRESTRICTED_CALLERS", "developer")
    assert load_settings(LinkSettings).unrestricted_caller_names == {"developer"}
    environment.setenv("UNRESTRICTED_CALLERS", "developer,ops")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(LinkSettings)
    assert raised.value.message == "configuration error: UNRESTRICTED_CALLERS: ops not in ALLOWED_CALLERS"


def test_serve_exits_with_one_json_line_when_the_database_never_answers():
    environment = {"PATH": "/usr/bin:/bin", "NATS_URL": "nats://127.0.0.1:1", "CALLER_AUTH": "disabled",
                   "DATABASE_URL": "postgresql://link@127.0.0.1:1/link", "STARTUP_TIMEOUT": "1"}
    result = subprocess.run([sys.executable, "-m", "delinkcious.cli", "serve", "link"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr == ""
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["event"] == "startup_failed" and last["level"] == "error" and "127.0.0.1:1/link" in last["error"]


def test_serve_stops_with_one_line_naming_the_setting():
    environment = {"PATH": "/usr/bin:/bin", "NATS_URL": "nats://127.0.0.1:1", "CALLER_AUTH": "disabled"}
    result = subprocess.run([sys.executable, "-m", "delinkcious.cli", "serve", "link"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["link: configuration error: DATABASE_URL: Field required"]
