"""social-graph against the real user service (served by gunicorn, as deployed): its user-created
events feed the projection, and its `HEAD /v1/users/{username}` answers the lookups, with
social-graph's caller token."""
from __future__ import annotations

import re
import secrets

import pytest
from delinkcious.kit.serving.http_client import ServiceClient
from delinkcious.social_graph.app import DEFINITION
from delinkcious.social_graph.user_directory import UserServiceDirectory
from delinkcious.user.app import DEFINITION as USER_DEFINITION

from tests.support.jetstream import wait_until
from tests.support.process import ServedService
from tests.support.services import unique_username


@pytest.fixture(scope="module")
def callers(tmp_path_factory, service_environment):
    """The user service's trusted callers: the suite's api-gateway, and social-graph."""
    directory = tmp_path_factory.mktemp("user-callers")
    (directory / "api-gateway").write_text((service_environment.callers_dir / "api-gateway").read_text())
    token = secrets.token_urlsafe(32)
    (directory / "social-graph").write_text(token)
    return directory, token


@pytest.fixture(scope="module")
def real_user_service(service_environment, callers, tmp_path_factory):
    directory, _token = callers
    access = service_environment.database(USER_DEFINITION)
    served = ServedService("user", {
        "DATABASE_URL": access.dsn,
        "DATABASE_PASSWORD_FILE": str(access.password_file),
        "NATS_URL": service_environment.nats_url,
        "TRUSTED_CALLERS_DIR": str(directory),
        "ALLOWED_CALLERS": "api-gateway,social-graph",
        "WEB_WORKERS": "1",
    }, tmp_path_factory.mktemp("user-log") / "user.log")
    try:
        served.wait_ready()
        yield served
    finally:
        served.kill()


@pytest.fixture(scope="module")
def graph(service_environment, real_user_service, callers):
    _directory, token = callers
    with service_environment.running(DEFINITION, user_service_url=real_user_service.base_url,
                                     caller_token=token) as (runtime, app):
        yield runtime, app


def sign_up(real_user_service: ServedService, service_environment, username: str) -> None:
    response = real_user_service.request("POST", "/v1/logins", headers=service_environment.caller_headers(),
                                    json={"provider": "github", "subject": username, "login": username, "name": "N"})
    assert response.status_code == 201, response.text


def test_the_user_services_events_feed_the_projection(graph, real_user_service, service_environment):
    runtime, app = graph
    ann, bob = unique_username("ann"), unique_username("bob")
    for username in (ann, bob):
        sign_up(real_user_service, service_environment, username)

    def known(username: str) -> bool:
        with runtime.db.transaction() as cursor:
            cursor.execute("SELECT 1 FROM known_users WHERE username = %s", (username,))
            return cursor.fetchone() is not None

    assert wait_until(lambda: known(ann) and known(bob))
    response = app.test_client().post(f"/v1/users/{ann}/following", json={"followed": bob},
                                      headers=service_environment.caller_headers())
    assert response.status_code == 201
    assert head_requests(real_user_service) == 0  # the projection knew bob: no lookup


def head_requests(real_user_service: ServedService) -> float:
    metrics = real_user_service.request("GET", "/metrics").text
    return sum(float(value) for value in re.findall(
        r'delinkcious_http_requests_total\{method="HEAD",route="/v1/users/<username>",service="user",'
        r'status="\d+"\} (\S+)', metrics))


def test_the_user_services_head_answers_the_lookups(graph, real_user_service, service_environment, callers):
    _runtime, app = graph
    _directory, token = callers
    carol = unique_username("carol")
    sign_up(real_user_service, service_environment, carol)
    directory = UserServiceDirectory(ServiceClient(real_user_service.base_url, caller_token=token))
    assert directory.exists(carol) is True
    assert directory.exists(unique_username("ghost")) is False
    ghost = unique_username("ghost")
    response = app.test_client().post(f"/v1/users/{unique_username()}/following", json={"followed": ghost},
                                      headers=service_environment.caller_headers())
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"
    assert head_requests(real_user_service) == 3
