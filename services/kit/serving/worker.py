"""Running a worker service: consumers (and gRPC, if it has any) in one process, with /healthz and
/metrics on a small HTTP side port. On SIGTERM, at once: readiness goes 503, the consumers stop fetching and
work that can be redone gives way (its message is redelivered elsewhere). Then gRPC stops taking calls and
finishes in-flight ones (GRACEFUL_TIMEOUT) while the handlers that cannot be redone finish and are acked
(SHUTDOWN_DRAIN_TIMEOUT from the signal, both at once); the connection and pools close; exit 0."""
from __future__ import annotations

import signal
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..observability.logs import get_logger
from .config import GrpcSettings
from .runtime import ServiceDefinition, ServiceRuntime

log = get_logger(__name__)


class _OpsServer(ThreadingMixIn, WSGIServer):
    """A small threaded WSGI server for probes and scrapes only; the service's API is not HTTP."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass  # the kit's access log covers these requests


def run_worker(definition: ServiceDefinition, settings: Any) -> int:
    from .web import create_app

    runtime = ServiceRuntime(definition, settings)
    parts = definition.build(runtime)
    runtime.add_subscriptions(parts.subscriptions)
    ops = make_server(settings.host, settings.port, create_app(runtime, parts.blueprints),
                      server_class=_OpsServer, handler_class=_QuietHandler)
    grpc_server = None
    if parts.grpc_services:
        from .grpc_server import GrpcServer

        assert isinstance(settings, GrpcSettings), f"{definition.name} serves gRPC but has no GrpcSettings"
        grpc_server = GrpcServer(
            definition.name, f"{settings.host}:{settings.grpc_port}", parts.grpc_services,
            is_ready=lambda: runtime.health.readiness()[0] == 200, callers=runtime.callers,
            workers=settings.grpc_workers,
        )

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())

    threading.Thread(target=ops.serve_forever, name="ops-http", daemon=True).start()
    runtime.start()
    if grpc_server is not None:
        grpc_server.start()
    log.info("worker_started", ops_address=f"{settings.host}:{settings.port}",
             grpc_port=settings.grpc_port if grpc_server else None)

    stop_requested.wait()
    stopping_since = time.monotonic()
    log.info("worker_stopping")
    # At once, before the gRPC drain: consumers stop fetching and work that can be redone gives way.
    runtime.request_stop()
    if grpc_server is not None:
        grpc_server.stop(grace=settings.graceful_timeout)
    # The handlers have been finishing since the signal, beside the gRPC drain: their time counts from it.
    runtime.stop(timeout=settings.shutdown_drain_timeout - (time.monotonic() - stopping_since))
    ops.shutdown()
    ops.server_close()
    return 0
