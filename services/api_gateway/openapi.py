"""The public API's OpenAPI 3 document (served at /v1/openapi.json) and a self-contained docs page
(/docs: no scripts or assets from elsewhere). tests check the implementation against this document."""
from __future__ import annotations

import html
from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _query(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False,
           explode_array: bool = False) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": required, "description": description,
                 "schema": schema or {"type": "string"}}
    if explode_array:
        parameter.update(style="form", explode=True)
    return parameter


_AUTH_ERRORS = {"401": _error("No, invalid, expired or revoked token"),
                "429": _error("Rate limited; see Retry-After"),
                "503": _error("A dependency is unavailable; see Retry-After")}
_PAGE = [_query("start_token", "next_token of the previous page"),
         _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10})]
_TAGS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}, "maxItems": 50}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["message", "code"],
              "properties": {"message": {"type": "string"}, "code": {"type": "string"},
                             "field": {"type": "string"}}},
    "Link": {"type": "object", "required": ["url", "title", "description", "tags", "status", "created_at",
                                            "updated_at"],
             "properties": {"url": {"type": "string"}, "title": {"type": "string"},
                            "description": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                            "status": {"type": "string", "enum": ["pending", "valid", "invalid"]},
                            "created_at": {"type": "string", "format": "date-time"},
                            "updated_at": {"type": "string", "format": "date-time"},
                            "checked_at": {"type": ["string", "null"], "format": "date-time"},
                            "http_status": {"type": ["integer", "null"]},
                            "status_reason": {"type": ["string", "null"]}}},
    "LinkPage": {"type": "object", "required": ["links", "next_token"],
                 "properties": {"links": {"type": "array", "items": _ref("Link")},
                                "next_token": {"type": ["string", "null"]}}},
    "NewLink": {"type": "object", "required": ["url", "title"], "additionalProperties": False,
                "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2048},
                               "title": {"type": "string", "minLength": 1, "maxLength": 500},
                               "description": {"type": "string", "maxLength": 5000}, "tags": _TAGS}},
    "LinkUpdate": {"type": "object", "required": ["url"], "additionalProperties": False,
                   "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2048},
                                  "title": {"type": "string", "minLength": 1, "maxLength": 500},
                                  "description": {"type": "string", "maxLength": 5000},
                                  "add_tags": _TAGS, "remove_tags": _TAGS}},
    "User": {"type": "object", "required": ["username"],
             "properties": {"username": {"type": "string"}, "email": {"type": ["string", "null"]},
                            "name": {"type": ["string", "null"]}}},
    "Login": {"type": "object", "required": ["username", "email", "name", "access_token"],
              "properties": {"username": {"type": "string"}, "email": {"type": ["string", "null"]},
                             "name": {"type": ["string", "null"]}, "access_token": {"type": "string"}}},
    "Following": {"type": "object", "required": ["following"],
                  "properties": {"following": {"type": "array", "items": {"type": "string"}},
                                 "next_token": {"type": ["string", "null"]}}},
    "Followers": {"type": "object", "required": ["followers"],
                  "properties": {"followers": {"type": "array", "items": {"type": "string"}},
                                 "next_token": {"type": ["string", "null"]}}},
    "NewsEvent": {"type": "object", "required": ["event_type", "username", "url", "timestamp"],
                  "properties": {"event_type": {"type": "string",
                                                "enum": ["link_added", "link_updated", "link_deleted"]},
                                 "username": {"type": "string"}, "url": {"type": "string"},
                                 "title": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"}}},
    "NewsPage": {"type": "object", "required": ["events", "next_token"],
                 "properties": {"events": {"type": "array", "items": _ref("NewsEvent")},
                                "next_token": {"type": ["string", "null"]}}},
}

_FOLLOWED = {"type": "object", "required": ["followed"], "properties": {"followed": {"type": "string"}}}


def document(server_url: str) -> dict[str, Any]:
    secured = [{"bearer": []}, {"accessToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Delinkcious public API", "version": "1.0.0",
                 "description": "Save links, follow people, read their news. Errors are "
                                "{\"message\", \"code\"} with the status codes listed per operation."},
        "servers": [{"url": server_url}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "accessToken": {"type": "apiKey", "in": "header", "name": "Access-Token"}},
        },
        "paths": {
            "/login": {"get": {"summary": "Log in: redirects to the identity provider", "security": [],
                               "responses": {"302": {"description": "To the provider's authorization page"}}}},
            "/login/authorized": {"get": {
                "summary": "OAuth callback: creates or updates the user, answers a Delinkcious token",
                "security": [], "parameters": [_query("code", "from the provider"), _query("state", "from the provider")],
                "responses": {"200": _json(_ref("Login"), "Logged in"), "400": _error("Bad callback"),
                              "401": _error("Login failed"), "503": _AUTH_ERRORS["503"]}}},
            "/logout": {"post": {"summary": "Revoke the presented token", "security": secured,
                                 "responses": {"200": {"description": "Logged out"}, **_AUTH_ERRORS}}},
            "/v1/me": {"get": {"summary": "The caller's profile", "security": secured,
                               "responses": {"200": _json(_ref("User"), "Profile"), **_AUTH_ERRORS}}},
            "/v1/links": {
                "get": {"summary": "The caller's links, newest first", "security": secured,
                        "parameters": [_query("url_regex", "POSIX regular expression on url"),
                                       _query("title_regex", "POSIX regular expression on title"),
                                       _query("description_regex", "POSIX regular expression on description"),
                                       _query("tag", "only links with this tag (repeatable)",
                                              {"type": "array", "items": {"type": "string"}}, explode_array=True),
                                       *_PAGE],
                        "responses": {"200": _json(_ref("LinkPage"), "A page of links"),
                                      "400": _error("Invalid filter, limit or token"), **_AUTH_ERRORS}},
                "post": {"summary": "Save a link (JSON, form or query parameters)", "security": secured,
                         "requestBody": {"required": False, "content": {
                             "application/json": {"schema": _ref("NewLink")},
                             "application/x-www-form-urlencoded": {"schema": _ref("NewLink")}}},
                         "parameters": [_query("url", "when sent as query parameters"),
                                        _query("title", "when sent as query parameters"),
                                        _query("description", "when sent as query parameters"),
                                        _query("tags", "comma-separated, when sent as query parameters")],
                         "responses": {"201": _json(_ref("Link"), "Saved"), "400": _error("Invalid link"),
                                       "409": _error("Already saved (carries `link`) or quota exceeded"),
                                       "413": _error("Body over 64 KiB"), **_AUTH_ERRORS}},
                "put": {"summary": "Change a saved link", "security": secured,
                        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LinkUpdate")}}},
                        "responses": {"200": _json(_ref("Link"), "Changed"), "400": _error("Invalid change"),
                                      "404": _error("No such link"), "413": _error("Body over 64 KiB"),
                                      **_AUTH_ERRORS}},
                "delete": {"summary": "Remove a saved link", "security": secured,
                           "parameters": [_query("url", "the link's URL", required=True)],
                           "responses": {"200": _json(_ref("Link"), "Removed"), "400": _error("Invalid url"),
                                         "404": _error("No such link"), **_AUTH_ERRORS}},
            },
            "/v1/following": {
                "get": {"summary": "Who the caller follows", "security": secured, "parameters": _PAGE,
                        "responses": {"200": _json(_ref("Following"), "Usernames"), "400": _error("Bad page"),
                                      **_AUTH_ERRORS}},
                "post": {"summary": "Follow someone (following twice is fine)", "security": secured,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": _FOLLOWED}}},
                         "responses": {"200": {"description": "Already followed"}, "201": {"description": "Followed"},
                                       "400": _error("Invalid name, or yourself"), "404": _error("No such user"),
                                       **_AUTH_ERRORS}},
                "delete": {"summary": "Stop following someone", "security": secured,
                           "parameters": [_query("followed", "username", required=True)],
                           "responses": {"200": {"description": "Not followed (any more)"},
                                         "400": _error("Invalid name"), **_AUTH_ERRORS}},
            },
            "/v1/followers": {"get": {"summary": "Who follows the caller", "security": secured, "parameters": _PAGE,
                                      "responses": {"200": _json(_ref("Followers"), "Usernames"),
                                                    "400": _error("Bad page"), **_AUTH_ERRORS}}},
            "/v1/news": {"get": {"summary": "What the people the caller follows did, newest first",
                                 "security": secured, "parameters": _PAGE,
                                 "responses": {"200": _json(_ref("NewsPage"), "A page of events"),
                                               "400": _error("Bad page"), **_AUTH_ERRORS}}},
        },
    }


def docs_page(spec: dict[str, Any]) -> str:
    """A plain HTML rendering of the document: every operation, its parameters and answers."""
    rows = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            parameters = ", ".join(parameter["name"] for parameter in operation.get("parameters", []))
            answers = ", ".join(operation["responses"])
            rows.append(f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
                        f"<td>{html.escape(operation['summary'])}</td><td>{html.escape(parameters)}</td>"
                        f"<td>{answers}</td></tr>")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Delinkcious API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;"
        "text-align:left}</style></head><body><h1>Delinkcious public API v1</h1>"
        "<p>Machine-readable: <a href=/v1/openapi.json>/v1/openapi.json</a>. Authenticate with "
        "<code>Authorization: Bearer &lt;token&gt;</code> (or <code>Access-Token</code>); get a token at "
        "<a href=/login>/login</a>. Errors are <code>{\"message\", \"code\"}</code>.</p>"
        "<table><tr><th>operation</th><th>what</th><th>parameters</th><th>answers</th></tr>"
        + "".join(rows) + "</table></body></html>"
    )
