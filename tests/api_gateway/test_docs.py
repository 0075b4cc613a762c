"""The public API's document is generated from the models in contracts/public_api.py, and /docs is Swagger UI
served entirely by the gateway (no CDN, nothing from another origin)."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from delinkcious.api_gateway.app import DEFINITION
from delinkcious.contracts import public_api
from delinkcious.contracts.public_api import REF_TEMPLATE, document

from tests.support.assertions import assert_error

ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


@pytest.fixture(scope="module")
def client(service_environment):
    nowhere = "http://127.0.0.1:9"  # never called: these requests need no internal service
    settings = {"link_service_url": nowhere, "user_service_url": nowhere, "social_graph_service_url": nowhere,
                "news_grpc_address": "127.0.0.1:1", "caller_token": "gateway-caller-token",
                "session_secret": "s" * 32, "oauth_client_id": "client", "oauth_client_secret": "secret"}
    with service_environment.running(DEFINITION, **settings) as (_, app):
        yield app.test_client()


class _PageReferences(HTMLParser):
    """Every URL the page names, and the bodies of its script elements."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []  # what the browser loads with the page
        self.links: list[str] = []  # what a reader may follow
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        elif values.get("src") or (tag == "link" and values.get("href")):
            self.assets.append(values.get("src") or values["href"])
        self._in_script = tag == "script"
        if self._in_script:
            self.script_bodies.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies[-1] += data


def _references(page: str) -> _PageReferences:
    parser = _PageReferences()
    parser.feed(page)
    return parser


def test_every_schema_of_the_document_is_a_model_s_json_schema():
    spec = document("http://x")
    schemas = spec["components"]["schemas"]
    assert {"Link", "LinkPage", "NewLink", "LinkUpdate", "User", "Login", "Following", "Followers", "NewsEvent",
            "NewsPage", "Error"} <= set(schemas)
    for name, schema in schemas.items():
        expected = getattr(public_api, name).model_json_schema(ref_template=REF_TEMPLATE)
        expected.pop("$defs", None)  # the document keeps nested models as components of their own
        assert schema == expected, name

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            query_fields = {name: {key: value for key, value in field.items() if key != "description"}
                            for model in public_api.PATHS[path][method].query
                            for name, field in model.model_json_schema()["properties"].items()}
            parameters = {parameter["name"]: parameter["schema"] for parameter in operation.get("parameters", [])}
            assert parameters == query_fields, (method, path)
            bodies = [*operation.get("requestBody", {}).get("content", {}).values(),
                      *(content for response in operation["responses"].values()
                        for content in response.get("content", {}).values())]
            for body in bodies:
                assert body["schema"]["$ref"].removeprefix("#/components/schemas/") in schemas, (method, path)


def test_optional_request_fields_may_be_left_out_but_are_never_null():
    schemas = document("http://x")["components"]["schemas"]
    for name in ("NewLink", "LinkUpdate"):
        assert schemas[name]["additionalProperties"] is False, name
        for field_name, field_schema in schemas[name]["properties"].items():
            assert "anyOf" not in field_schema and field_schema["type"] != "null", (name, field_name)
    assert set(schemas["NewLink"]["required"]) == {"url", "title"} and schemas["LinkUpdate"]["required"] == ["url"]
    left_out = public_api.LinkUpdate.model_validate({"url": "https://e.com", "title": "T"})
    assert left_out.model_dump() == {"url": "https://e.com", "title": "T"}


def test_docs_is_swagger_ui_from_this_origin_only(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    references = _references(page)

    assert references.script_bodies and all(body.strip() == "" for body in references.script_bodies), \
        "no inline script: the initialiser is a file of its own"
    for url in references.assets + references.links:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
    assert all(asset.startswith("/docs/") for asset in references.assets), references.assets
    elsewhere = [url for url in re.findall(r"https?://[^\s\"'<>]+", page) if urlsplit(url).netloc != "localhost"]
    assert elsewhere == []

    for asset in references.assets:
        answer = client.get(asset)
        extension = asset[asset.rindex("."):]
        assert answer.status_code == 200, asset
        assert answer.mimetype == ASSET_TYPES[extension], (asset, answer.mimetype)
        assert answer.headers["X-Request-Id"] and answer.data, asset  # served through the usual request handling
    initialiser = next(client.get(asset).get_data(as_text=True) for asset in references.assets
                       if asset.endswith("initialiser.js"))
    assert "SwaggerUIBundle(" in initialiser and '"/v1/openapi.json"' in initialiser
    assert "SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)


def test_only_the_viewer_s_own_files_are_served_under_docs(client):
    for path in ("/docs/", "/docs/LICENSE", "/docs/index.css", "/docs/../flask_swagger_ui.py", "/docs/nowhere.js"):
        assert_error(client.get(path), 404, "not_found")
    assert client.post("/docs/swagger-ui.css").status_code in (404, 405)
