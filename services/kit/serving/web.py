"""The HTTP side every service shares: request ids, access logs, RED metrics, caller identity,
the JSON error shape, health endpoints and /metrics. A service adds only its own blueprints."""
from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask import Request as FlaskRequest
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import cached_property

from ..core.clock import format_timestamp
from ..core.errors import InvalidInput, ServiceError, Unavailable
from ..core.validation import check_json_depth, check_json_text, check_text, validate_username
from ..observability import metrics
from ..observability.context import (
    REQUEST_ID_HEADER,
    TIMEOUT_HEADER,
    enter_deadline,
    enter_request,
    leave_deadline,
    leave_request,
)
from ..observability.logs import bind_contextvars, clear_contextvars, get_logger
from ..observability.tracing import instrument_flask_app
from .callers import CALLER_TOKEN_HEADER, CallerPermissions
from .runtime import ServiceRuntime

log = get_logger("delinkcious.access")
error_log = get_logger(__name__)

OPS_PREFIXES = ("/healthz/", "/metrics")

# Werkzeug's own HTTP errors, as our machine codes.
_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def create_app(runtime: ServiceRuntime, blueprints: list[Blueprint], *, ops: bool = True,
               setup: list[Callable[[Flask], None]] = ()) -> Flask:
    """The service's app: its blueprints plus, unless `ops` is False, /healthz/* and /metrics."""
    app = Flask(runtime.name)
    app.request_class = BoundedRequest
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_request_bytes
    app.json = CheckedJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["delinkcious.runtime"] = runtime
    # First: its span begins before every other hook (the request id, caller identity, the gateway's rate limit),
    # so their work and their log lines belong to the request's trace.
    instrument_flask_app(app, public=runtime.definition.public)

    # The hooks run on every request: they are given the runtime rather than look it up through current_app.
    app.before_request(functools.partial(_begin_request, runtime))
    app.after_request(functools.partial(_finish_request, runtime.name))
    app.teardown_request(_end_request)
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    if ops:
        app.register_blueprint(ops_blueprint(runtime))
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    for configure in setup:
        configure(app)
    if not runtime.definition.public:  # every endpoint of an internal service says who may call it (kit/callers.py)
        app.extensions["delinkcious.caller_permissions"] = CallerPermissions.of_app(app, exempt=is_ops_path)
    return app


def create_wsgi(runtime: ServiceRuntime, blueprints: list[Blueprint],
                setup: list[Callable[[Flask], None]] = ()) -> Any:
    """What gunicorn serves: one app, or, with ADMIN_PORT, the public app on PORT and the ops app on
    ADMIN_PORT, chosen by the listener a request came in on."""
    admin_port = runtime.settings.admin_port
    if admin_port is None:
        return create_app(runtime, blueprints, setup=setup)
    public, admin = create_app(runtime, blueprints, ops=False, setup=setup), create_app(runtime, [])

    def by_listener(environ: dict[str, Any], start_response: Any) -> Any:
        app = admin if environ.get("SERVER_PORT") == str(admin_port) else public
        return app(environ, start_response)

    return by_listener


class BoundedRequest(FlaskRequest):
    """A request whose body is at most MAX_REQUEST_BYTES however it is sent. Werkzeug checks a declared
    Content-Length up front, but a body of unknown length (chunked) it cuts at the limit without a word: the
    handler would see the first MAX_REQUEST_BYTES of it as if it were the whole body. Here such a body is read up
    to one byte past the limit: more than the limit is a 413, anything else is the whole body."""

    @cached_property
    def stream(self) -> Any:  # type: ignore[override]
        limit = self.max_content_length
        if self.content_length is not None or limit is None or not self.environ.get("wsgi.input_terminated"):
            return super().stream  # a declared length (checked by Werkzeug), or no body the server would give us
        body = self.environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise RequestEntityTooLarge()
        return io.BytesIO(body)


class CheckedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with the kit's rules for what a client sends (every `request.get_json()` of every service
    goes through it): nesting at most MAX_JSON_DEPTH levels, checked before parsing, and no string (key or value)
    with a NUL character or an unpaired UTF-16 surrogate, which no store keeps. Each is a 400 naming the field
    (InvalidInput is not a ValueError, so `get_json(silent=True)` does not hide it)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        # As json.loads decodes bytes: UTF-8/16/32 by detection, a surrogate kept for the check below.
        text = s.decode(json.detect_encoding(s), "surrogatepass") if isinstance(s, (bytes, bytearray)) else s
        check_json_depth(text)
        value = json.loads(text, **kwargs)
        check_json_text(value)
        return value


def runtime_of(app: Flask) -> ServiceRuntime:
    return app.extensions["delinkcious.runtime"]


def ops_blueprint(runtime: ServiceRuntime) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get("/healthz/ping")
    def ping() -> Response:
        """Always 200: the process answers HTTP."""
        return jsonify({"status": "ok", "service": runtime.name})

    @ops.get("/healthz/liveness")
    def liveness() -> tuple[Response, int]:
        """200 while the process can serve; 503 asks the orchestrator for a restart."""
        status, body = runtime.health.liveness()
        return jsonify(body), status

    @ops.get("/healthz/readiness")
    def readiness() -> tuple[Response, int]:
        """200 once started and while its own critical dependencies answer; else 503."""
        status, body = runtime.health.readiness()
        return jsonify(body), status

    @ops.get("/metrics")
    def metrics_endpoint() -> Response:
        payload, content_type = metrics.render_latest()
        return Response(payload, content_type=content_type)

    return ops


def is_ops_path(path: str) -> bool:
    return path.startswith(OPS_PREFIXES)


def _begin_request(runtime: ServiceRuntime) -> None:
    g.started = time.perf_counter()
    g.request_id, g.request_context = enter_request(request.headers.get(REQUEST_ID_HEADER))
    g.deadline_context = enter_deadline(request.headers.get(TIMEOUT_HEADER))
    if not is_ops_path(request.path):
        caller = runtime.callers.identify(request.headers.get(CALLER_TOKEN_HEADER))
        if caller:
            bind_contextvars(caller=caller)
            if request.url_rule is not None:  # else the 404/405 follows
                permissions = current_app.extensions["delinkcious.caller_permissions"]
                runtime.callers.authorize(caller, permissions.of(request.endpoint), request.method,
                                          request.url_rule.rule)
        _check_parameters()


def _check_parameters() -> None:
    """Query, path and form parameters hold text a store can keep (kit.core.validation.check_text): a NUL byte
    (`%00`) in a regex filter or a name is the client's 400 here, in every service, before any handler or database
    sees it. (Werkzeug decodes a query's invalid UTF-8 as U+FFFD, so a surrogate cannot come this way; JSON bodies
    are checked as they are parsed, CheckedJSONProvider.)"""
    sources = [request.args, request.view_args or {}]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sources.append(request.form)
    for source in sources:
        items = source.items(multi=True) if hasattr(source, "getlist") else source.items()
        for name, value in items:
            check_text(name, "parameter names")
            if isinstance(value, str):
                check_text(value, name)


def _end_request(_error: BaseException | None) -> None:
    # Worker threads are reused: nothing of this request may leak into the next one.
    if "request_context" in g:
        leave_request(g.request_context)
    if "deadline_context" in g:
        leave_deadline(g.deadline_context)
    clear_contextvars()


def runtime_of_current_app() -> ServiceRuntime:
    from flask import current_app

    return runtime_of(current_app)


def _finish_request(service: str, response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    duration = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    status = str(response.status_code)
    metrics.HTTP_REQUESTS.labels(service, request.method, route, status).inc()
    metrics.HTTP_DURATION.labels(service, request.method, route).observe(duration)
    if response.status_code >= 500:
        metrics.HTTP_ERRORS.labels(service, request.method, route, status).inc()
    # Probes arrive every few seconds; they are logged only when debugging or failing.
    level = "debug" if is_ops_path(request.path) and response.status_code < 500 else "info"
    getattr(log, level)(
        "request",
        method=request.method,
        route=route,
        path=request.path,
        status=response.status_code,
        duration_ms=round(duration * 1000, 2),
    )
    return response


def _error_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _service_error(error: ServiceError) -> Response:
    headers = {}
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after)
        error_log.warning("dependency_unavailable", error=error.message, cause=repr(error.__cause__))
    return _error_response(error.to_body(), error.status, headers)


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    message = error.description or error.name
    if status == 413:
        message = f"request body larger than {runtime_of_current_app().settings.max_request_bytes} bytes"
    response = _error_response({"message": message, "code": _HTTP_CODES.get(status, "error")}, status)
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def _unexpected_error(error: Exception) -> Response:
    error_log.exception("unhandled_exception", error_type=type(error).__name__)
    return _error_response(
        {"message": "internal error; quote the request id when reporting it", "code": "internal",
         "request_id": g.get("request_id")},
        500,
    )


# --- input helpers for handlers -------------------------------------------------------------
def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not request.data:
        raise InvalidInput("body", "a JSON object is required")
    if not request.is_json:
        raise InvalidInput("body", "Content-Type must be application/json")
    payload = request.get_json(silent=True)
    if payload is None:
        raise InvalidInput("body", "is not valid JSON")
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    return payload


def user_blueprint(name: str, import_name: str, url_prefix: str) -> Blueprint:
    """A blueprint of one user's resources: the `<username>` in `url_prefix` is checked by the username
    rule (400 naming it) and put on every log line of the request."""
    blueprint = Blueprint(name, import_name, url_prefix=url_prefix)

    @blueprint.before_request
    def _bind_user() -> None:
        # Runs after the kit's request set-up (request id, caller identity).
        username = (request.view_args or {})["username"]
        validate_username(username)
        bind_contextvars(user=username)

    return blueprint


# --- output helpers for handlers ------------------------------------------------------------
def json_fields(value: Any, fields: Iterable[str]) -> dict[str, Any]:
    """The named attributes of `value` as a JSON object: timestamps in RFC 3339, tuples as lists."""
    rendered: dict[str, Any] = {}
    for name in fields:
        item = getattr(value, name)
        rendered[name] = (format_timestamp(item) if isinstance(item, datetime)
                          else list(item) if isinstance(item, tuple) else item)
    return rendered
