"""Internal REST API of the link service (called by the API gateway, and by the news service for its
projection). Thin: parse, call a use case, render. See README.md for the contract."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..kit.core.pages import validate_limit
from ..kit.serving.callers import allow_callers
from ..kit.serving.web import json_fields, json_object, user_blueprint
from .domain import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    DuplicateLink,
    Link,
    LinkChanges,
    LinkFilter,
    NewLink,
    validate_pattern,
    validate_tags,
    validate_url,
)
from .service import LinkService

LINK_FIELDS = ("url", "title", "description", "tags", "status", "created_at", "updated_at", "checked_at",
               "http_status", "status_reason", "username")
# The link's inconclusive check, an object (or null) under "inconclusive_check".
INCONCLUSIVE_CHECK_FIELDS = ("attempted_at", "reason", "failure", "http_status", "attempts", "next_attempt_at",
                             "given_up")

# Who calls what (README, "Callers"): the gateway, on one user's behalf, that user's links
# (services/api_gateway/resources.py); the services that keep a projection of links (news' feeds,
# services/news/sources.py), any user's links through /internal/v1. Neither may call the other's routes.
LINK_CALLERS = ("api-gateway",)
PROJECTION_READERS = ("news",)
# What projection readers get of a link: what a news item shows, and the times that order and identify its changes.
PROJECTION_FIELDS = ("url", "title", "created_at", "updated_at")
MAX_PROJECTION_PAGE_SIZE = 1000


def link_json(link: Link) -> dict[str, Any]:
    attempt = link.inconclusive_check
    return {**json_fields(link, LINK_FIELDS),
            "inconclusive_check": None if attempt is None else json_fields(attempt, INCONCLUSIVE_CHECK_FIELDS)}


def links_blueprint(service: LinkService) -> Blueprint:
    """Every route of the service: a user's links (`/v1/users/<username>/links`, on the user's behalf) and the
    projection readers' view (`/internal/v1/...`)."""
    routes = Blueprint("links", __name__)
    routes.register_blueprint(user_links_blueprint(service))
    routes.register_blueprint(projection_blueprint(service))
    return routes


def user_links_blueprint(service: LinkService) -> Blueprint:
    api = allow_callers(*LINK_CALLERS)(user_blueprint("user_links", __name__, "/v1/users/<username>/links"))

    @api.get("")
    def list_links(username: str) -> Response:
        link_filter = LinkFilter(
            url_regex=validate_pattern(request.args.get("url_regex"), "url_regex"),
            title_regex=validate_pattern(request.args.get("title_regex"), "title_regex"),
            description_regex=validate_pattern(request.args.get("description_regex"), "description_regex"),
            tags=validate_tags(request.args.getlist("tag"), "tag"),
        )
        links, next_token = service.list_links(
            username, link_filter,
            start_token=request.args.get("start_token") or None,
            limit=validate_limit(request.args.get("limit"), default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE),
        )
        return jsonify({"links": [link_json(link) for link in links], "next_token": next_token})

    @api.post("")
    def add_link(username: str) -> tuple[Response, int]:
        try:
            link = service.add_link(username, NewLink.parse(json_object()))
        except DuplicateLink as duplicate:
            return jsonify({**duplicate.to_body(), "link": link_json(duplicate.existing)}), 409
        return jsonify(link_json(link)), 201

    @api.put("")
    def update_link(username: str) -> Response:
        link = service.update_link(username, LinkChanges.parse(json_object()))
        return jsonify(link_json(link))

    @api.delete("")
    def delete_link(username: str) -> Response:
        link = service.delete_link(username, validate_url(request.args.get("url")))
        return jsonify(link_json(link))

    return api


def projection_blueprint(service: LinkService) -> Blueprint:
    """Any user's links, most recently changed first, for the projection readers only."""
    # The kit checks the caller before anything of the request (the nested blueprint's username included).
    internal = allow_callers(*PROJECTION_READERS)(Blueprint("projection", __name__, url_prefix="/internal/v1"))
    users = user_blueprint("users", __name__, "/users/<username>/links")

    @users.get("")
    def recently_changed(username: str) -> Response:
        links, next_token = service.recently_changed(
            username,
            start_token=request.args.get("start_token") or None,
            limit=validate_limit(request.args.get("limit"), default=DEFAULT_PAGE_SIZE,
                                 maximum=MAX_PROJECTION_PAGE_SIZE),
        )
        return jsonify({"links": [json_fields(link, PROJECTION_FIELDS) for link in links], "next_token": next_token})

    internal.register_blueprint(users)
    return internal
