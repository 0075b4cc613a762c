"""The public REST API (DESIGN §2) as Flask-RESTful resources. Thin: authenticate, translate the
public request into internal calls, and answer."""
from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

from flask import g, request
from flask_restful import Resource
from pydantic import BaseModel, ValidationError

from ..contracts import public_api as api
from ..kit.core.errors import InvalidInput
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


# --- the request as the public API's document describes it -------------------------------------------
# Query parameters and bodies are checked with the very models the document is generated from
# (contracts/public_api.py), before anything is passed on: what the document refuses is a 400 here, named after the
# parameter or field. What JSON Schema cannot say (a regular expression's syntax and cost, whether a page token was
# issued to this caller, whether a link exists) the internal service decides, also with a 400 naming it.

def checked_query(*models: type[BaseModel]) -> None:
    """InvalidInput naming the first query parameter that breaks the document's models."""
    for model in models:
        lists = _list_parameters(model)
        values = {name: request.args.getlist(name) if name in lists else request.args.get(name)
                  for name in model.model_fields if name in request.args}
        checked(model, values)


def checked(model: type[BaseModel], values: dict[str, Any], *, strict: bool = False) -> None:
    """InvalidInput naming the first field of `values` that breaks `model` (strict: JSON types, no coercion)."""
    try:
        model.model_validate(values, strict=strict)
    except ValidationError as invalid:
        raise invalid_input(invalid) from None


def invalid_input(invalid: ValidationError) -> InvalidInput:
    error = invalid.errors(include_url=False)[0]
    names = [str(part) for part in error["loc"] if not isinstance(part, int)]
    field = names[0] if names else "body"
    kind = error["type"]
    if kind == "missing":
        problem = "is required"
    elif kind == "extra_forbidden":
        problem = "is not a known field"
    elif kind == "string_pattern_mismatch":
        problem = api.PATTERN_PROBLEMS.get(error.get("ctx", {}).get("pattern"), "is not of the expected form")
    else:
        message = str(error["msg"])
        problem = message[:1].lower() + message[1:]
    return InvalidInput(field, problem)


@functools.cache
def _list_parameters(model: type[BaseModel]) -> frozenset[str]:
    """The model's repeatable query parameters (?tag=a&tag=b): its array fields."""
    return frozenset(name for name, schema in model.model_json_schema()["properties"].items()
                     if schema.get("type") == "array")


def link_input() -> dict[str, Any]:
    """POST /v1/links accepts a JSON body, a form, or (the original clients) query parameters."""
    checked_query(api.NewLinkQuery)
    # A JSON body is read as it is; `request.data` would first look for a form in it.
    if request.is_json and request.get_data():
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise InvalidInput("body", "must be a JSON object")
        checked(api.NewLink, payload, strict=True)
        return payload
    if request.data and not request.form:
        raise InvalidInput("body", "send JSON (Content-Type: application/json), a form, or query parameters")
    source = request.form if request.form else request.args
    payload: dict[str, Any] = {key: source.get(key) for key in ("url", "title", "description") if key in source}
    tags = [tag for value in source.getlist("tags") + source.getlist("tag") for tag in value.split(",")
            if tag.strip()]
    if tags:
        payload["tags"] = tags
    checked(api.NewLink, payload)
    return payload


def json_body(model: type[BaseModel] | None = None) -> dict[str, Any]:
    payload = request.get_json(silent=True)  # None unless the body is JSON
    if not isinstance(payload, dict):
        raise InvalidInput("body", "a JSON object is required")
    if model is not None:
        checked(model, payload, strict=True)
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
        checked_query(api.LinkFilterQuery, api.PageQuery)
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
        _, body = self.deps.links.call("PUT", path, json=json_body(api.LinkUpdate))
        return body

    def delete(self) -> Any:
        path = self.path()
        checked_query(api.LinkUrlQuery)
        _, body = self.deps.links.call("DELETE", path, params={"url": request.args["url"]})
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
        checked_query(api.FollowedQuery)
        followed = request.args["followed"]
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
        checked_query(api.PageQuery)
        limit = int(request.args.get("limit") or api.DEFAULT_PAGE_SIZE)
        return self.deps.news.get_news(username, request.args.get("start_token") or "", limit)


def _page_query() -> dict[str, str]:
    checked_query(api.PageQuery)
    return {key: value for key, value in request.args.items() if key in ("start_token", "limit")}


def _followed_body() -> dict[str, Any]:
    if request.data:
        return json_body(api.Follow)
    followed = request.form.get("followed") or request.args.get("followed")
    return {"followed": followed} if followed is not None else {}
