"""The logging standard: one JSON object per line on stdout, keys from docs/logging.md.

Context (user, ...) is bound with structlog's contextvars, and the request id comes from the request
context, so every line written while handling a request or an event carries them. LOG_FORMAT=console
gives a human-readable local mode.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
import structlog.tracebacks
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

from ..core.request_id import current_request_id
from .tracing import current_ids

__all__ = ["configure_logging", "get_logger", "bind_contextvars", "bound_contextvars", "clear_contextvars"]


def _shared_processors(service: str) -> list[Any]:
    def add_service(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    def add_request_id(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        request_id = current_request_id()  # kept by the request context, not bound per logger
        if request_id is not None:
            event_dict.setdefault("request_id", request_id)
        return event_dict

    def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        ids = current_ids()  # None at once when tracing is off
        if ids is not None:
            event_dict.setdefault("trace_id", ids[0])
            event_dict.setdefault("span_id", ids[1])
        return event_dict

    return [
        add_request_id,
        add_trace_ids,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_service,
    ]


def configure_logging(service: str, log_format: str = "json", level: str = "info") -> None:
    """Render structlog's lines and the stdlib loggers' (gunicorn, nats, psycopg2...) alike, one JSON object per line."""
    shared = _shared_processors(service)
    if log_format == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        exception_processors: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        # Frames' local variables could hold request data or secrets: never log them.
        exception_processors = [structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]

    # Our own lines are rendered and written by structlog directly: going through the stdlib's logging
    # machinery (records, handler lock, formatter) cost about five times as much per line, and services
    # write one per request and per event.
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *exception_processors,
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=True,
    )
    # Third-party libraries' stdlib loggers (gunicorn, nats, psycopg2...) get the same processors and renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exception_processors,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty third-party loggers stay at warning unless we debug.
    for noisy in ("nats", "urllib3", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A logger of our own; `name` is kept for the reader (lines carry the service, not the module)."""
    return structlog.get_logger(name)
