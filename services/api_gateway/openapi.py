"""The public API's document and its viewer, on the public port: /v1/openapi.json, generated from the models
in contracts/public_api.py, and /docs, Swagger UI from the files the flask-swagger-ui package ships. The
gateway serves every file of the page itself: it works offline and loads nothing from another origin."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, jsonify, request, send_from_directory

from ..contracts.public_api import document

DOCUMENT_PATH = "/v1/openapi.json"
DOCS_PATH = "/docs"
ASSETS_PREFIX = f"{DOCS_PATH}/"

_SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).with_name("dist")
# Only the files the page uses, with explicit types: the host's MIME table must not decide them.
_SWAGGER_UI_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
                     "favicon-32x32.png": "image/png"}
_INITIALISER = "initialiser.js"
_INITIALISER_JS = f"""// Starts Swagger UI on the gateway's own document (kept out of the page: no inline script).
window.ui = SwaggerUIBundle({{
  url: "{DOCUMENT_PATH}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,  // the default badge would send the document's address to an online validator
}});
"""
# The browser enforces what the page promises: scripts, styles and images from this origin only.
_PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def register_api_docs(blueprint: Blueprint, public_base_url: str) -> None:
    """Adds /v1/openapi.json, /docs and the viewer's files under /docs/ to the gateway's public blueprint."""
    spec = document(public_base_url)
    page = docs_page(spec)
    blueprint.add_url_rule(DOCUMENT_PATH, "openapi", lambda: jsonify(spec))
    blueprint.add_url_rule(DOCS_PATH, "docs", lambda: Response(page, content_type="text/html; charset=utf-8",
                                                               headers=_PAGE_SECURITY_HEADERS))
    # The viewer's files are answered before routing instead of by a URL rule, so the route table stays the
    # documented API plus the document and its page; the request id, access log and metrics still apply.
    blueprint.before_app_request(_serve_docs_asset)


def docs_page(spec: dict[str, Any]) -> str:
    """Swagger UI's page, with the operations listed for clients that run no JavaScript."""
    operations = "".join(
        f"<li><code>{method.upper()} {html.escape(path)}</code> {html.escape(operation['summary'])}</li>"
        for path, path_operations in spec["paths"].items() for method, operation in path_operations.items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(spec['info']['title'])}</title>"
        f"<link rel=stylesheet href={ASSETS_PREFIX}swagger-ui.css>"
        f"<link rel=icon type=image/png href={ASSETS_PREFIX}favicon-32x32.png>"
        f"<script src={ASSETS_PREFIX}swagger-ui-bundle.js defer></script>"
        f"<script src={ASSETS_PREFIX}{_INITIALISER} defer></script>"
        "</head><body><div id=swagger-ui></div><noscript>"
        f"<h1>{html.escape(spec['info']['title'])}</h1>"
        f"<p>The document: <a href={DOCUMENT_PATH}>{DOCUMENT_PATH}</a>. Authenticate with "
        "<code>Authorization: Bearer &lt;token&gt;</code> (or <code>Access-Token</code>); get a token at "
        "<a href=/login>/login</a>.</p>"
        f"<ul>{operations}</ul></noscript></body></html>"
    )


def _serve_docs_asset() -> Response | None:
    """One of the viewer's files, or None to let the request be routed as usual (to a 404 if nothing matches)."""
    if request.method not in ("GET", "HEAD") or not request.path.startswith(ASSETS_PREFIX):
        return None
    name = request.path.removeprefix(ASSETS_PREFIX)
    if name == _INITIALISER:
        response = Response(_INITIALISER_JS, content_type="text/javascript; charset=utf-8")
    elif name in _SWAGGER_UI_FILES:
        response = send_from_directory(_SWAGGER_UI_DIST, name, mimetype=_SWAGGER_UI_FILES[name])
    else:
        return None
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
