"""Settings: environment variables, NAME_FILE secrets, and one clear line when something is wrong; the page-token
secret every service that signs page tokens requires."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from delinkcious.catalogue import SERVICES
from delinkcious.kit.core.errors import InvalidInput
from delinkcious.kit.core.pages import PageTokens
from delinkcious.kit.serving.config import ConfigurationError, PageTokenSecret, load_settings, page_tokens
from delinkcious.link.app import LinkSettings
from delinkcious.news.app import NewsSettings
from pydantic.fields import FieldInfo

BASE = {
    "SERVICE_NAME": "link",
    "DATABASE_URL": "postgresql://link@127.0.0.1:5432/link",
    "NATS_URL": "nats://127.0.0.1:4222",
    "CALLER_AUTH": "disabled",
    "PAGE_TOKEN_SECRET": "page-token-secret-of-link-0123456789",
}


@pytest.fixture
def environment(monkeypatch):
    for name in ("DATABASE_URL", "DATABASE_PASSWORD", "NATS_URL", "MAX_LINKS_PER_USER", "PORT",
                 "TRUSTED_CALLERS_DIR", "CALLER_AUTH", "PAGE_TOKEN_SECRET"):
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
                   "DATABASE_URL": "postgresql://link@127.0.0.1:1/link", "STARTUP_TIMEOUT": "1",
                   "PAGE_TOKEN_SECRET": BASE["PAGE_TOKEN_SECRET"]}
    result = subprocess.run([sys.executable, "-m", "delinkcious.cli", "serve", "link"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr == ""
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["event"] == "startup_failed" and last["level"] == "error" and "127.0.0.1:1/link" in last["error"]


def test_serve_stops_with_one_line_naming_the_setting():
    environment = {"PATH": "/usr/bin:/bin", "NATS_URL": "nats://127.0.0.1:1", "CALLER_AUTH": "disabled",
                   "PAGE_TOKEN_SECRET": BASE["PAGE_TOKEN_SECRET"]}
    result = subprocess.run([sys.executable, "-m", "delinkcious.cli", "serve", "link"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["link: configuration error: DATABASE_URL: Field required"]


# --- the page-token secret (kit/serving/config.py's PageTokenSecret) -------------------------------------------------

def kit_description() -> str:
    return next(item.description for item in PageTokenSecret.__metadata__ if isinstance(item, FieldInfo))


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_requires_the_kits_page_token_secret_exactly_when_the_catalogue_says_it_signs(facts):
    fields = facts.definition().settings_class.model_fields
    assert ("page_token_secret" in fields) == facts.signs_page_tokens
    if facts.signs_page_tokens:
        field = fields["page_token_secret"]
        assert field.is_required(), "no unsigned mode: the service does not start without its secret"
        assert field.description == kit_description()


# What each service that signs page tokens needs besides its secret to get past its settings.
WITHOUT_THE_SECRET = {
    "link": {"DATABASE_URL": "postgresql://link@127.0.0.1:1/link"},
    "social-graph": {"DATABASE_URL": "postgresql://social-graph@127.0.0.1:1/social-graph",
                     "USER_SERVICE_URL": "http://127.0.0.1:1", "CALLER_TOKEN": "t"},
    "news": {"REDIS_URL": "redis://127.0.0.1:1/0", "SOCIAL_GRAPH_SERVICE_URL": "http://127.0.0.1:1",
             "LINK_SERVICE_URL": "http://127.0.0.1:1", "CALLER_TOKEN": "t"},
}


def serve(name: str, **settings: str) -> tuple[int, list[str]]:
    environment = {"PATH": "/usr/bin:/bin", "NATS_URL": "nats://127.0.0.1:1", "CALLER_AUTH": "disabled",
                   "STARTUP_TIMEOUT": "1", **WITHOUT_THE_SECRET[name], **settings}
    result = subprocess.run([sys.executable, "-m", "delinkcious.cli", "serve", name], env=environment,
                            capture_output=True, text=True, timeout=60)
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def test_every_service_that_signs_page_tokens_is_listed_here():
    assert set(WITHOUT_THE_SECRET) == {facts.name for facts in SERVICES if facts.signs_page_tokens}


@pytest.mark.parametrize("name", sorted(WITHOUT_THE_SECRET))
def test_a_service_that_signs_page_tokens_refuses_to_start_without_its_secret(name):
    assert serve(name) == (2, [f"{name}: configuration error: PAGE_TOKEN_SECRET: Field required"])
    code, lines = serve(name, PAGE_TOKEN_SECRET="  " + "s" * 31 + "  ")
    assert (code, lines) == (2, [f"{name}: configuration error: PAGE_TOKEN_SECRET: Value error, must be at least 32 "
                                 "characters (e.g. `openssl rand -hex 32`)"])


def test_the_page_token_secret_comes_from_a_mounted_file_and_signs_the_tokens(environment, tmp_path):
    secret_file = tmp_path / "page-token-secret"
    secret_file.write_text("s" * 40 + "\n")
    environment.delenv("PAGE_TOKEN_SECRET")
    environment.setenv("PAGE_TOKEN_SECRET_FILE", str(secret_file))
    settings = load_settings(NewsSettings, service_name="news",
                             **{name.lower(): value for name, value in WITHOUT_THE_SECRET["news"].items()})
    assert settings.page_token_secret.get_secret_value() == "s" * 40 and "s" * 40 not in repr(settings)
    tokens = page_tokens(settings.page_token_secret)
    listing = ["news", "ann"]
    assert tokens.signed and tokens.decode(PageTokens(b"s" * 40).encode([1, 2], listing), listing) == [1, 2]
    for other in (PageTokens(b"t" * 40), PageTokens()):
        with pytest.raises(InvalidInput, match="changed"):
            tokens.decode(other.encode([1, 2], listing), listing)
