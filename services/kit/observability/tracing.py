"""Distributed tracing with OpenTelemetry, configured once per process.

Off unless the standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then every
process exports its spans by OTLP (http/protobuf, OTEL_EXPORTER_OTLP_PROTOCOL) under OTEL_SERVICE_NAME (default:
the service's name), and the libraries' own instrumentations trace incoming and outgoing HTTP (Flask, urllib3,
requests) and gRPC, PostgreSQL (psycopg2) and Redis. NATS has no instrumentation of OpenTelemetry's own: its
publish and consume spans are made here (`producer_spans`, `consumer_span`), and the W3C trace context travels in
the message headers, written on the outbox row with the event (kit.observability.context.event_headers), so a
relayed event continues the trace of the request that wrote it.

Off means off: nothing is imported from the SDK, no library is patched, and what the request path asks of this
module (`enabled`, `inject`, `current_ids`) returns at once.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = ["configure_tracing", "enabled", "instrument_flask_app", "inject", "extract", "current_ids",
           "producer_spans", "consumer_span", "mark_failed", "client_span", "flush_tracing", "TRACE_HEADERS"]

# The W3C Trace Context headers the propagator writes (and nothing else: no baggage crosses a hop).
TRACE_HEADERS = ("traceparent", "tracestate")
# Probes and scrapes arrive every few seconds; a trace each would drown the real ones.
_UNTRACED_URLS = "/healthz/,/metrics"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider once configured
_tracer: Any = None


def enabled() -> bool:
    return _provider is not None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def configure_tracing(service: str, *, exporter: SpanExporter | None = None,
                      environ: Mapping[str, str] = os.environ) -> bool:
    """Set up tracing for this process if the environment asks for it (or `exporter` is given, as tests do);
    returns whether tracing is on. Call once, early (before Flask apps, gRPC servers and channels exist; gunicorn's
    master calls it before forking, and the SDK restarts its export thread in each worker)."""
    global _provider, _tracer
    if _provider is not None:
        return True
    if exporter is None and not wanted(environ):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service,
                                "service.namespace": "delinkcious"})
    provider = TracerProvider(resource=resource, sampler=_sampler(environ))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Batched, in a thread of its own: a request never waits for the collector.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, trace.get_tracer("delinkcious.kit")
    _instrument_libraries()
    return True


def _sampler(environ: Mapping[str, str]) -> Any:
    """A caller's decision is kept (W3C sampled flag); a trace begins only where work comes in, an incoming request
    (SERVER) or message (CONSUMER), for OTEL_TRACES_SAMPLER_ARG of them (a ratio, default 1). So background work
    (the outbox relay's polling, readiness pings of the database, the checker's retry queue) starts no trace of its
    own: it would be a trace a second per process, about nothing."""
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_ON,
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
        TraceIdRatioBased,
    )
    from opentelemetry.trace import SpanKind

    try:
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    except ValueError:
        ratio = 1.0
    share = ALWAYS_ON if ratio >= 1.0 else TraceIdRatioBased(max(0.0, ratio))

    class EntryPoints(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Any = None) -> SamplingResult:
            if kind not in (SpanKind.SERVER, SpanKind.CONSUMER):
                return SamplingResult(Decision.DROP)
            return share.should_sample(parent_context, trace_id, name, kind, attributes, links)

        def get_description(self) -> str:
            return f"EntryPoints{{{share.get_description()}}}"

    return ParentBased(root=EntryPoints())


# Library -> its instrumentation, both as import names. Each requirement group of pyproject.toml that brings a
# library brings its instrumentation (tests/test_image_dependencies.py checks every service's image has both).
INSTRUMENTATIONS = {
    "urllib3": "opentelemetry.instrumentation.urllib3",
    "requests": "opentelemetry.instrumentation.requests",  # the gateway's OAuth client
    "psycopg2": "opentelemetry.instrumentation.psycopg2",
    "redis": "opentelemetry.instrumentation.redis",
    "grpc": "opentelemetry.instrumentation.grpc",
}


def _instrument_libraries() -> None:
    """Instrument each library this process has an instrumentation for. (`requests` is in every image, as the OTLP
    exporter's dependency, but only the gateway calls with it and has its instrumentation.)"""
    import importlib
    import importlib.util

    for library, instrumentation in INSTRUMENTATIONS.items():
        if importlib.util.find_spec(library) is None or importlib.util.find_spec(instrumentation) is None:
            continue
        module = importlib.import_module(instrumentation)
        if library == "urllib3":
            module.URLLib3Instrumentor().instrument()
        elif library == "requests":
            module.RequestsInstrumentor().instrument()
        elif library == "psycopg2":
            # Statements only: the instrumentation never records their parameters. Its check for the `psycopg2`
            # distribution is skipped: the images install `psycopg2-binary`.
            module.Psycopg2Instrumentor().instrument(skip_dep_check=True)
        elif library == "redis":
            module.RedisInstrumentor().instrument()
        elif library == "grpc":
            filters = importlib.import_module("opentelemetry.instrumentation.grpc.filters")
            untraced = filters.negate(filters.any_of(filters.service_prefix("grpc.health."),
                                                     filters.service_prefix("grpc.reflection.")))
            module.GrpcInstrumentorServer(filter_=untraced).instrument()
            module.GrpcInstrumentorClient(filter_=untraced).instrument()


def instrument_flask_app(app: Any, *, public: bool = False) -> None:
    """Trace the app's requests (not probes and scrapes); nothing when tracing is off. A `public` app (the gateway)
    begins a trace of its own for every request: a client's trace context is dropped before the instrumentation
    reads it, so no one outside chooses a trace id or has every request sampled."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app, excluded_urls=_UNTRACED_URLS)
    if public:
        traced = app.wsgi_app
        incoming = tuple(f"HTTP_{name.upper()}" for name in TRACE_HEADERS)

        def untrusted_context_dropped(environ: dict[str, Any], start_response: Any) -> Any:
            for key in incoming:
                environ.pop(key, None)
            return traced(environ, start_response)

        app.wsgi_app = untrusted_context_dropped


def flush_tracing(timeout_s: float = 5.0) -> None:
    """Export what is still buffered (a stopping process's last spans); the provider itself is shut down at exit."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=int(timeout_s * 1000))


# --- propagation ----------------------------------------------------------------------------------
def inject(carrier: MutableMapping[str, str], context: Any = None) -> None:
    """Write the current (or the given) trace context into `carrier` (headers)."""
    if _provider is None:
        return
    from opentelemetry import propagate

    propagate.inject(carrier, context=context)


def extract(carrier: Mapping[str, Any] | None) -> Any:
    """The trace context `carrier` (headers) carries; None when tracing is off."""
    if _provider is None:
        return None
    from opentelemetry import propagate

    return propagate.extract(dict(carrier or {}))


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span in hex, for log lines; None when there is none."""
    if _provider is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:  # an unsampled trace is in no backend
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# --- spans of our own (NATS, which has no instrumentation) ------------------------------------------
def _messaging_attributes(subject: str, operation: str, headers: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"messaging.system": "nats", "messaging.destination.name": subject,
                                  "messaging.operation.type": operation}
    message_id = headers.get("Nats-Msg-Id")
    if message_id:
        attributes["messaging.message.id"] = message_id
    return attributes


@contextmanager
def producer_spans(messages: list[tuple[str, bytes, dict[str, str]]]) -> Iterator[list[tuple[str, bytes, dict]]]:
    """One PRODUCER span per message being published, each a child of the trace its headers carry (the request
    that wrote the outbox row, or the current one); yields the messages with headers that carry the span itself,
    so the consumers' spans are its children. The spans end when the block does (the publishes acknowledged)."""
    if _provider is None:
        yield messages
        return
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    spans: list[Span] = []
    published: list[tuple[str, bytes, dict]] = []
    for subject, data, headers in messages:
        parent = propagate.extract(headers) if "traceparent" in headers else None
        started = _tracer.start_span(f"publish {subject}", context=parent, kind=SpanKind.PRODUCER,
                                     attributes=_messaging_attributes(subject, "publish", headers))
        carried = {name: value for name, value in headers.items() if name not in TRACE_HEADERS}
        propagate.inject(carried, context=trace.set_span_in_context(started))
        spans.append(started)
        published.append((subject, data, carried))
    try:
        yield published
    except BaseException as error:
        for started in spans:
            started.record_exception(error)
            started.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        for started in spans:
            started.end()


@contextmanager
def consumer_span(subject: str, durable: str, headers: Mapping[str, Any] | None) -> Iterator[Span | None]:
    """The CONSUMER span of handling one message, current while the block runs, a child of the producer's span
    the message's headers carry."""
    if _provider is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    attributes = _messaging_attributes(subject, "process", headers or {})
    attributes["messaging.consumer.group.name"] = durable
    with _tracer.start_as_current_span(f"process {subject}", context=extract(headers), kind=SpanKind.CONSUMER,
                                       attributes=attributes) as current:
        yield current


def mark_failed(current: Span | None, reason: str) -> None:
    """Give a span of ours the error status (a message that was not handled)."""
    if current is not None:
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, reason))


@contextmanager
def client_span(name: str, **attributes: Any) -> Iterator[Span | None]:
    """A CLIENT span around a call no instrumentation sees (the link checker's fetch on a pinned connection)."""
    if _provider is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as current:
        yield current
