"""The public REST API (DESIGN §2) as Flask-RESTful resources. Thin: authenticate, translate the
public request into internal calls, and answer."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import g, request
from flask_restful import Resource

from ..kit.core.errors import InvalidInput
from ..kit.core.pages import validate_limit
from ..kit.observability.logs import bind_contextvars
from .downstream import NewsDependency, RestDependency
from .identity import Caller, TokenVerifier


class Dependencies:
    """What every resource may use, given to the resources once by the app."""

    def __init__(self, verifier: TokenVerifier, links: RestDependency, users: RestDependency,
                 social: RestDependency, news: NewsDependency) -> None:
        self.verifier, self.links, self.users, self.social, self.news = verifier, links, users, social, news


class Authenticated(Resource):
    def __init__(self, dependencies: Dependencies) -> None:
        self.deps = dependencies

    def caller(self) -> Caller:
        """Authenticated before the view runs (and before the per-user rate limit)."""
        caller: Caller = g.caller
        bind_contextvars(user=caller.username)
        return caller


def link_input() -> dict[str, Any]:
    """POST /v1/links accepts a JSON body, a form, or (the original clients) query parameters."""
    # A JSON body is read as it is; `request.data` would first look for a form in it.
    if request.is_json and request.get_data():
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise InvalidInput("body", "must be a JSON object")
        return payload
    if request.data and not request.form:
        raise InvalidInput("body", "send JSON (Content-Type: application/json), a form, or query parameters")
    source = request.form if request.form else request.args
    payload: dict[str, Any] = {key: source.get(key) for key in ("url", "title", "description") if key in source}
    tags = [tag for value in source.getlist("tags") + source.getlist("tag") for tag in value.split(",") if tag]
    if tags:
        payload["tags"] = tags
    return payload


def json_body() -> dict[str, Any]:
    payload = request.get_json(silent=True)  # None unless the body is JSON
    if not isinstance(payload, dict):
        raise InvalidInput("body", "a JSON object is required")
    return payload


class Me(Authenticated):
    def get(self) -> Any:
        caller = self.caller()
        _, user = self.deps.users.call("GET", f"/v1/users/{caller.username}")
        return user


class Logout(Authenticated):
    def post(self) -> Any:
        caller = self.caller()
        self.deps.users.call("POST", "/v1/tokens/revoke", json={"token": caller.token})
        self.deps.verifier.forget(caller.token)
        return {"message": "logged out"}, 200


class Links(Authenticated):
    def path(self) -> str:
        return f"/v1/users/{self.caller().username}/links"

    def get(self) -> Any:
        path = self.path()
        query = [(key, value) for key, value in request.args.items(multi=True)
                 if key in ("url_regex", "title_regex", "description_regex", "tag", "start_token", "limit")]
        _, body = self.deps.links.call("GET", path, params=query)
        return body

    def post(self) -> Any:
        path = self.path()
        status, body = self.deps.links.call("POST", path, json=link_input())
        return body, status

    def put(self) -> Any:
        path = self.path()
        _, body = self.deps.links.call("PUT", path, json=json_body())
        return body

    def delete(self) -> Any:
        path = self.path()
        url = request.args.get("url")
        if not url:
            raise InvalidInput("url", "is required")
        _, body = self.deps.links.call("DELETE", path, params={"url": url})
        return body


class Following(Authenticated):
    def get(self) -> Any:
        username = self.caller().username
        _, body = self.deps.social.call("GET", f"/v1/users/{username}/following", params=_page_query())
        return body

    def post(self) -> Any:
        username = self.caller().username
        status, body = self.deps.social.call("POST", f"/v1/users/{username}/following", json=_followed_body())
        return body, status

    def delete(self) -> Any:
        username = self.caller().username
        followed = request.args.get("followed")
        if not followed:
            raise InvalidInput("followed", "is required")
        self.deps.social.call("DELETE", f"/v1/users/{username}/following/{quote(followed, safe='')}")
        return {"follower": username, "followed": followed}, 200


class Followers(Authenticated):
    def get(self) -> Any:
        username = self.caller().username
        _, body = self.deps.social.call("GET", f"/v1/users/{username}/followers", params=_page_query())
        return body


class News(Authenticated):
    def get(self) -> Any:
        username = self.caller().username
        limit = validate_limit(request.args.get("limit"), default=10, maximum=100)
        return self.deps.news.get_news(username, request.args.get("start_token") or "", limit)


def _page_query() -> dict[str, str]:
    return {key: value for key, value in request.args.items() if key in ("start_token", "limit")}


def _followed_body() -> dict[str, Any]:
    if request.data:
        return json_body()
    followed = request.form.get("followed") or request.args.get("followed")
    return {"followed": followed} if followed is not None else {}
