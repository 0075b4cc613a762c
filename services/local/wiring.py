"""How each service process is started under `delinkcious up`: its command, and its environment built
from the catalogue's facts (identity, host and ports, log format, caller token and allowed callers,
database access, the NATS and Redis URLs it uses, its page-token secret if it signs page tokens, where
each service it calls listens as an HTTP URL or a gRPC address, and for the API gateway its sign-in
with the identity provider). Variables the runtime manages never leak in from our own environment,
and a service's `<SERVICE>__<NAME>` overrides win over everything."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from delinkcious.catalogue import ServiceFacts
from delinkcious.local.secrets import DEVELOPER_CALLER, SecretsLayout
from delinkcious.local.servers import DatabaseAccess
from delinkcious.local.servers.base import reachable_address

# The service that faces the public, and how `up` signs it in with the local identity provider.
GATEWAY = "api-gateway"
LOCAL_OAUTH_CLIENT_ID = "delinkcious-local"
LOCAL_IDENTITY_PROVIDER_NAME = "local"

# Variables naming an existing server; they configure the runtime, not the services.
SERVER_VARIABLES = ("POSTGRES_URL", "NATS_URL", "REDIS_URL", "OIDC_DISCOVERY_URL")
# What the runtime tells the gateway about logging in (see gateway_variables).
GATEWAY_VARIABLES = (
    "AUTH_PROVIDER",
    "OIDC_DISCOVERY_URL",
    "OIDC_PROVIDER_NAME",
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "OAUTH_CLIENT_SECRET_FILE",
    "SESSION_SECRET",
    "SESSION_SECRET_FILE",
    "PUBLIC_BASE_URL",
)
# Variables the runtime sets per service; values inherited from our own
# environment are dropped so that, e.g., a stray DATABASE_URL never reaches a service.
MANAGED_VARIABLES = frozenset(
    {
        *SERVER_VARIABLES,
        "SERVICE_NAME",
        "HOST",
        "PORT",
        "ADMIN_PORT",
        "GRPC_PORT",
        "LOG_FORMAT",
        "DATABASE_URL",
        "DATABASE_PASSWORD_FILE",
        "CALLER_TOKEN_FILE",
        "TRUSTED_CALLERS_DIR",
        "ALLOWED_CALLERS",
        # A stray PAGE_TOKEN_SECRET would win over the file `up` gives and be shared by every service.
        "PAGE_TOKEN_SECRET",
        "PAGE_TOKEN_SECRET_FILE",
        # Each service names itself in its traces (its SERVICE_NAME); one inherited name would merge them all.
        "OTEL_SERVICE_NAME",
        *GATEWAY_VARIABLES,
    }
)


@dataclass(frozen=True)
class ServiceWiring:
    """What the runtime tells every service about its surroundings."""

    host: str
    log_format: str
    secrets: SecretsLayout
    service_names: tuple[str, ...]  # all known services, to keep their overrides apart
    nats_url: str | None = None
    redis_url: str | None = None
    databases: Mapping[str, DatabaseAccess] = field(default_factory=dict)
    service_urls: Mapping[str, str] = field(default_factory=dict)  # where each service listens
    grpc_addresses: Mapping[str, str] = field(default_factory=dict)  # host:port of each gRPC API
    oidc_discovery_url: str | None = None  # the identity provider the gateway signs people in with


def services_wiring(
    services: Sequence[ServiceFacts], host: str, log_format: str, secrets: SecretsLayout, base_env: Mapping[str, str]
) -> ServiceWiring:
    """The wiring before any server is known: where each of `services` listens, overrides included."""
    return ServiceWiring(
        host=host,
        log_format=log_format,
        secrets=secrets,
        service_names=tuple(spec.name for spec in services),
        service_urls={
            spec.name: f"http://{reachable_address(host, service_port(spec, base_env))}" for spec in services
        },
        grpc_addresses={
            spec.name: reachable_address(host, grpc_port)
            for spec in services
            if (grpc_port := service_grpc_port(spec, base_env)) is not None
        },
    )


def service_port(spec: ServiceFacts, base_env: Mapping[str, str]) -> int:
    """The port a service listens on: its `<SERVICE>__PORT` override, else its default."""
    return int(base_env.get(f"{override_prefix(spec.name)}PORT", spec.port))


def service_grpc_port(spec: ServiceFacts, base_env: Mapping[str, str]) -> int | None:
    """The port of a service's gRPC API: its `<SERVICE>__GRPC_PORT` override, else the catalogue's."""
    if spec.grpc_port is None:
        return None
    return int(base_env.get(f"{override_prefix(spec.name)}GRPC_PORT", spec.grpc_port))


def service_url_variable(service_name: str) -> str:
    """How a caller is told where a service is: `social-graph` -> `SOCIAL_GRAPH_SERVICE_URL`."""
    return service_name.upper().replace("-", "_") + "_SERVICE_URL"


def grpc_address_variable(service_name: str) -> str:
    """How a caller is told where a gRPC service is: `news` -> `NEWS_GRPC_ADDRESS`."""
    return service_name.upper().replace("-", "_") + "_GRPC_ADDRESS"


def override_prefix(service_name: str) -> str:
    """Prefix of per-service variables: `link-checker` -> `LINK_CHECKER__`."""
    return service_name.upper().replace("-", "_") + "__"


def service_environment(spec: ServiceFacts, wiring: ServiceWiring, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of one service process.

    Our own environment minus the variables the runtime manages and minus every
    service's `<SERVICE>__<NAME>` overrides; then the runtime's settings; then
    this service's overrides as `<NAME>`, which win.
    """
    prefixes = tuple(override_prefix(name) for name in wiring.service_names)
    managed = MANAGED_VARIABLES | {
        variable(name) for name in wiring.service_names for variable in (service_url_variable, grpc_address_variable)
    }
    environment = {
        name: value for name, value in base_env.items() if name not in managed and not name.startswith(prefixes)
    }
    environment.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the terminal as they happen
    environment.update(
        SERVICE_NAME=spec.name,
        HOST=wiring.host,
        PORT=str(spec.port),
        LOG_FORMAT=wiring.log_format,
        CALLER_TOKEN_FILE=str(wiring.secrets.caller_token_file(spec.name)),
        TRUSTED_CALLERS_DIR=str(wiring.secrets.callers_dir),
        ALLOWED_CALLERS=",".join(dict.fromkeys((*spec.allowed_callers, DEVELOPER_CALLER))),
        UNRESTRICTED_CALLERS=DEVELOPER_CALLER,  # the developer's curl may call every endpoint (kit/callers.py)
    )
    if spec.admin_port is not None:
        environment["ADMIN_PORT"] = str(spec.admin_port)
    if spec.grpc_port is not None:
        environment["GRPC_PORT"] = str(spec.grpc_port)
    if spec.signs_page_tokens:
        environment["PAGE_TOKEN_SECRET_FILE"] = str(wiring.secrets.page_token_secret_file(spec.name))
    environment.update(_dependency_variables(spec, wiring))
    if spec.name == GATEWAY and wiring.oidc_discovery_url is not None:
        environment.update(gateway_variables(wiring, service_port(spec, base_env)))
    own_prefix = override_prefix(spec.name)
    environment.update(
        {
            name.removeprefix(own_prefix): value
            for name, value in base_env.items()
            if name.startswith(own_prefix) and len(name) > len(own_prefix)
        }
    )
    return environment


def _dependency_variables(spec: ServiceFacts, wiring: ServiceWiring) -> dict[str, str]:
    variables: dict[str, str] = {}
    if spec.uses_postgres:
        database = wiring.databases[spec.name]
        variables.update(DATABASE_URL=database.dsn, DATABASE_PASSWORD_FILE=str(database.password_file))
    if spec.uses_nats:
        assert wiring.nats_url is not None, "NATS is needed but was not started"
        variables["NATS_URL"] = wiring.nats_url
    if spec.uses_redis:
        assert wiring.redis_url is not None, "Redis is needed but was not started"
        variables["REDIS_URL"] = wiring.redis_url
    for called in spec.calls:
        if called in wiring.grpc_addresses:
            variables[grpc_address_variable(called)] = wiring.grpc_addresses[called]
        else:
            variables[service_url_variable(called)] = wiring.service_urls[called]
    return variables


def gateway_variables(wiring: ServiceWiring, gateway_port: int) -> dict[str, str]:
    """How the gateway signs people in under `up`: OIDC with the local (or the given) identity provider."""
    assert wiring.oidc_discovery_url is not None
    return {
        "AUTH_PROVIDER": "oidc",
        "OIDC_DISCOVERY_URL": wiring.oidc_discovery_url,
        "OIDC_PROVIDER_NAME": LOCAL_IDENTITY_PROVIDER_NAME,
        "OAUTH_CLIENT_ID": LOCAL_OAUTH_CLIENT_ID,
        "OAUTH_CLIENT_SECRET_FILE": str(wiring.secrets.oauth_client_secret_file),
        "SESSION_SECRET_FILE": str(wiring.secrets.session_secret_file),
        # Where browsers reach the gateway; the OAuth callback is ${PUBLIC_BASE_URL}/login/authorized.
        "PUBLIC_BASE_URL": f"http://{reachable_address(wiring.host, gateway_port)}",
    }


def service_command(name: str) -> list[str]:
    """How a service process is started: `delinkcious serve <name>` with our interpreter."""
    return [sys.executable, "-m", "delinkcious.cli", "serve", name]
