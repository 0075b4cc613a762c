"""Options and fixtures of the black-box suites: they talk HTTP to the public API gateway at
--base-url and nothing else, so they run against any deployment (see README.md)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from delinkcious_client import (
    DEFAULT_TIMEOUT,
    LOCAL_OIDC,
    TOKENS,
    Cleanup,
    GatewaySession,
    Settings,
    User,
    Users,
    assert_ok,
    new_session,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("delinkcious", "Delinkcious black-box suites")
    group.addoption("--base-url", default=os.environ.get("DELINKCIOUS_BASE_URL"),
                    help="public URL of the API gateway (default: $DELINKCIOUS_BASE_URL)")
    group.addoption("--public-url", default=os.environ.get("DELINKCIOUS_PUBLIC_URL"),
                    help="the gateway's public URL as browsers see it (its PUBLIC_BASE_URL), when the tests reach it "
                         "by another address, e.g. from inside the cluster (default: --base-url)")
    group.addoption("--login-mode", choices=(LOCAL_OIDC, TOKENS), default=None,
                    help=f"{LOCAL_OIDC}: log fresh users in through the local OIDC identity provider "
                         f"(oidc-provider-mock); {TOKENS}: use the pre-issued --token users. "
                         f"Default: {TOKENS} if a --token is given, else {LOCAL_OIDC}")
    group.addoption("--token", action="append", default=[], metavar="USER=TOKEN",
                    help="a pre-issued access token (USER is a label; TOKEN may be @FILE to read it from a "
                         "file); repeat for a second user")
    group.addoption("--no-local-targets", action="store_true", default=False,
                    help="skip tests whose links point at an HTTP server this test run starts on 127.0.0.1 "
                         "(the deployment cannot reach it, or its link checker refuses private addresses)")
    group.addoption("--request-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds, for one request")
    group.addoption("--wait-timeout", type=float, default=20.0,
                    help="seconds to wait for asynchronous effects (news, link status, revoked tokens)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_targets: links to a server on 127.0.0.1 started by the test")
    config.addinivalue_line("markers", f"needs_login: logs in through the identity provider ({LOCAL_OIDC} only)")


def login_mode(config: pytest.Config) -> str:
    return config.getoption("--login-mode") or (TOKENS if config.getoption("--token") else LOCAL_OIDC)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--base-url"):
        raise pytest.UsageError("give the gateway's public URL: --base-url=http://127.0.0.1:8080 "
                                "(or set DELINKCIOUS_BASE_URL)")
    no_local = pytest.mark.skip(reason="--no-local-targets")
    no_login = pytest.mark.skip(reason=f"needs --login-mode={LOCAL_OIDC}")
    for item in items:
        if config.getoption("--no-local-targets") and "local_targets" in item.keywords:
            item.add_marker(no_local)
        if login_mode(config) != LOCAL_OIDC and "needs_login" in item.keywords:
            item.add_marker(no_login)


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    return Settings(
        base_url=pytestconfig.getoption("--base-url").rstrip("/"),
        request_timeout=pytestconfig.getoption("--request-timeout"),
        wait_timeout=pytestconfig.getoption("--wait-timeout"),
        login_mode=login_mode(pytestconfig),
        public_url=(pytestconfig.getoption("--public-url") or "").rstrip("/"),
    )


@pytest.fixture(scope="session")
def run_id() -> str:
    """Makes names unique per run, so reruns against the same system never collide."""
    return secrets.token_hex(3)


@pytest.fixture
def api(settings: Settings) -> Iterator[GatewaySession]:
    """A fresh session (no cookies) for the test's API calls."""
    with new_session(settings) as session:
        yield session


@pytest.fixture(scope="session")
def pre_issued(pytestconfig: pytest.Config, settings: Settings) -> list[User]:
    """The --token users, their usernames asked from /v1/me."""
    users = []
    with new_session(settings) as session:
        for entry in pytestconfig.getoption("--token"):
            label, separator, token = entry.partition("=")
            if not separator or not token:
                raise pytest.UsageError(f"--token {label}: expected USER=TOKEN or USER=@FILE")
            if token.startswith("@"):
                token = Path(token[1:]).expanduser().read_text().strip()
            me = assert_ok(session.get("/v1/me", headers={"Authorization": f"Bearer {token}"}))
            users.append(User(username=me["username"], token=token, fresh=False))
    return users


@pytest.fixture
def users(settings: Settings, run_id: str, pre_issued: list[User]) -> Users:
    return Users(settings, run_id, pre_issued)


@pytest.fixture
def alice(users: Users) -> User:
    return users.new("alice")


@pytest.fixture
def bob(users: Users) -> User:
    return users.new("bob")


@pytest.fixture
def cleanup(api: GatewaySession) -> Iterator[Cleanup]:
    actions = Cleanup(api)
    yield actions
    actions.run()


@pytest.fixture(scope="session")
def openapi_schema(settings: Settings):
    """The gateway's own OpenAPI document, loaded by schemathesis from the system under test."""
    import schemathesis

    return schemathesis.openapi.from_url(f"{settings.base_url.rstrip('/')}/v1/openapi.json",
                                         timeout=settings.request_timeout)


@pytest.fixture(scope="session")
def conformance_user(settings: Settings, run_id: str, pre_issued: list[User]) -> User:
    return Users(settings, run_id, pre_issued).new("conformance")
