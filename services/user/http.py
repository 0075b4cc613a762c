"""Internal REST API of the user service (called by the API gateway and the social-graph service).
See README.md for the contract; each route names the callers that may call it (README, "Callers")."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..kit.core.errors import InvalidInput
from ..kit.core.validation import reject_unknown_fields, validate_username
from ..kit.observability.logs import bind_contextvars
from ..kit.serving.callers import allow_callers
from ..kit.serving.web import json_fields, json_object
from .domain import AccessToken, LoginIdentity, User, validate_token_secret
from .service import UserService

# The API gateway logs people in and mints, checks and revokes their access tokens: only it may. social-graph only
# asks whether a user exists (services/social_graph/user_directory.py: HEAD /v1/users/{username}).
GATEWAY = "api-gateway"
SOCIAL_GRAPH = "social-graph"


def user_json(user: User) -> dict[str, Any]:
    return json_fields(user, ("username", "email", "name", "created_at", "updated_at"))


def token_json(token: AccessToken) -> dict[str, Any]:
    return json_fields(token, ("token_id", "username", "created_at", "expires_at"))


def _token_from_body() -> str:
    payload = json_object()
    reject_unknown_fields(payload, {"token"})
    return validate_token_secret(payload.get("token"))


def users_blueprint(service: UserService) -> Blueprint:
    api = Blueprint("users", __name__, url_prefix="/v1")

    @api.post("/logins")
    @allow_callers(GATEWAY)
    def login() -> tuple[Response, int]:
        user, created = service.login(LoginIdentity.parse(json_object()))
        bind_contextvars(user=user.username)
        return jsonify({"user": user_json(user), "created": created}), 201 if created else 200

    @api.get("/users/<username>")  # HEAD is served too: the cheap existence check
    @allow_callers(GATEWAY)  # the profile, for GET /v1/me
    @allow_callers(SOCIAL_GRAPH, methods=["HEAD"])  # existence only: no email, no name
    def get_user(username: str) -> Response:
        validate_username(username)
        return jsonify(user_json(service.get(username)))

    @api.post("/users/<username>/tokens")
    @allow_callers(GATEWAY)
    def issue_token(username: str) -> tuple[Response, int]:
        validate_username(username)
        bind_contextvars(user=username)
        payload = json_object() if request.data else {}
        reject_unknown_fields(payload, {"ttl_seconds"})
        ttl = payload.get("ttl_seconds")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
            raise InvalidInput("ttl_seconds", "must be an integer")
        issued = service.issue_token(username, ttl)
        return jsonify({"token": issued.secret, **token_json(issued.token)}), 201

    @api.get("/users/<username>/tokens")
    @allow_callers(GATEWAY)
    def list_tokens(username: str) -> Response:
        validate_username(username)
        return jsonify({"tokens": [token_json(token) for token in service.list_tokens(username)]})

    @api.delete("/users/<username>/tokens/<token_id>")
    @allow_callers(GATEWAY)
    def revoke_token_by_id(username: str, token_id: str) -> tuple[str, int]:
        validate_username(username)
        service.revoke_token_by_id(username, token_id)
        return "", 204

    @api.post("/tokens/verify")
    @allow_callers(GATEWAY)
    def verify_token() -> Response:
        user, token = service.verify_token(_token_from_body())
        bind_contextvars(user=user.username)
        return jsonify({"user": user_json(user), "token": token_json(token)})

    @api.post("/tokens/revoke")
    @allow_callers(GATEWAY)
    def revoke_token() -> tuple[str, int]:
        service.revoke_token(_token_from_body())
        return "", 204

    return api

