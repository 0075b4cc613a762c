"""The public API as the benchmark uses it: logging users in through the local identity provider (the
browser's flow of integration-test/delinkcious_client.py's `login`, copied here so the benchmark needs
neither pytest nor that folder), saving links, following, and the sequential measurements (propagation of
an added link to a follower's feed, and a plain sequence of reads)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

REQUEST_TIMEOUT = 10.0


class ApiError(RuntimeError):
    pass


@dataclass(frozen=True)
class User:
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}


def new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=32)
    session.mount("http://", adapter)
    return session


def _expect(response: requests.Response, statuses: Iterable[int], what: str) -> requests.Response:
    if response.status_code not in statuses:
        raise ApiError(f"{what} answered {response.status_code}: {response.text[:300]}")
    return response


def login(base_url: str, username: str) -> User:
    """Log `username` in as a browser does: GET /login (its Location is the provider's authorize URL), GET the
    provider's form, POST `sub=<username>` to it, follow its redirect to /login/authorized in the same session
    (the gateway's OAuth state cookie is in its cookie jar), and read the access token from the answer."""
    with requests.Session() as session:
        started = _expect(session.get(f"{base_url}/login", allow_redirects=False, timeout=REQUEST_TIMEOUT),
                          (302, 303, 307), "GET /login")
        authorize_url = urljoin(started.url, started.headers["Location"])
        _expect(session.get(authorize_url, allow_redirects=False, timeout=REQUEST_TIMEOUT), (200,),
                "the identity provider's form")
        authorized = _expect(session.post(authorize_url, data={"sub": username}, allow_redirects=False,
                                          timeout=REQUEST_TIMEOUT), (302, 303), "the identity provider's answer")
        callback = urljoin(authorize_url, authorized.headers["Location"])
        completed = _expect(session.get(callback, allow_redirects=False, timeout=REQUEST_TIMEOUT), (200,),
                            "GET /login/authorized")
        body = completed.json()
    return User(username=body["username"], token=body["access_token"])


def login_many(base_url: str, usernames: list[str]) -> list[User]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda name: login(base_url, name), usernames))


def follow(session: requests.Session, base_url: str, follower: User, followed: User) -> None:
    _expect(session.post(f"{base_url}/v1/following", json={"followed": followed.username}, headers=follower.headers,
                         timeout=REQUEST_TIMEOUT), (200, 201), f"{follower.username} follows {followed.username}")


def add_link(session: requests.Session, base_url: str, user: User, url: str, title: str = "Benchmark") -> None:
    _expect(session.post(f"{base_url}/v1/links", json={"url": url, "title": title}, headers=user.headers,
                         timeout=REQUEST_TIMEOUT), (201,), f"POST /v1/links {url}")


def add_links(base_url: str, user: User, urls: list[str], parallel: int = 8) -> None:
    """Save `urls` for `user`, `parallel` at a time (setting up, not measuring)."""
    session = new_session()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(lambda url: add_link(session, base_url, user, url), urls))


def unique_url(kind: str) -> str:
    """A URL never saved before, on a loopback address of its own: the link checker refuses it at once (its
    guard against private addresses) without a DNS query or any traffic, and a host of its own never waits
    for its turn behind the others (the checker's politeness is per host)."""
    host = ".".join(str(random.randrange(256)) for _ in range(3))
    return f"http://127.{host}/{kind}/{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Timings:
    """Sequential measurements: seconds of each successful try, and how many failed."""

    seconds: list[float]
    failures: int


def propagation(base_url: str, author: User, follower: User, count: int, deadline: float) -> Timings:
    """`count` times: the author saves a link, and the follower reads GET /v1/news back to back until it shows
    it; each time is from sending the POST to receiving the first page that holds the link."""
    session = new_session()
    seconds, failures = [], 0
    for _ in range(count):
        url = unique_url("propagation")
        started = time.perf_counter()
        try:
            add_link(session, base_url, author, url)
            give_up = started + deadline
            while time.perf_counter() < give_up:
                page = session.get(f"{base_url}/v1/news", params={"limit": 10}, headers=follower.headers,
                                   timeout=REQUEST_TIMEOUT)
                if page.status_code == 200 and any(event.get("url") == url for event in page.json()["events"]):
                    seconds.append(time.perf_counter() - started)
                    break
            else:
                failures += 1
        except (ApiError, requests.RequestException):
            failures += 1
    return Timings(seconds, failures)


def sequential_reads(call: Callable[[], requests.Response], count: int, warmup: int = 5) -> Timings:
    """`count` calls one after another (after `warmup` unmeasured ones); a non-200 answer is a failure."""
    for _ in range(warmup):
        call()
    seconds, failures = [], 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            response = call()
            ok = response.status_code == 200
        except requests.RequestException:
            ok = False
        if ok:
            seconds.append(time.perf_counter() - started)
        else:
            failures += 1
    return Timings(seconds, failures)


def feed_length(session: requests.Session, base_url: str, user: User, most: int) -> int:
    """How many items `user`'s feed holds, counting at most `most` (pages of 100)."""
    counted, query = 0, {"limit": 100}
    while counted < most:
        body = _expect(session.get(f"{base_url}/v1/news", params=query, headers=user.headers,
                                   timeout=REQUEST_TIMEOUT), (200,), "GET /v1/news").json()
        counted += len(body["events"])
        if not body.get("next_token"):
            break
        query["start_token"] = body["next_token"]
    return counted


def wait_for_feed(base_url: str, user: User, length: int, deadline: float) -> bool:
    """Wait until `user`'s feed holds `length` items, at most `deadline` seconds; whether it did."""
    session = new_session()
    give_up = time.monotonic() + deadline
    while feed_length(session, base_url, user, length) < length:
        if time.monotonic() > give_up:
            return False
        time.sleep(0.5)
    return True
