"""The service catalogue: each service's facts, written once.

The local runtime (`delinkcious up`), the service's own settings defaults, the container recipe, the
probe, the generated settings documentation and the deployment files read these facts or are
checked against them by tests; nothing else writes a port, a store or a caller list down again.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kit.serving.runtime import ServiceDefinition


@dataclass(frozen=True)
class ServiceFacts:
    name: str
    summary: str
    port: int  # HTTP: the API, or only /healthz and /metrics for a worker
    uses_postgres: bool = False
    uses_redis: bool = False
    uses_nats: bool = False
    allowed_callers: tuple[str, ...] = ()
    # Services it calls; each is passed as <NAME>_SERVICE_URL, or as <NAME>_GRPC_ADDRESS when it has a grpc_port.
    calls: tuple[str, ...] = ()
    # Where /healthz/* and /metrics live when the service keeps them off its public port (ADMIN_PORT).
    admin_port: int | None = None
    # The port of the gRPC API callers use (GRPC_PORT), for a service reached over gRPC.
    grpc_port: int | None = None
    # Its listings hand out page tokens signed with a secret of its own (PAGE_TOKEN_SECRET, required: the kit's
    # PageTokenSecret): `delinkcious up`, docker-compose.yaml and the Helm chart give it one.
    signs_page_tokens: bool = False

    @property
    def package(self) -> str:
        """The service's folder under services/ and its import package below delinkcious."""
        return self.name.replace("-", "_")

    def definition(self) -> ServiceDefinition:
        return importlib.import_module(f"delinkcious.{self.package}.app").DEFINITION


SERVICES: tuple[ServiceFacts, ...] = (
    ServiceFacts("link", "links, tags and link status", port=8081, uses_postgres=True, uses_nats=True,
                 allowed_callers=("api-gateway", "news"), signs_page_tokens=True),
    ServiceFacts("user", "users, identities and access tokens", port=8082, uses_postgres=True, uses_nats=True,
                 allowed_callers=("api-gateway", "social-graph")),
    ServiceFacts("social-graph", "who follows whom", port=8083, uses_postgres=True, uses_nats=True,
                 allowed_callers=("api-gateway", "news"), calls=("user",), signs_page_tokens=True),
    # news reads social-graph and link (the owners of what it projects) only to rebuild its store.
    ServiceFacts("news", "news feeds over gRPC", port=8084, grpc_port=9084, uses_redis=True, uses_nats=True,
                 allowed_callers=("api-gateway",), calls=("social-graph", "link"), signs_page_tokens=True),
    ServiceFacts("link-checker", "finds dead links (no API: /healthz and /metrics only)", port=8085, uses_redis=True,
                 uses_nats=True),
    # Redis holds the gateway's rate-limit counters only.
    ServiceFacts("api-gateway", "the public REST API, login, tokens and rate limits", port=8080, admin_port=8090,
                 uses_redis=True, calls=("link", "user", "social-graph", "news")),
)


def get_service(name: str) -> ServiceFacts:
    for facts in SERVICES:
        if facts.name == name:
            return facts
    known = ", ".join(facts.name for facts in SERVICES)
    raise KeyError(f"unknown service {name!r} (known: {known})")
