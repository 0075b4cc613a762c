"""Wiring of the API gateway: settings, downstream dependencies, login, rate limits and the public
routes. It is the only public service: PORT serves /login*, /logout, /v1/* and /docs; /healthz/* and
/metrics are on ADMIN_PORT only."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from flask import Blueprint, Flask, Response, g, jsonify, request
from flask_restful import Api
from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from werkzeug.middleware.proxy_fix import ProxyFix

from ..catalogue import get_service
from ..kit.observability.health import Check
from ..kit.serving.config import BaseServiceSettings, ConfigurationError, RedisSettings
from ..kit.serving.runtime import ServiceDefinition, ServiceParts, ServiceRuntime
from ..kit.serving.web import is_ops_path
from . import resources
from .downstream import NewsDependency, RestDependency
from .identity import LOGIN_CALLBACK_PATH, LOGIN_PATH, Login, LoginStateSessions, TokenVerifier, presented_token
from .openapi import register_api_docs
from .rate_limits import RateLimited, RateLimiter

FACTS = get_service("api-gateway")


class GatewaySettings(BaseServiceSettings, RedisSettings):
    serves_internal_callers: ClassVar[bool] = False  # public: it authenticates end users, and no service calls it

    port: int = Field(FACTS.port, ge=1, le=65535, description=(
        "Port for the public API (`/login*`, `/logout`, `/v1/*`, `/docs`)."))
    admin_port: int | None = Field(FACTS.admin_port, ge=1, le=65535, description=(
        "Port for the operator endpoints (`/healthz/*`, `/metrics`), kept off the public one; must differ from "
        "PORT."))
    public_base_url: str = Field(f"http://127.0.0.1:{FACTS.port}", description=(
        "Where clients reach the gateway, an `http://` or `https://` URL; the OAuth callback is "
        "`${PUBLIC_BASE_URL}/login/authorized`. `https://` makes the login cookie Secure."))
    session_secret: SecretStr = Field(description="Signs the short-lived OAuth state cookie.")
    auth_provider: Literal["github", "oidc"] = Field("github", description=(
        "The identity provider people sign in with: GitHub, or an OpenID Connect provider (`oidc`, which needs "
        "OIDC_DISCOVERY_URL)."))
    oauth_client_id: str = Field(description="The gateway's client ID, registered at the identity provider.")
    oauth_client_secret: SecretStr = Field(description=(
        "The gateway's client secret, registered at the identity provider."))
    oidc_discovery_url: str | None = Field(None, description=(
        "The provider's `/.well-known/openid-configuration` URL. Required when `AUTH_PROVIDER=oidc`."))
    oidc_provider_name: str = Field("oidc", description=(
        "With `AUTH_PROVIDER=oidc`: the provider label stored with each identity (GitHub identities are labelled "
        "`github`)."))
    link_service_url: str = Field(description="The link service, an `http://` or `https://` URL.")
    user_service_url: str = Field(description="The user service, an `http://` or `https://` URL.")
    social_graph_service_url: str = Field(description="The social-graph service, an `http://` or `https://` URL.")
    news_grpc_address: str = Field(description="The news service's gRPC endpoint, `host:port`.")
    caller_token: SecretStr = Field(description=(
        "The gateway's caller identity, carried by every internal call: required here."))
    rate_limit_per_user: str = Field("300/minute", description=(
        "Requests each signed-in user may make to `/v1/*` and `/logout` in any window of that length (a moving "
        "window), in flask-limiter notation (`100/minute;2000/hour`). Beyond it: `429` with `Retry-After`."))
    rate_limit_per_address: str = Field("600/minute", description=(
        "Requests one client address may make to any route, signed in or not, in any window of that length (a "
        "moving window), in flask-limiter notation. Beyond it: `429` with `Retry-After`. Neither limit is "
        "enforced while Redis is down."))
    trusted_proxy_hops: int = Field(0, ge=0, le=5, description=(
        "How many `X-Forwarded-For` hops our own ingress adds, so the client address is taken from that header; "
        "`0` trusts no proxy and takes the connection's address."))
    token_cache_seconds: float = Field(5.0, ge=0, le=60, description=(
        "How long a verified access token is trusted without asking the user service again; this bounds how long "
        "a revoked token keeps working on another gateway instance. `0` asks every time."))
    downstream_timeout: float = Field(3.0, gt=0, description=(
        "Timeout of each internal call (the read timeout of an HTTP call, the deadline of a gRPC call); reads are "
        "retried once when the service refused them or answered 502/503/504, never after this timeout."))
    breaker_failures: int = Field(5, ge=1, description=(
        "A dependency failing this many times in a row (connection refused or reset, a timeout, a 5xx answer; "
        "never a 4xx answer about the request) is not called for BREAKER_RESET_SECONDS (503 at once)."))
    breaker_reset_seconds: float = Field(1.0, gt=0, description=(
        "How long a dependency whose breaker has opened is not called; then one call (the probe) tries it again "
        "and closes the breaker if it succeeds. Each failed probe doubles the wait, up to "
        "BREAKER_MAX_RESET_SECONDS."))
    breaker_max_reset_seconds: float = Field(1.0, gt=0, description=(
        "The longest wait between two probes of a dependency that stays down (at least BREAKER_RESET_SECONDS): "
        "traffic to a dependency that is back resumes within this time."))

    @field_validator("rate_limit_per_user", "rate_limit_per_address")
    @classmethod
    def _limits(cls, value: str) -> str:
        parse_many(value)  # raises ValueError for anything the rate limiter would not understand
        return value

    @field_validator("public_base_url", "link_service_url", "user_service_url", "social_graph_service_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _oidc_needs_discovery(self) -> GatewaySettings:
        if self.auth_provider == "oidc" and not self.oidc_discovery_url:
            raise ValueError("OIDC_DISCOVERY_URL is required when AUTH_PROVIDER=oidc")
        return self

    @model_validator(mode="after")
    def _probe_waits(self) -> GatewaySettings:
        if self.breaker_max_reset_seconds < self.breaker_reset_seconds:
            raise ValueError("BREAKER_MAX_RESET_SECONDS must be at least BREAKER_RESET_SECONDS")
        return self

    def validate_caller_auth(self) -> None:
        """The gateway has no internal endpoints to protect; it only presents its own token."""
        if self.admin_port == self.port:
            raise ConfigurationError("configuration error: ADMIN_PORT: must differ from PORT")


class _Api(Api):
    def handle_error(self, e: Exception) -> Any:
        raise e  # the kit's error handlers give every error the same JSON shape


def build(runtime: ServiceRuntime) -> ServiceParts:
    settings = runtime.settings
    assert isinstance(settings, GatewaySettings)
    token = settings.caller_token.get_secret_value()
    limits = {"timeout_s": settings.downstream_timeout, "failures": settings.breaker_failures,
              "reset_s": settings.breaker_reset_seconds, "max_reset_s": settings.breaker_max_reset_seconds}
    links = RestDependency("link", settings.link_service_url, token, **limits)
    users = RestDependency("user", settings.user_service_url, token, **limits)
    social = RestDependency("social-graph", settings.social_graph_service_url, token, **limits)
    news = NewsDependency(settings.news_grpc_address, token, **limits)
    for dependency in (links, users, social, news):
        runtime.on_stop(dependency.close)
    runtime.health.add_readiness_check(Check(
        "dependencies", lambda: {d.name: d.state for d in (links, users, social, news)}, critical=False))

    verifier = TokenVerifier(users, settings.token_cache_seconds)
    # The runtime's Redis client: REDIS_URL with REDIS_PASSWORD and REDIS_TIMEOUT.
    limiter = RateLimiter(runtime.redis, per_address=settings.rate_limit_per_address,
                          per_user=settings.rate_limit_per_user)

    api_blueprint = Blueprint("public_api", __name__)

    @api_blueprint.before_request
    def authenticate() -> None:
        g.caller = verifier.caller()
        if g.get("user_limited") != g.caller.username:
            limiter.check_user(g.caller.username)

    def limit_rate() -> None:
        """Every request counts against its address's limit before anything else, unauthenticated ones too. For a
        signed-in request whose token this worker verified recently the user's limit is counted in the same Redis
        round trip; otherwise `authenticate` counts it once it knows the user."""
        if is_ops_path(request.path):
            return
        token = presented_token() if request.blueprint == api_blueprint.name else None
        g.user_limited = verifier.cached_username(token) if token else None
        limiter.check(request.remote_addr or "unknown", g.user_limited)

    api = _Api(api_blueprint)
    dependencies = resources.Dependencies(verifier, links, users, social, news)
    for resource, path in ((resources.Me, "/v1/me"), (resources.Links, "/v1/links"),
                           (resources.Following, "/v1/following"), (resources.Followers, "/v1/followers"),
                           (resources.News, "/v1/news"), (resources.Logout, "/logout")):
        api.add_resource(resource, path, resource_class_args=(dependencies,))

    login = Login(settings, users)
    entry = Blueprint("entry", __name__)
    entry.add_url_rule(LOGIN_PATH, "login", login.redirect)
    entry.add_url_rule(LOGIN_CALLBACK_PATH, "login_authorized", lambda: jsonify(login.complete()))
    register_api_docs(entry, settings.public_base_url)

    def setup(app: Flask) -> None:
        app.secret_key = settings.session_secret.get_secret_value()
        app.session_interface = LoginStateSessions()
        app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                          SESSION_COOKIE_SECURE=settings.public_base_url.startswith("https://"),
                          SESSION_COOKIE_NAME="delinkcious_login")
        if settings.trusted_proxy_hops:
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
        app.before_request(limit_rate)  # after the kit's own (request id, logging context), before the routes'

        @app.errorhandler(RateLimited)
        def rate_limited(error: RateLimited) -> Response:
            response = jsonify(error.to_body())
            response.status_code = error.status
            response.headers["Retry-After"] = str(error.retry_after_s)
            return response

    return ServiceParts(blueprints=[entry, api_blueprint], app_setup=[setup])


DEFINITION = ServiceDefinition(name=FACTS.name, settings_class=GatewaySettings, build=build, public=True,
                               redis_critical=False)
