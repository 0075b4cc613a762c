"""Adapters to the services that own what news projects: social-graph (who follows whom) and link (the
links). Used only to rebuild the store (service.StoreRebuild); their internal endpoints serve the news
service alone."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from ..kit.core.clock import parse_timestamp
from ..kit.core.errors import InvalidInput, Unavailable
from ..kit.core.validation import validate_username
from ..kit.serving.http_client import ServiceClient
from .domain import FollowEdge, LinkState, to_millis
from .service import FollowSource, LinkSource

# Pages as large as the owners serve: a rebuild walks everything.
FOLLOWS_PAGE_SIZE = 1000
LINKS_PAGE_SIZE = 1000


class OwnerAnswerInvalid(Unavailable):
    """An owner answered, but not what its contract promises (a version skew): the rebuild cannot go on."""


def _page(client: ServiceClient, owner: str, path: str, params: dict[str, Any], items: str) -> tuple[list[Any], str]:
    """A page of `items` and the next page's token ("" at the end). GET is idempotent: the kit's client retries
    it on connection errors and 502/503/504."""
    response = client.request("GET", path, params=params)
    if response.status_code != 200:
        # 401/403: our caller token is not accepted (the owner's ALLOWED_CALLERS or its token files); anything else
        # is the owner's trouble. Either way the rebuild waits and tries again.
        raise Unavailable(f"{owner} answered {response.status_code} to GET {path}")
    try:
        body = response.json()
        page, token = body[items], body.get("next_token") or ""
        if not isinstance(page, list) or not isinstance(token, str):
            raise TypeError(f"{items} is not a list or next_token not a string")
    except (ValueError, KeyError, TypeError) as exc:
        raise OwnerAnswerInvalid(f"{owner} answered GET {path} with an unexpected body: {exc}") from exc
    return page, token


def _text(row: dict[str, Any], name: str) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


class SocialGraphFollows(FollowSource):
    """Every edge, from social-graph's `GET /internal/v1/follows`."""

    PATH = "/internal/v1/follows"

    def __init__(self, client: ServiceClient, page_size: int = FOLLOWS_PAGE_SIZE) -> None:
        self._client = client
        self._page_size = page_size

    def pages(self) -> Iterator[list[FollowEdge]]:
        token = ""
        while True:
            params = {"limit": self._page_size, **({"start_token": token} if token else {})}
            rows, token = _page(self._client, "social-graph", self.PATH, params, "follows")
            try:
                edges = [FollowEdge(follower=validate_username(row["follower"], "follower"),
                                    followed=validate_username(row["followed"], "followed"),
                                    since_ms=to_millis(parse_timestamp(_text(row, "created_at")))) for row in rows]
            except (InvalidInput, ValueError, KeyError, TypeError) as exc:
                raise OwnerAnswerInvalid(f"social-graph answered GET {self.PATH} with an invalid edge: {exc}") from exc
            yield edges
            if not token:
                return


class LinkServiceLinks(LinkSource):
    """A user's most recently changed links, from link's `GET /internal/v1/users/{username}/links`."""

    def __init__(self, client: ServiceClient, page_size: int = LINKS_PAGE_SIZE) -> None:
        self._client = client
        self._page_size = page_size

    def recently_changed(self, author: str, count: int) -> list[LinkState]:
        path = f"/internal/v1/users/{quote(author, safe='')}/links"
        links: list[LinkState] = []
        token = ""
        while len(links) < count:
            params = {"limit": min(self._page_size, count - len(links)), **({"start_token": token} if token else {})}
            rows, token = _page(self._client, "link", path, params, "links")
            try:
                links += [LinkState(url=_text(row, "url"), title=_text(row, "title"),
                                    created_at=parse_timestamp(_text(row, "created_at")),
                                    updated_at=parse_timestamp(_text(row, "updated_at"))) for row in rows]
            except (ValueError, KeyError, TypeError) as exc:
                raise OwnerAnswerInvalid(f"link answered GET {path} with an invalid link: {exc}") from exc
            if not token:
                break
        return links[:count]
