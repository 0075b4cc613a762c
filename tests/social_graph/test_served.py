"""The social-graph service as deployed: `delinkcious serve social-graph` under gunicorn, configured
only through its environment (the user service's URL and its own caller token from a mounted file),
JSON logs, and a SIGTERM that exits 0 with the outbox drained."""
from __future__ import annotations

import json

import pytest
from delinkcious.contracts.events import FOLLOWED, SOCIAL_STREAM
from delinkcious.kit.serving.config import ConfigurationError, load_settings
from delinkcious.social_graph.app import DEFINITION, SocialGraphSettings

from tests.support.jetstream import wait_for_events
from tests.support.process import ServedService
from tests.support.services import unique_username


def test_served_with_its_environment_and_stopped_by_sigterm(service_environment, user_service, tmp_path):
    access = service_environment.database(DEFINITION)
    token_file = tmp_path / "caller-token"
    token_file.write_text("served-social-graph-token\n")
    served = ServedService("social-graph", {
        "DATABASE_URL": access.dsn,
        "DATABASE_PASSWORD_FILE": str(access.password_file),
        "NATS_URL": service_environment.nats_url,
        "TRUSTED_CALLERS_DIR": str(service_environment.callers_dir),
        "ALLOWED_CALLERS": "api-gateway,news",
        "USER_SERVICE_URL": user_service.url,
        "CALLER_TOKEN_FILE": str(token_file),
        "WEB_WORKERS": "1",
        "LOG_FORMAT": "json",
    }, tmp_path / "social-graph.log")
    try:
        served.wait_ready()
        ann, bob = unique_username(), unique_username()
        user_service.users.add(bob)
        response = served.request("POST", f"/v1/users/{ann}/following", json={"followed": bob},
                                  headers={**service_environment.caller_headers(), "X-Request-Id": "served-sg-1"})
        assert response.status_code == 201, response.text
        assert user_service.looked_up(bob) == ["served-social-graph-token"]
        assert served.terminate() == 0, served.logs()[-3000:]
    finally:
        served.kill()
    records = [json.loads(line) for line in served.logs().splitlines() if line.strip()]
    assert all({"timestamp", "level", "service", "event"} <= record.keys() for record in records)
    lookups = [record for record in records if record["event"] == "user_lookup"]
    assert [(r["looked_up_user"], r["downstream_status"], r["request_id"]) for r in lookups] == \
        [(bob, 200, "served-sg-1")]
    assert any(record["event"] == "outbox_drained" for record in records)
    [event] = wait_for_events(service_environment.nats_url, SOCIAL_STREAM.name, FOLLOWED, 1, author=ann)
    assert event["followed"] == bob and event["request_id"] == "served-sg-1"


BASE = {
    "service_name": "social-graph",
    "database_url": "postgresql://sg@127.0.0.1:5432/sg",
    "nats_url": "nats://127.0.0.1:4222",
    "caller_auth": "disabled",
    "user_service_url": "http://127.0.0.1:8082",
    "caller_token": "t0ken",
    "page_token_secret": "page-token-secret-of-social-graph-0123456789",
}


def test_settings_defaults():
    settings = load_settings(SocialGraphSettings, **BASE)
    assert settings.port == 8083 and settings.user_service_url == "http://127.0.0.1:8082"
    assert "t0ken" not in repr(settings) and "page-token-secret-of" not in repr(settings)


@pytest.mark.parametrize("change,named", [
    ({"user_service_url": None}, "USER_SERVICE_URL"),
    ({"user_service_url": "127.0.0.1:8082"}, "USER_SERVICE_URL"),
    ({"user_service_url": "ftp://users.internal"}, "USER_SERVICE_URL"),
    ({"caller_token": None}, "CALLER_TOKEN"),
    ({"caller_token": "  "}, "CALLER_TOKEN"),
    ({"page_token_secret": None}, "PAGE_TOKEN_SECRET"),
    ({"page_token_secret": "s" * 31}, "PAGE_TOKEN_SECRET"),
])
def test_the_user_service_url_the_caller_token_and_the_page_token_secret_are_required(change, named, monkeypatch):
    for name in ("USER_SERVICE_URL", "CALLER_TOKEN", "PAGE_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    values = {**BASE, **change}
    values = {key: value for key, value in values.items() if value is not None}
    with pytest.raises(ConfigurationError) as raised:
        load_settings(SocialGraphSettings, **values)
    assert raised.value.message.startswith(f"configuration error: {named}:")
