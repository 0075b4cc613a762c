"""Smoke: the gateway answers, sends people to the identity provider, protects the API, documents
it, and keeps operator endpoints off the public port."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from delinkcious_client import GatewaySession, Settings, assert_error, assert_ok


def test_login_redirects_to_the_identity_provider(api: GatewaySession, settings: Settings) -> None:
    response = api.get("/login", allow_redirects=False)
    assert response.status_code in (302, 303), response.text[:500]
    location = urlsplit(response.headers["Location"])
    assert location.scheme in ("http", "https") and location.netloc != urlsplit(api.base_url).netloc, location
    query = parse_qs(location.query)
    assert query["response_type"] == ["code"], query
    assert query["client_id"][0] and query["state"][0], query
    # The provider sends the browser back to the gateway's public address, whichever address we used.
    assert query["redirect_uri"] == [f"{settings.public_base_url}/login/authorized"], query


def test_the_api_needs_a_token(api: GatewaySession) -> None:
    assert_error(api.get("/v1/me"), 401)


def test_operator_endpoints_are_not_on_the_public_port(api: GatewaySession) -> None:
    for path in ("/healthz/readiness", "/healthz/liveness", "/healthz/ping", "/metrics"):
        assert_error(api.get(path), 404)


def test_the_api_is_documented(api: GatewaySession) -> None:
    docs = api.get("/docs", headers={"Accept": "text/html"})
    assert docs.status_code == 200, docs.text[:500]
    assert docs.headers["Content-Type"].startswith("text/html"), docs.headers
    spec = assert_ok(api.get("/v1/openapi.json"))
    assert str(spec["openapi"]).startswith("3."), spec.get("openapi")
    for path in ("/v1/me", "/v1/links", "/v1/following", "/v1/followers", "/v1/news"):
        assert path in spec["paths"], sorted(spec["paths"])
