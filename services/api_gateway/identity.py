"""Who is calling: logging in through an OAuth2/OpenID Connect provider (authlib), and verifying
Delinkcious access tokens through the user service with a short-lived cache."""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from cachetools import TTLCache
from flask import Flask, request

from ..kit.core.errors import InvalidInput, ServiceError, Unauthenticated
from ..kit.observability.logs import get_logger
from .downstream import DownstreamError, RestDependency

log = get_logger(__name__)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

GITHUB = {
    "access_token_url": "https://github.com/login/oauth/access_token",
    "authorize_url": "https://github.com/login/oauth/authorize",
    "api_base_url": "https://api.github.com/",
    "client_kwargs": {"scope": "read:user user:email"},
}


class LoginFailed(ServiceError):
    status = 401
    code = "login_failed"


@dataclass(frozen=True)
class Caller:
    username: str
    token: str


def presented_token() -> str | None:
    """`Authorization: Bearer <t>`, or `Access-Token: <t>` (the original Delinkcious clients)."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("Access-Token", "").strip() or None


class TokenVerifier:
    """Verifies tokens with the user service; answers are cached for `ttl_s` seconds, which bounds
    how long a revoked token keeps working on another gateway instance."""

    def __init__(self, users: RestDependency, ttl_s: float) -> None:
        self._users = users
        self._cache: TTLCache[bytes, str] = TTLCache(maxsize=100_000, ttl=ttl_s)
        self._lock = threading.Lock()

    def caller(self) -> Caller:
        token = presented_token()
        if not token:
            raise Unauthenticated("an access token is required (Authorization: Bearer <token>)")
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            username = self._cache.get(key)
        if username is None:
            try:
                _, body = self._users.call("POST", "/v1/tokens/verify", json={"token": token})
            except DownstreamError as refused:
                raise Unauthenticated("the access token is invalid, expired or revoked") from refused
            username = body["user"]["username"]
            with self._lock:
                self._cache[key] = username
        return Caller(username=username, token=token)

    def forget(self, token: str) -> None:
        with self._lock:
            self._cache.pop(hashlib.sha256(token.encode()).digest(), None)


class Login:
    """The OAuth dance with the configured provider, then the Delinkcious side: the user service
    creates or updates the user and issues our own token (no per-request call to the provider)."""

    def __init__(self, settings: Any, users: RestDependency) -> None:
        self._users = users
        self._provider_kind = settings.auth_provider
        self._provider_name = "github" if settings.auth_provider == "github" else settings.oidc_provider_name
        self._redirect_uri = settings.public_base_url.rstrip("/") + "/login/authorized"
        self._oauth = oauth = OAuth()
        common = {"client_id": settings.oauth_client_id,
                  "client_secret": settings.oauth_client_secret.get_secret_value()}
        if settings.auth_provider == "github":
            self._client = oauth.register("github", **common, **GITHUB)
        else:
            self._client = oauth.register("oidc", **common, server_metadata_url=settings.oidc_discovery_url,
                                          client_kwargs={"scope": "openid email profile"})

    def init_app(self, app: Flask) -> None:
        self._oauth.init_app(app)

    def redirect(self) -> Any:
        return self._client.authorize_redirect(self._redirect_uri)

    def complete(self) -> dict[str, Any]:
        if request.args.get("error"):
            raise LoginFailed(f"the identity provider refused: {request.args.get('error')}")
        try:
            token = self._client.authorize_access_token()
            profile = self._profile(token)
        except OAuthError as error:
            raise LoginFailed(f"login failed: {error.error}") from None
        email = profile.get("email")
        identity = {
            "provider": self._provider_name,
            "subject": str(profile["subject"]),
            "login": profile.get("login"),
            # Optional claims we cannot use are dropped rather than failing the login.
            "email": email if isinstance(email, str) and _EMAIL.match(email) and len(email) <= 320 else None,
            "name": name[:200] if isinstance(name := profile.get("name"), str) else None,
        }
        try:
            _, login = self._users.call("POST", "/v1/logins", json=identity)
        except DownstreamError as refused:  # e.g. a provider subject our rules refuse
            field = refused.details.get("field", "profile")
            raise InvalidInput(field, refused.message.removeprefix(f"{field}: ")) from None
        username = login["user"]["username"]
        _, issued = self._users.call("POST", f"/v1/users/{username}/tokens")
        log.info("user_logged_in", user=username, created=login["created"], provider=self._provider_name)
        user = login["user"]
        return {"username": username, "email": user["email"], "name": user["name"],
                "access_token": issued["token"], "expires_at": issued["expires_at"]}

    def _profile(self, token: dict[str, Any]) -> dict[str, Any]:
        if self._provider_kind == "github":
            data = self._client.get("user", token=token).json()
            return {"subject": data["id"], "login": data.get("login"), "email": data.get("email"),
                    "name": data.get("name")}
        claims = token.get("userinfo") or self._client.userinfo(token=token)
        return {"subject": claims["sub"], "login": claims.get("preferred_username") or claims["sub"],
                "email": claims.get("email"), "name": claims.get("name")}
