"""What the black-box suites use to talk to a Delinkcious deployment: HTTP to its public API
gateway, nothing else. Every request has a timeout and every wait has a deadline."""

from __future__ import annotations

import http.client
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

T = TypeVar("T")

LOCAL_OIDC = "local-oidc"  # log fresh users in through the local OIDC identity provider
TOKENS = "tokens"  # use pre-issued tokens (--token)

DEFAULT_TIMEOUT = 10.0  # seconds, for one request
RATE_LIMIT_PATIENCE = 70.0  # seconds a request may spend waiting out 429s (limits are per minute)


class GatewaySession(requests.Session):
    """A requests.Session bound to one base URL: relative paths are resolved against it, every
    request gets a timeout, and a 429 is waited out (honouring Retry-After) within a deadline."""

    def __init__(
        self, base_url: str, timeout: float = DEFAULT_TIMEOUT, rate_limit_patience: float = RATE_LIMIT_PATIENCE
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.rate_limit_patience = rate_limit_patience
        self.headers["Accept"] = "application/json"

    def url(self, path: str) -> str:
        if urlsplit(path).scheme:
            return path
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def request(  # type: ignore[override]
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        target = self.url(url.decode() if isinstance(url, bytes) else url)
        deadline = time.monotonic() + self.rate_limit_patience
        while True:
            response = super().request(method, target, *args, **kwargs)
            remaining = deadline - time.monotonic()
            if response.status_code != 429 or remaining <= 0:
                return response
            time.sleep(min(_retry_after(response), remaining, 10.0))


def _retry_after(response: requests.Response) -> float:
    try:
        return max(0.1, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


# --------------------------------------------------------------------------------------
# Users and tokens


@dataclass(frozen=True)
class User:
    username: str
    token: str
    fresh: bool  # logged in for the first time by this run (so it has no links, follows, news yet)

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def access_token(self) -> dict[str, str]:
        """The header of the original Delinkcious clients."""
        return {"Access-Token": self.token}


class LoginError(AssertionError):
    pass


def login(session: GatewaySession, username: str) -> dict[str, Any]:
    """Log `username` in through the gateway and the local OIDC identity provider (oidc-provider-mock).

    1. GET {base}/login without following the redirect: its Location is the provider's authorize URL;
    2. GET that URL: the provider's form;
    3. POST the form field `sub=<username>` to the same URL: the provider redirects back to
       {base}/login/authorized?code=...&state=...;
    4. GET that, in the same session (its cookie jar holds the gateway's OAuth state cookie):
       the JSON {"username", "email", "name", "access_token"}.
    """
    started = session.get("/login", allow_redirects=False)
    _expect(started, (302, 303, 307), "GET /login")
    authorize_url = urljoin(started.url, started.headers["Location"])

    form = session.get(authorize_url, allow_redirects=False)
    _expect(form, (200,), f"GET {authorize_url} (the provider's form)")
    if 'name="sub"' not in form.text:
        raise LoginError(f"the provider's page at {authorize_url} has no `sub` field; is it oidc-provider-mock?")

    authorized = session.post(authorize_url, data={"sub": username}, allow_redirects=False)
    _expect(authorized, (302, 303), f"POST {authorize_url} sub={username}")
    callback = urljoin(authorize_url, authorized.headers["Location"])
    expected = session.url("/login/authorized")
    if callback.split("?", 1)[0] != expected:
        raise LoginError(
            f"the provider sent us to {callback.split('?', 1)[0]}, not {expected}: "
            "is the gateway's PUBLIC_BASE_URL the base URL the suite uses?"
        )
    if "error" in parse_qs(urlsplit(callback).query):
        raise LoginError(f"the provider refused the login: {callback}")

    completed = session.get(callback, allow_redirects=False)
    _expect(completed, (200,), "GET /login/authorized")
    body: dict[str, Any] = completed.json()
    missing = {"username", "email", "name", "access_token"} - body.keys()
    if missing:
        raise LoginError(f"/login/authorized answered without {sorted(missing)}: {body}")
    return body


def _expect(response: requests.Response, statuses: tuple[int, ...], what: str) -> None:
    if response.status_code not in statuses:
        raise LoginError(f"{what} answered {response.status_code} (expected {statuses}): {response.text[:500]}")


# --------------------------------------------------------------------------------------
# Assertions and waiting


def assert_error(
    response: requests.Response, status: int, *, field: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """`response` is the error `status` with the JSON shape {"message", "code"}; the message (or a
    `field` member) names `field`."""
    described = f"{response.request.method} {response.url} -> {response.status_code} {response.text[:500]!r}"
    assert response.status_code == status, described
    assert response.headers.get("Content-Type", "").startswith("application/json"), described
    body = response.json()
    assert isinstance(body, dict), described
    assert isinstance(body.get("message"), str) and body["message"], described
    assert isinstance(body.get("code"), str) and body["code"], described
    if field is not None:
        assert field in body["message"] or body.get("field") == field, f"{field!r} not named: {described}"
    if code is not None:
        assert body["code"] == code, described
    return body


def assert_ok(response: requests.Response, *statuses: int) -> Any:
    """`response` has one of `statuses` (200 if none given); its JSON body, or None if it has none."""
    expected = statuses or (200,)
    assert response.status_code in expected, (
        f"{response.request.method} {response.url} -> {response.status_code} (expected {expected}): "
        f"{response.text[:500]!r}"
    )
    if not response.content:
        return None
    return response.json()


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call `probe` until it returns something other than None or False; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp in UTC (a trailing Z or +00:00)."""
    assert isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)$", value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def walk_pages(session: GatewaySession, path: str, user: User, key: str, params: dict[str, Any],
               token_param: str = "start_token", max_pages: int = 100) -> Iterator[list[dict[str, Any]]]:
    """Every page of a paged list (`key` holds the items, `next_token` the cursor), first to last."""
    query = dict(params)
    for _ in range(max_pages):
        body = assert_ok(session.get(path, params=query, headers=user.bearer))
        yield body[key]
        if not body.get("next_token"):
            return
        query[token_param] = body["next_token"]
    raise AssertionError(f"{path} still had a next_token after {max_pages} pages")


def describe(body: Any) -> str:
    return json.dumps(body, indent=1, sort_keys=True)[:2000]


# --------------------------------------------------------------------------------------
# Suite settings, users and cleanup


@dataclass(frozen=True)
class Settings:
    base_url: str
    request_timeout: float
    wait_timeout: float
    login_mode: str
    public_url: str = ""  # where browsers reach the gateway (its PUBLIC_BASE_URL); the base URL when empty

    @property
    def public_base_url(self) -> str:
        return (self.public_url or self.base_url).rstrip("/")


def new_session(settings: Settings) -> GatewaySession:
    return GatewaySession(settings.base_url, timeout=settings.request_timeout)


_counter = itertools.count(1)


class Users:
    """Users for one test: fresh ones logged in through the local identity provider, or the pre-issued ones."""

    def __init__(self, settings: Settings, run_id: str, pre_issued: list[User]) -> None:
        self._settings = settings
        self._run_id = run_id
        self._pre_issued = list(pre_issued)

    def unique_name(self, role: str) -> str:
        """A valid, never used username (1-39 of a-z, 0-9 and inner dashes)."""
        return f"it-{role[:8]}-{self._run_id}{next(_counter)}"

    def new(self, role: str) -> User:
        if self._settings.login_mode == LOCAL_OIDC:
            with new_session(self._settings) as session:
                body = login(session, self.unique_name(role))
            return User(username=body["username"], token=body["access_token"], fresh=True)
        if not self._pre_issued:
            pytest.skip("needs another user: give one more --token")
        return self._pre_issued.pop(0)


class Cleanup:
    """Undo what a test created (links, follows), so runs against a long-lived system leave little behind."""

    def __init__(self, api: GatewaySession) -> None:
        self._api = api
        self._actions: list[tuple[str, str, dict[str, str], User]] = []

    def delete_link(self, user: User, url: str) -> None:
        self._actions.append(("DELETE", "/v1/links", {"url": url}, user))

    def unfollow(self, user: User, followed: str) -> None:
        self._actions.append(("DELETE", "/v1/following", {"followed": followed}, user))

    def run(self) -> None:
        for method, path, params, user in reversed(self._actions):
            try:
                self._api.request(method, path, params=params, headers=user.bearer)
            except Exception:  # best effort: a failed cleanup must not hide the test's own result
                pass


# --------------------------------------------------------------------------------------
# Attacks: the API's document, altered tokens, bodies sent chunked, timings


def protected_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation the gateway's own OpenAPI `document` (its /v1/openapi.json, read
    at run time) says needs a token: a route added to the API is covered without changing the tests."""
    return [(method.upper(), path, operation) for path, operations in document["paths"].items()
            for method, operation in operations.items() if operation.get("security")]


def tampered(token: str) -> str:
    """`token` with one character in its middle changed (to another of the URL-safe base64 alphabet, which every
    Delinkcious token uses): the middle, because the last character of unpadded base64 may carry unused bits."""
    middle = len(token) // 2
    replacement = "B" if token[middle] == "A" else "A"
    return token[:middle] + replacement + token[middle + 1:]


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    """The response and the seconds it took, measured as the client sees them."""
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send_chunked(base_url: str, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes],
                 timeout: float = DEFAULT_TIMEOUT) -> RawResponse:
    """Sends `chunks` as the body of a `method` request with `Transfer-Encoding: chunked` (no Content-Length) on a connection of its own, and reads
    the answer even if the server answers (and stops reading) before the whole body is sent, as it should for one
    that is too large."""
    target = urlsplit(base_url)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(target.hostname or "", target.port, timeout=timeout)
    try:
        connection.putrequest(method, (target.path.rstrip("/") + path) or "/")
        for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            for chunk in chunks:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        except OSError:  # the server answered and closed its side: its answer is waiting to be read
            pass
        response = connection.getresponse()
        return RawResponse(response.status, {name.lower(): value for name, value in response.getheaders()},
                           response.read())
    finally:
        connection.close()


def assert_raw_error(response: RawResponse, status: int) -> dict[str, Any]:
    """As assert_error, for a RawResponse."""
    described = f"-> {response.status} {response.body[:500]!r}"
    assert response.status == status, described
    assert response.headers.get("content-type", "").startswith("application/json"), described
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], described
    assert isinstance(body.get("code"), str) and body["code"], described
    return body
