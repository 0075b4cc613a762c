"""Errors are always the JSON shape {"message", "code"} with the right status, never a 500."""

from __future__ import annotations

from delinkcious_client import GatewaySession, User, assert_error


def test_invalid_json_is_a_400(api: GatewaySession, alice: User) -> None:
    headers = {**alice.bearer, "Content-Type": "application/json"}
    for path, method in (("/v1/links", "POST"), ("/v1/links", "PUT"), ("/v1/following", "POST")):
        assert_error(api.request(method, path, data=b'{"url": "https://x.invalid/", "title":', headers=headers), 400)
        assert_error(api.request(method, path, data=b'["a", "list"]', headers=headers), 400)


def test_a_body_over_64_kib_is_a_413(api: GatewaySession, alice: User) -> None:
    big = {"url": "https://it.invalid/big", "title": "big", "description": "x" * (65 * 1024)}
    assert_error(api.post("/v1/links", json=big, headers=alice.bearer), 413)


def test_a_missing_or_bad_token_is_a_401(api: GatewaySession) -> None:
    for method, path in (("GET", "/v1/me"), ("GET", "/v1/links"), ("POST", "/v1/links"), ("PUT", "/v1/links"),
                         ("DELETE", "/v1/links"), ("GET", "/v1/following"), ("POST", "/v1/following"),
                         ("DELETE", "/v1/following"), ("GET", "/v1/followers"), ("GET", "/v1/news")):  # fmt: skip
        assert_error(api.request(method, path, json={}), 401)
        assert_error(api.request(method, path, json={}, headers={"Authorization": "Bearer nope"}), 401)


def test_an_unknown_route_is_a_404(api: GatewaySession, alice: User) -> None:
    for path in ("/v1/nothing-here", "/v2/links", "/nothing-here"):
        assert_error(api.get(path, headers=alice.bearer), 404)
        assert_error(api.get(path), 404)


def test_a_method_the_route_does_not_have_is_refused_as_json(api: GatewaySession, alice: User) -> None:
    response = api.patch("/v1/links", json={}, headers=alice.bearer)
    assert_error(response, 405)
    assert_error(api.delete("/v1/me", headers=alice.bearer), 405)
