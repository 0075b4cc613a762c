"""Who is calling: logging in through an OAuth2/OpenID Connect provider (authlib), and verifying
Delinkcious access tokens through the user service with a short-lived cache (one call per token at a time)."""
from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache
from flask import Flask, Request, current_app, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from ..kit.core.errors import InvalidInput, ServiceError, Unauthenticated, Unavailable
from ..kit.observability.logs import get_logger
from .downstream import DownstreamError, RestDependency

if TYPE_CHECKING:
    from authlib.integrations.flask_client import FlaskOAuth2App

log = get_logger(__name__)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

LOGIN_PATH = "/login"
LOGIN_CALLBACK_PATH = "/login/authorized"

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


@dataclass(frozen=True)
class _Verified:
    username: str
    asked_at: float  # when the verification call began: the answer is trusted for the TTL from then


class _Verification:
    """One call to the user service about one token, shared by every request that needs its answer."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.username: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def outcome(self) -> str:
        """The shared answer, for a request that waited for it; each waiter gets an error of its own to raise."""
        self.done.wait()
        if self.username is not None:
            return self.username
        if isinstance(self.error, Unauthenticated):
            raise Unauthenticated(self.error.message)
        if isinstance(self.error, Unavailable):
            raise Unavailable(self.error.message, retry_after=self.error.retry_after)
        raise Unavailable("the user service is unavailable")


class TokenVerifier:
    """Verifies tokens with the user service. An answer is trusted for `ttl_s` seconds from when it was asked
    for, which bounds how long a revoked token keeps working on another gateway instance (`forget` ends it at
    once on this one).

    Concurrent requests with the same token share one verification call. An answer older than REFRESH_AFTER
    of the TTL is refreshed by the first request that sees it while the others keep using it, so a busy token
    is verified about once per TTL and never by every request at once; only a request whose answer has expired
    (or never was) waits, for the one call in flight."""

    REFRESH_AFTER = 0.8

    def __init__(self, users: RestDependency, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._users = users
        self._ttl = ttl_s
        self._refresh_after = ttl_s * self.REFRESH_AFTER
        self._clock = clock
        self._cache: TTLCache[bytes, _Verified] = TTLCache(maxsize=100_000, ttl=max(ttl_s, 1e-6), timer=clock)
        self._in_flight: dict[bytes, _Verification] = {}
        self._lock = threading.Lock()

    def caller(self) -> Caller:
        token = presented_token()
        if not token:
            raise Unauthenticated("an access token is required (Authorization: Bearer <token>)")
        return Caller(username=self.verify(token), token=token)

    def verify(self, token: str) -> str:
        """The username the token belongs to; Unauthenticated if it is invalid, expired or revoked."""
        if self._ttl <= 0:
            return self._ask(token)
        key = _key(token)
        with self._lock:
            now = self._clock()
            verified = self._cache.get(key)
            if verified is not None and now - verified.asked_at >= self._ttl:
                verified = None  # no longer trusted
            verification = self._in_flight.get(key)
            if verified is not None and (verification is not None or now - verified.asked_at < self._refresh_after):
                return verified.username  # still fresh, or another request is refreshing it
            leading = verification is None
            if verification is None:
                verification = self._in_flight[key] = _Verification(started_at=now)
        if not leading:
            return verification.outcome()
        return self._lead(token, key, verification, fallback=verified)

    def cached_username(self, token: str) -> str | None:
        """The username of a token whose answer is still trusted, without asking anyone (None otherwise)."""
        if self._ttl <= 0:
            return None
        with self._lock:
            verified = self._cache.get(_key(token))
            if verified is None or self._clock() - verified.asked_at >= self._ttl:
                return None
            return verified.username

    def forget(self, token: str) -> None:
        key = _key(token)
        with self._lock:
            self._cache.pop(key, None)
            # An answer asked for before the logout must not be cached after it.
            self._in_flight.pop(key, None)

    def _lead(self, token: str, key: bytes, verification: _Verification, fallback: _Verified | None) -> str:
        """Makes the call the others wait for, and caches its answer unless the token was forgotten meanwhile."""
        try:
            username = self._ask(token)
        except Unavailable as error:
            verification.error = error
            if fallback is not None:  # a refresh failed, but the answer it was refreshing is still trusted
                log.warning("token_refresh_failed", error=error.message)
                return fallback.username
            raise
        except BaseException as error:
            verification.error = error
            raise
        else:
            verification.username = username
            return username
        finally:
            with self._lock:
                if self._in_flight.get(key) is verification:
                    del self._in_flight[key]
                    if verification.username is not None:
                        self._cache[key] = _Verified(verification.username, asked_at=verification.started_at)
                    elif isinstance(verification.error, Unauthenticated):
                        self._cache.pop(key, None)
            verification.done.set()

    def _ask(self, token: str) -> str:
        try:
            _, body = self._users.call("POST", "/v1/tokens/verify", json={"token": token})
        except DownstreamError as refused:
            raise Unauthenticated("the access token is invalid, expired or revoked") from refused
        return str(body["user"]["username"])


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class LoginStateSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened on the login routes only: it carries the OAuth state from /login to
    its callback and nothing else, so no other request pays for reading and verifying the cookie."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path not in (LOGIN_PATH, LOGIN_CALLBACK_PATH):
            return None  # Flask gives the request a null session
        return super().open_session(app, request)


class Login:
    """The OAuth dance with the configured provider, then the Delinkcious side: the user service
    creates or updates the user and issues our own token (no per-request call to the provider).

    authlib (with requests and cryptography, several MB) is imported by the first login a process handles, not
    at start: most gateway processes serve the API all day and sign nobody in."""

    def __init__(self, settings: Any, users: RestDependency) -> None:
        self._users = users
        self._provider_kind = settings.auth_provider
        self._provider_name = "github" if settings.auth_provider == "github" else settings.oidc_provider_name
        self._redirect_uri = settings.public_base_url.rstrip("/") + LOGIN_CALLBACK_PATH
        self._registration: dict[str, Any] = {
            "name": settings.auth_provider, "client_id": settings.oauth_client_id,
            "client_secret": settings.oauth_client_secret.get_secret_value(),
            **(GITHUB if settings.auth_provider == "github" else {
                "server_metadata_url": settings.oidc_discovery_url,
                "client_kwargs": {"scope": "openid email profile"}}),
        }
        self._client_lock = threading.Lock()
        self._oauth_client: FlaskOAuth2App | None = None

    def _client(self) -> FlaskOAuth2App:
        with self._client_lock:
            if self._oauth_client is None:
                from authlib.integrations.flask_client import OAuth

                self._oauth_client = OAuth(current_app._get_current_object()).register(**self._registration)
            return self._oauth_client

    def redirect(self) -> Any:
        return self._client().authorize_redirect(self._redirect_uri)

    def complete(self) -> dict[str, Any]:
        if request.args.get("error"):
            raise LoginFailed(f"the identity provider refused: {request.args.get('error')}")
        client = self._client()
        from authlib.integrations.base_client.errors import OAuthError

        try:
            token = client.authorize_access_token()
            profile = self._profile(client, token)
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

    def _profile(self, client: FlaskOAuth2App, token: dict[str, Any]) -> dict[str, Any]:
        if self._provider_kind == "github":
            data = client.get("user", token=token).json()
            return {"subject": data["id"], "login": data.get("login"), "email": data.get("email"),
                    "name": data.get("name")}
        claims = token.get("userinfo") or client.userinfo(token=token)
        return {"subject": claims["sub"], "login": claims.get("preferred_username") or claims["sub"],
                "email": claims.get("email"), "name": claims.get("name")}
