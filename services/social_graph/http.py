"""Internal REST API of the social-graph service (called by the API gateway and the news service).
Thin: parse, call a use case, render. See README.md for the contract."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..kit.core.pages import validate_limit
from ..kit.core.validation import validate_username
from ..kit.serving.callers import allow_callers
from ..kit.serving.web import json_fields, json_object, user_blueprint
from .domain import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Direction, Follow, FollowRequest
from .service import SocialGraphService

# Who calls what (README, "Callers"): the gateway, on one user's behalf, their edges
# (services/api_gateway/resources.py); news, which keeps a projection of the graph, the whole graph
# (services/news/sources.py). Neither may call the other's routes.
EDGE_CALLERS = ("api-gateway",)
PROJECTION_READERS = ("news",)


def follow_json(follow: Follow) -> dict[str, str]:
    return json_fields(follow, ("follower", "followed", "created_at"))


def social_graph_blueprint(service: SocialGraphService) -> Blueprint:
    """Every route of the service: one user's edges (`/v1/users/<username>/...`, on the user's behalf) and the
    projection readers' view of the whole graph (`/internal/v1/follows`)."""
    routes = Blueprint("social_graph", __name__)
    routes.register_blueprint(user_edges_blueprint(service))
    routes.register_blueprint(projection_blueprint(service))
    return routes


def user_edges_blueprint(service: SocialGraphService) -> Blueprint:
    api = allow_callers(*EDGE_CALLERS)(user_blueprint("user_edges", __name__, "/v1/users/<username>"))

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


def projection_blueprint(service: SocialGraphService) -> Blueprint:
    """The whole graph, oldest edge first, for the projection readers only."""
    internal = allow_callers(*PROJECTION_READERS)(Blueprint("projection", __name__, url_prefix="/internal/v1"))

    @internal.get("/follows")
    def all_follows() -> Response:
        edges, next_token = service.all_follows(
            start_token=request.args.get("start_token") or None,
            limit=validate_limit(request.args.get("limit"), default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE),
        )
        return jsonify({"follows": [follow_json(edge) for edge in edges], "next_token": next_token})

    return internal
