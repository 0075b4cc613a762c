"""Caller permissions per endpoint (kit/callers.py), on a real kit app with real caller tokens: a caller the
service serves but the endpoint does not admit gets 403 before anything of the request is read; an endpoint
without grants stops the app from being built."""
from __future__ import annotations

import secrets
from typing import ClassVar

import pytest
from delinkcious.kit.serving.callers import (
    CALLER_TOKEN_HEADER,
    CallerAuthenticator,
    CallerPermissions,
    EndpointCallers,
    UndeclaredCallers,
    allow_callers,
)
from delinkcious.kit.serving.config import BaseServiceSettings, load_settings
from delinkcious.kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from delinkcious.kit.serving.web import create_app, is_ops_path, user_blueprint
from flask import Blueprint, Flask, jsonify, request

from tests.support.assertions import assert_error

CALLERS = ("gateway", "reader", "prober", "developer", "outsider")


class Settings(BaseServiceSettings):
    port: int = 8099
    # No store: the permission check needs none.
    serves_internal_callers: ClassVar[bool] = True


def blueprints() -> list[Blueprint]:
    """`/v1/...` the gateway's by the blueprint's default; `/v1/profiles`: GET for the gateway, HEAD for the
    prober; `/internal/...` the reader's, in a nested blueprint that checks the username itself."""
    api = allow_callers("gateway")(Blueprint("api", __name__, url_prefix="/v1"))

    @api.post("/things")
    def add_thing():
        return jsonify(request.get_json()), 201

    @api.get("/profiles/<name>")
    @allow_callers("gateway")
    @allow_callers("prober", methods=["HEAD"])
    def profile(name: str):
        return jsonify({"name": name, "email": "secret@example.com"})

    internal = allow_callers("reader")(Blueprint("internal", __name__, url_prefix="/internal"))
    users = user_blueprint("users", __name__, "/users/<username>")

    @users.get("/things")
    def things(username: str):
        return jsonify({"username": username, "limit": request.args.get("limit")})

    internal.register_blueprint(users)
    return [api, internal]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kit-callers")
    values = {caller: secrets.token_urlsafe(32) for caller in CALLERS}
    for caller, token in values.items():
        (directory / caller).write_text(token)
    return directory, values


def build_app(tokens, blueprint_list, *, unrestricted=frozenset()):
    directory, _ = tokens
    settings = load_settings(Settings, service_name="kit-callers", trusted_callers_dir=directory,
                             allowed_callers="gateway,reader,prober")
    definition = ServiceDefinition("kit-callers", Settings, build=lambda runtime: ServiceParts())
    runtime = ServiceRuntime(definition, settings)
    if unrestricted:  # as the local runtime's developer is
        runtime.callers = CallerAuthenticator.from_directory(directory, settings.allowed_caller_names,
                                                             unrestricted_callers=frozenset(unrestricted))
    return create_app(runtime, blueprint_list)


@pytest.fixture(scope="module")
def client(tokens):
    _, values = tokens
    app = build_app(tokens, blueprints()).test_client()

    def call(caller, method, path, **kwargs):
        headers = {CALLER_TOKEN_HEADER: values[caller]} if caller else {}
        return app.open(path, method=method, headers=headers, **kwargs)

    return call


def test_each_endpoint_admits_only_its_callers(client):
    assert client("gateway", "POST", "/v1/things", json={"a": 1}).status_code == 201
    for caller in ("reader", "prober"):
        refused = assert_error(client(caller, "POST", "/v1/things", json={"a": 1}), 403, "forbidden")
        assert refused["message"] == f"caller '{caller}' may not call POST /v1/things"
    assert client("reader", "GET", "/internal/users/ann/things").status_code == 200
    assert_error(client("gateway", "GET", "/internal/users/ann/things"), 403, "forbidden")
    # The service-level checks are as before: 401 without or with a forged token, 403 for a caller not served.
    assert_error(client(None, "GET", "/internal/users/ann/things"), 401, "unauthenticated")
    assert_error(client("outsider", "GET", "/internal/users/ann/things"), 403, "forbidden")
    assert client(None, "GET", "/healthz/ping").status_code == 200  # probes need no caller identity


def test_grants_by_method_and_get_covers_head(client):
    assert client("gateway", "GET", "/v1/profiles/ann").get_json()["email"] == "secret@example.com"
    assert client("gateway", "HEAD", "/v1/profiles/ann").status_code == 200
    assert client("prober", "HEAD", "/v1/profiles/ann").status_code == 200
    assert_error(client("prober", "GET", "/v1/profiles/ann"), 403, "forbidden")  # existence, not the profile
    assert client("reader", "HEAD", "/v1/profiles/ann").status_code == 403  # (a HEAD answer has no body)


def test_the_caller_is_checked_before_any_parameter(client):
    # A bad username (checked by the nested blueprint), a NUL byte in the query (checked by the kit), a body
    # that is not JSON: the refused caller learns nothing of them, only that it may not call the endpoint.
    for caller in ("gateway", "prober"):
        assert_error(client(caller, "GET", "/internal/users/Not_Valid/things?limit=%00"), 403, "forbidden")
    for caller in ("reader", "prober"):
        assert_error(client(caller, "POST", "/v1/things?note=%00", data='{"a": "\\u0000"}',
                            content_type="application/json"), 403, "forbidden")
    # The callers they admit get the answers those parameters deserve.
    assert_error(client("reader", "GET", "/internal/users/Not_Valid/things"), 400, "invalid_input", "username")
    assert_error(client("reader", "GET", "/internal/users/ann/things?limit=%00"), 400, "invalid_input", "limit")
    assert_error(client("gateway", "POST", "/v1/things", data='{"a": "\\u0000"}', content_type="application/json"),
                 400, "invalid_input", "a")
    # Unknown paths and methods keep their answers (no endpoint, so no grants to check).
    assert_error(client("reader", "GET", "/v1/nothing"), 404, "not_found")
    assert_error(client("gateway", "DELETE", "/v1/things"), 405, "method_not_allowed")


def test_an_unrestricted_caller_passes_every_endpoint(tokens):
    _, values = tokens
    app = build_app(tokens, blueprints(), unrestricted={"developer"}).test_client()
    developer = {CALLER_TOKEN_HEADER: values["developer"]}
    assert app.post("/v1/things", json={"a": 1}, headers=developer).status_code == 201
    assert app.get("/v1/profiles/ann", headers=developer).status_code == 200
    assert app.get("/internal/users/ann/things", headers=developer).status_code == 200
    assert_error(app.get("/internal/users/ann/things", headers={CALLER_TOKEN_HEADER: values["outsider"]}), 403,
                 "forbidden")


def test_an_endpoint_without_grants_stops_the_app(tokens):
    quiet = Blueprint("quiet", __name__)

    @quiet.get("/v1/forgotten")
    def forgotten():
        return "", 204

    with pytest.raises(UndeclaredCallers, match=r"quiet\.forgotten \(/v1/forgotten\) declares no callers"):
        build_app(tokens, [*blueprints(), quiet])


def test_a_grant_for_a_method_the_route_does_not_serve_stops_the_app(tokens):
    odd = Blueprint("odd", __name__)

    @odd.post("/v1/odd")
    @allow_callers("gateway", methods=["GET"])
    def only_post():
        return "", 204

    with pytest.raises(UndeclaredCallers, match="grants GET, which it does not serve"):
        build_app(tokens, [odd])


def test_a_routes_grants_replace_its_blueprints_and_grants_add_up():
    outer = allow_callers("a")(Blueprint("outer", __name__))
    inner = allow_callers("b")(allow_callers("c", methods=["post"])(Blueprint("inner", __name__)))

    @inner.route("/x", methods=["GET", "POST"])
    def inherited():
        return ""

    @outer.get("/y")
    @allow_callers("d")
    def own():
        return ""

    @outer.get("/z")
    def outers():
        return ""

    outer.register_blueprint(inner)
    app = Flask(__name__)
    app.register_blueprint(outer)
    permissions = CallerPermissions.of_app(app, exempt=is_ops_path)
    inherited_callers = permissions.of("outer.inner.inherited")
    assert inherited_callers == EndpointCallers({None: frozenset({"b"}), "POST": frozenset({"c"})})
    assert inherited_callers.admits("c", "POST") and not inherited_callers.admits("c", "GET")
    assert permissions.of("outer.own").callers == {"d"} and permissions.of("outer.outers").callers == {"a"}
    assert permissions.callers == {"b", "c", "d", "a"}
    assert permissions.of(None) is None and permissions.of("outer.unknown") is None


def test_allow_callers_needs_names():
    for bad in ((), ("",), (" gateway",)):
        with pytest.raises(ValueError):
            allow_callers(*bad)
    with pytest.raises(ValueError):
        allow_callers("gateway", methods=[])
