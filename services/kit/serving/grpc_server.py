"""gRPC serving shared by every gRPC service: a bounded thread pool, grpc.health.v1.Health kept in
step with readiness, server reflection, and per-RPC request ids, access logs and RED metrics."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..core.errors import Conflict, Forbidden, InvalidInput, NotFound, ServiceError, Unauthenticated, Unavailable
from ..observability import metrics
from ..observability.context import GRPC_REQUEST_ID_KEY, request_scope
from ..observability.logs import bind_contextvars, clear_contextvars, get_logger
from .callers import CALLER_TOKEN_HEADER, CallerAuthenticator

log = get_logger("delinkcious.access")


# Our errors as gRPC status codes; anything else is INTERNAL, without details.
_STATUS_OF = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
}
# Probes and tooling need no caller identity.
_OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_of(error: ServiceError) -> grpc.StatusCode:
    for error_class, code in _STATUS_OF.items():
        if isinstance(error, error_class):
            return code
    return grpc.StatusCode.INTERNAL


class _Observability(grpc.ServerInterceptor):
    """Request id from the `x-request-id` metadata (or a new one), caller identity from
    `delinkcious-caller-token`, errors as status codes, one access log line and RED metrics per call.
    Only unary-unary methods exist in our contracts. Callers are admitted per service (ALLOWED_CALLERS), not per
    method as on HTTP (kit/callers.py): news, the only gRPC service, serves one RPC to one caller, the gateway."""

    def __init__(self, service: str, callers: CallerAuthenticator) -> None:
        self._service = service
        self._callers = callers

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method
        metadata = dict(details.invocation_metadata or ())
        inner = handler.unary_unary

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            with request_scope(metadata.get(GRPC_REQUEST_ID_KEY)) as request_id:
                context.set_trailing_metadata(((GRPC_REQUEST_ID_KEY, request_id),))
                try:
                    if not method.startswith(_OPEN_METHODS):
                        caller = self._callers.identify(metadata.get(CALLER_TOKEN_HEADER.lower()))
                        if caller:
                            bind_contextvars(caller=caller)
                    response = inner(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except ServiceError as error:
                    code = status_of(error)
                    if isinstance(error, Unavailable):
                        context.set_trailing_metadata(((GRPC_REQUEST_ID_KEY, request_id),
                                                       ("retry-after", str(error.retry_after))))
                    context.abort(code, error.message)
                except Exception as error:
                    if isinstance(error, grpc.RpcError) or context.code() not in (None, grpc.StatusCode.OK):
                        code = context.code() or grpc.StatusCode.UNKNOWN  # the servicer aborted on purpose
                        raise
                    code = grpc.StatusCode.INTERNAL
                    log.exception("unhandled_exception", method=method)
                    context.abort(code, "internal error; quote the request id when reporting it")
                finally:
                    duration = time.perf_counter() - started
                    metrics.GRPC_REQUESTS.labels(self._service, method, code.name).inc()
                    metrics.GRPC_DURATION.labels(self._service, method).observe(duration)
                    log.info("rpc", method=method, status=code.name, duration_ms=round(duration * 1000, 2))
                    clear_contextvars()  # pool threads are reused: the caller and user stay with this call

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    def __init__(self, service: str, address: str, registrations: list[Callable[[grpc.Server], str]],
                 is_ready: Callable[[], bool], callers: CallerAuthenticator, *, workers: int) -> None:
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            interceptors=[_Observability(service, callers)],
            maximum_concurrent_rpcs=workers * 4,  # beyond this, callers get RESOURCE_EXHAUSTED at once
        )
        self.service_names = [register(self._server) for register in registrations]
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server)
        self.port = self._server.add_insecure_port(address)
        self._is_ready = is_ready
        self._stopping = threading.Event()
        self._health_sync = threading.Thread(target=self._sync_health, name="grpc-health", daemon=True)

    def start(self) -> None:
        self._server.start()
        self._health_sync.start()

    def _sync_health(self) -> None:
        # grpc.health.v1 reports what /healthz/readiness reports, refreshed every couple of seconds.
        while not self._stopping.is_set():
            self._set_status(health_pb2.HealthCheckResponse.SERVING if self._is_ready()
                             else health_pb2.HealthCheckResponse.NOT_SERVING)
            self._stopping.wait(2.0)

    def _set_status(self, status: int) -> None:
        for name in ("", *self.service_names):
            self._health.set(name, status)

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within `grace` seconds."""
        self._stopping.set()
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server.stop(grace).wait()
