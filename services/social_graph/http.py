"""Internal REST API of the social-graph service (called by the API gateway and the news service).
Thin: parse, call a use case, render. See README.md for the contract."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..kit.core.pages import validate_limit
from ..kit.core.validation import validate_username
from ..kit.serving.web import json_fields, json_object, user_blueprint
from .domain import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Direction, Follow, FollowRequest
from .service import SocialGraphService


def follow_json(follow: Follow) -> dict[str, str]:
    return json_fields(follow, ("follower", "followed", "created_at"))


def social_graph_blueprint(service: SocialGraphService) -> Blueprint:
    api = user_blueprint("social_graph", __name__, "/v1/users/<username>")

    def page(username: str, direction: Direction) -> Response:
        usernames, next_token = service.list(
            username, direction,
            start_token=request.args.get("start_token") or None,
            limit=validate_limit(request.args.get("limit"), default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE),
        )
        return jsonify({direction: usernames, "next_token": next_token})

    @api.get("/following")
    def following(username: str) -> Response:
        return page(username, "following")

    @api.get("/followers")
    def followers(username: str) -> Response:
        return page(username, "followers")

    @api.post("/following")
    def follow(username: str) -> tuple[Response, int]:
        wanted = FollowRequest.parse(json_object())
        edge, created = service.follow(username, wanted.followed)
        return jsonify(follow_json(edge)), 201 if created else 200

    @api.delete("/following/<followed>")
    def unfollow(username: str, followed: str) -> tuple[str, int]:
        service.unfollow(username, validate_username(followed, "followed"))
        return "", 204

    return api
