"""Internal REST API of the link service (called by the API gateway). Thin: parse, call a use
case, render. See README.md for the contract."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..kit.core.pages import validate_limit
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


def link_json(link: Link) -> dict[str, Any]:
    return json_fields(link, LINK_FIELDS)


def links_blueprint(service: LinkService) -> Blueprint:
    api = user_blueprint("links", __name__, "/v1/users/<username>/links")

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
