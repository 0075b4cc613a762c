"""The services of Delinkcious, as the local runtime and the CLI need to know them."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kit.runtime import ServiceDefinition


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    default_port: int
    uses_postgres: bool
    uses_redis: bool
    uses_nats: bool
    allowed_callers: tuple[str, ...]
    module: str  # exposes DEFINITION, a kit ServiceDefinition
    # Services it calls; each is passed as <NAME>_SERVICE_URL, or as <NAME>_GRPC_ADDRESS when it has a grpc_port.
    calls: tuple[str, ...] = ()
    # Where /healthz/* and /metrics live when the service keeps them off its public port (ADMIN_PORT).
    admin_port: int | None = None
    # The port of the gRPC API callers use (GRPC_PORT), for a service reached over gRPC.
    grpc_port: int | None = None

    def definition(self) -> ServiceDefinition:
        return importlib.import_module(self.module).DEFINITION


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="link",
        default_port=8081,
        uses_postgres=True,
        uses_redis=False,
        uses_nats=True,
        allowed_callers=("api-gateway",),
        module="delinkcious.link.app",
    ),
    ServiceSpec(
        name="user",
        default_port=8082,
        uses_postgres=True,
        uses_redis=False,
        uses_nats=True,
        allowed_callers=("api-gateway", "social-graph"),
        module="delinkcious.user.app",
    ),
    ServiceSpec(
        name="social-graph",
        default_port=8083,
        uses_postgres=True,
        uses_redis=False,
        uses_nats=True,
        allowed_callers=("api-gateway", "news"),
        module="delinkcious.social_graph.app",
        calls=("user",),
    ),
    ServiceSpec(
        name="news",
        default_port=8084,  # /healthz and /metrics; the API is gRPC on grpc_port
        uses_postgres=False,
        uses_redis=True,
        uses_nats=True,
        allowed_callers=("api-gateway",),
        module="delinkcious.news.app",
        grpc_port=9084,
    ),
    ServiceSpec(
        name="link-checker",
        default_port=8085,  # /healthz and /metrics only: it has no API
        uses_postgres=False,
        uses_redis=True,
        uses_nats=True,
        allowed_callers=(),
        module="delinkcious.link_checker.app",
    ),
    ServiceSpec(
        name="api-gateway",
        default_port=8080,  # the public API only; /healthz and /metrics on admin_port
        admin_port=8090,
        uses_postgres=False,
        uses_redis=True,  # rate limits
        uses_nats=False,
        allowed_callers=(),
        module="delinkcious.api_gateway.app",
        calls=("link", "user", "social-graph", "news"),
    ),
)


def get_service(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in SERVICES)
    raise KeyError(f"unknown service {name!r} (known: {known})")
