"""docker-compose.yaml, generated from the service catalogue: `python -m delinkcious.local.compose render`
(`./build.sh compose`) writes it, and a test fails when the committed file differs from what this module
renders. `python -m delinkcious.local.compose secrets [DIR]` (`./build.sh compose-secrets`) generates the
secret files the file names, once, in DIR (default .secrets).

The stack: PostgreSQL with a role and a database per service that owns one (made by the one-shot
`database-setup`, the only container holding the superuser's password), Redis with a password, NATS with
JetStream, every service, and the development identity provider. Secrets are compose secrets (files
mounted read-only under /run/secrets/delinkcious/), each container getting only those it uses. Only the
gateway's public port and the identity provider's login page are published, on 127.0.0.1.

The identity provider shares the gateway's network namespace, so the browser and the gateway reach it at
the same address (http://127.0.0.1:9400): the issuer in its tokens is the one the gateway discovered.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from delinkcious.catalogue import SERVICES, ServiceFacts
from delinkcious.local.secrets import ensure_secret_file
from delinkcious.local.wiring import (
    GATEWAY,
    LOCAL_IDENTITY_PROVIDER_NAME,
    LOCAL_OAUTH_CLIENT_ID,
    grpc_address_variable,
    service_url_variable,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"

# Images of the servers; each can be replaced (CI passes look-alikes built without a registry: k8s/images/).
POSTGRES_IMAGE = "${POSTGRES_IMAGE:-postgres:16-bookworm}"
REDIS_IMAGE = "${REDIS_IMAGE:-redis:7-bookworm}"
NATS_IMAGE = "${NATS_IMAGE:-nats:2.10-alpine}"
# The project's images, as `./build.sh images` tags them; DELINKCIOUS_IMAGE_PREFIX may name a registry ("host/").
IMAGE_TAG = "${DELINKCIOUS_TAG:-0.1.0}"
PUBLIC_PORT = "${DELINKCIOUS_PORT:-8080}"

SECRETS_DIR_DEFAULT = ".secrets"
SECRETS_IN_CONTAINER = "/run/secrets/delinkcious"
POSTGRES_ADMIN_SECRET = "postgres-admin-password"
REDIS_SECRET = "redis-password"
GATEWAY_SESSION_SECRET = "gateway-session-secret"
GATEWAY_OAUTH_SECRET = "gateway-oauth-client-secret"
IDENTITY_PROVIDER_PORT = 9400
DATABASE_SETUP = "database-setup"
IDENTITY_PROVIDER = "identity-provider"

# Health checks poll often so that `docker compose up --wait` and the depends_on chain are quick; each is
# a cheap request (not `delinkcious probe`, which loads the service's settings: about a second of CPU).
HEALTH_TIMING = {"interval": "5s", "timeout": "4s", "retries": 5, "start_period": "90s"}


def image(name: str) -> str:
    return f"${{DELINKCIOUS_IMAGE_PREFIX:-}}delinkcious/{name}:{IMAGE_TAG}"


def database_secret(service: str) -> str:
    return f"{service}-database-password"


def caller_token_secret(service: str) -> str:
    return f"caller-token-{service}"


def page_token_secret(service: str) -> str:
    return f"page-token-secret-{service}"


def callers() -> list[str]:
    """Services that call others with a caller identity: those some service lets call it."""
    allowed = {caller for spec in SERVICES for caller in spec.allowed_callers}
    return [spec.name for spec in SERVICES if spec.name in allowed]


def secret_names() -> list[str]:
    return [
        POSTGRES_ADMIN_SECRET,
        *(database_secret(spec.name) for spec in SERVICES if spec.uses_postgres),
        REDIS_SECRET,
        *(caller_token_secret(name) for name in callers()),
        *(page_token_secret(spec.name) for spec in SERVICES if spec.signs_page_tokens),
        GATEWAY_SESSION_SECRET,
        GATEWAY_OAUTH_SECRET,
    ]


def mounted(secret: str, path: str) -> dict[str, str]:
    return {"source": secret, "target": f"{SECRETS_IN_CONTAINER}/{path}"}


def service_environment(spec: ServiceFacts) -> dict[str, str]:
    """A service's settings in the stack (the variable names are the ones `delinkcious up` sets)."""
    # Traces go to the OTLP endpoint the shell (or .env) names, if any; empty leaves tracing off.
    environment = {"LOG_FORMAT": "json", "OTEL_SERVICE_NAME": spec.name,
                   "OTEL_EXPORTER_OTLP_ENDPOINT": "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"}
    if spec.name in callers():
        environment["CALLER_TOKEN_FILE"] = f"{SECRETS_IN_CONTAINER}/caller-token"
    if spec.allowed_callers:
        environment.update(TRUSTED_CALLERS_DIR=f"{SECRETS_IN_CONTAINER}/callers",
                           ALLOWED_CALLERS=",".join(spec.allowed_callers))
    if spec.uses_postgres:
        environment.update(DATABASE_URL=f"postgresql://{spec.name}@postgres:5432/{spec.name}",
                           DATABASE_PASSWORD_FILE=f"{SECRETS_IN_CONTAINER}/database-password")
    if spec.uses_nats:
        environment["NATS_URL"] = "nats://nats:4222"
    if spec.uses_redis:
        environment.update(REDIS_URL="redis://redis:6379/0", REDIS_PASSWORD_FILE=f"{SECRETS_IN_CONTAINER}/redis-password")
    if spec.signs_page_tokens:
        environment["PAGE_TOKEN_SECRET_FILE"] = f"{SECRETS_IN_CONTAINER}/page-token-secret"
    for called in map(_service, spec.calls):
        if called.grpc_port is not None:
            environment[grpc_address_variable(called.name)] = f"{called.name}:{called.grpc_port}"
        else:
            environment[service_url_variable(called.name)] = f"http://{called.name}:{called.port}"
    if spec.name == GATEWAY:
        environment.update(
            PUBLIC_BASE_URL=f"http://127.0.0.1:{PUBLIC_PORT}",
            AUTH_PROVIDER="oidc",
            OIDC_DISCOVERY_URL=f"http://127.0.0.1:{IDENTITY_PROVIDER_PORT}/.well-known/openid-configuration",
            OIDC_PROVIDER_NAME=LOCAL_IDENTITY_PROVIDER_NAME,
            OAUTH_CLIENT_ID=LOCAL_OAUTH_CLIENT_ID,
            OAUTH_CLIENT_SECRET_FILE=f"{SECRETS_IN_CONTAINER}/oauth-client-secret",
            SESSION_SECRET_FILE=f"{SECRETS_IN_CONTAINER}/session-secret",
        )
    return environment


def service_secrets(spec: ServiceFacts) -> list[dict[str, str]]:
    secrets = []
    if spec.name in callers():
        secrets.append(mounted(caller_token_secret(spec.name), "caller-token"))
    secrets += [mounted(caller_token_secret(caller), f"callers/{caller}") for caller in spec.allowed_callers]
    if spec.uses_postgres:
        secrets.append(mounted(database_secret(spec.name), "database-password"))
    if spec.uses_redis:
        secrets.append(mounted(REDIS_SECRET, "redis-password"))
    if spec.signs_page_tokens:
        secrets.append(mounted(page_token_secret(spec.name), "page-token-secret"))
    if spec.name == GATEWAY:
        secrets += [mounted(GATEWAY_OAUTH_SECRET, "oauth-client-secret"),
                    mounted(GATEWAY_SESSION_SECRET, "session-secret")]
    return secrets


def _service(name: str) -> ServiceFacts:
    return next(spec for spec in SERVICES if spec.name == name)


def _http_check(port: int, path: str) -> dict[str, Any]:
    """A health check with the image's own Python: GET http://127.0.0.1:<port><path>, healthy on 2xx."""
    script = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=3)"
    return {"test": ["CMD", "python3", "-c", script], **HEALTH_TIMING}


def service_definition(spec: ServiceFacts) -> dict[str, Any]:
    ops_port = spec.admin_port or spec.port
    depends_on: dict[str, Any] = {}
    if spec.uses_postgres:
        depends_on[DATABASE_SETUP] = {"condition": "service_completed_successfully"}
    if spec.uses_nats:
        depends_on["nats"] = {"condition": "service_healthy"}
    if spec.uses_redis:
        depends_on["redis"] = {"condition": "service_healthy"}
    # Callers start once what they call is ready, so the gateway's first requests do not open its breakers.
    depends_on.update({called: {"condition": "service_healthy"} for called in spec.calls})
    definition: dict[str, Any] = {
        "image": image(spec.name),
        "restart": "unless-stopped",
        "environment": service_environment(spec),
        "secrets": service_secrets(spec),
        "depends_on": depends_on,
        "healthcheck": _http_check(ops_port, "/healthz/readiness"),
        # 35 s is gunicorn's own graceful limit with the default settings (services/kit/serving/gunicorn.py).
        "stop_grace_period": "40s",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
    }
    if spec.name == GATEWAY:
        # The identity provider lives in this container's network namespace: its port is published here.
        definition["ports"] = [f"127.0.0.1:{PUBLIC_PORT}:{spec.port}",
                               f"127.0.0.1:{IDENTITY_PROVIDER_PORT}:{IDENTITY_PROVIDER_PORT}"]
    return definition


def servers() -> dict[str, Any]:
    redis_command = (
        "exec redis-server - --appendonly yes --dir /data <<EOF\n"
        "requirepass $$(cat /run/secrets/delinkcious/redis-password)\n"
        "EOF\n"
    )
    # REDISCLI_AUTH keeps the password off the check's command line.
    redis_check = 'REDISCLI_AUTH="$$(cat /run/secrets/delinkcious/redis-password)" redis-cli ping | grep -q PONG'
    server_timing = {"interval": "2s", "timeout": "3s", "retries": 15, "start_period": "30s"}
    return {
        "postgres": {
            "image": POSTGRES_IMAGE,
            "restart": "unless-stopped",
            "environment": {"POSTGRES_PASSWORD_FILE": f"{SECRETS_IN_CONTAINER}/postgres-password",
                            "PGDATA": "/var/lib/postgresql/data/pgdata"},
            "secrets": [mounted(POSTGRES_ADMIN_SECRET, "postgres-password")],
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD", "pg_isready", "--host=127.0.0.1", "--username=postgres"], **server_timing},
            "stop_grace_period": "30s",
        },
        "redis": {
            "image": REDIS_IMAGE,
            "restart": "unless-stopped",
            "user": "999:999",
            "command": ["sh", "-c", redis_command],
            "secrets": [mounted(REDIS_SECRET, "redis-password")],
            "volumes": ["redis-data:/data"],
            "healthcheck": {"test": ["CMD", "sh", "-c", redis_check], **server_timing},
        },
        "nats": {
            "image": NATS_IMAGE,
            "restart": "unless-stopped",
            "command": ["--jetstream", "--store_dir", "/data", "--http_port", "8222"],
            "volumes": ["nats-data:/data"],
            "healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8222/healthz"],
                            **server_timing},
        },
        DATABASE_SETUP: {
            # The image of a service that owns a database carries the command and its PostgreSQL driver.
            "image": image(next(spec.name for spec in SERVICES if spec.uses_postgres)),
            "entrypoint": ["delinkcious", "provision-databases"],
            "environment": {
                "LOG_FORMAT": "json",
                "POSTGRES_ADMIN_URL": "postgresql://postgres@postgres:5432/postgres",
                "POSTGRES_ADMIN_PASSWORD_FILE": f"{SECRETS_IN_CONTAINER}/postgres-password",
                "DATABASE_PASSWORDS_DIR": f"{SECRETS_IN_CONTAINER}/database-passwords",
                "STARTUP_TIMEOUT": "120",
            },
            "secrets": [
                mounted(POSTGRES_ADMIN_SECRET, "postgres-password"),
                *(mounted(database_secret(spec.name), f"database-passwords/{spec.name}")
                  for spec in SERVICES if spec.uses_postgres),
            ],
            # No depends_on: it waits for PostgreSQL itself (STARTUP_TIMEOUT), so the services that need it
            # depend on one finished job and nothing behind it (podman 4.3 cannot start a container whose
            # dependency has exited and has dependencies of its own).
            "restart": "on-failure",
            "healthcheck": {"disable": True},  # a one-shot: its exit status is what counts
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
        },
    }


def identity_provider() -> dict[str, Any]:
    script = (f"import urllib.request; urllib.request.urlopen("
              f"'http://127.0.0.1:{IDENTITY_PROVIDER_PORT}/.well-known/openid-configuration', timeout=3)")
    return {
        "image": image(IDENTITY_PROVIDER),
        "restart": "unless-stopped",
        "network_mode": f"service:{GATEWAY}",
        "depends_on": {GATEWAY: {"condition": "service_started"}},
        "healthcheck": {"test": ["CMD", "python3", "-c", script], **HEALTH_TIMING},
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
    }


HEADER = """\
# Generated from services/catalogue.py by services/local/compose.py: do not edit; run `./build.sh compose`.
# The whole system (PostgreSQL, Redis, NATS with JetStream, every service, a development identity provider):
#   ./build.sh images && ./build.sh compose-secrets      # the images, and the secret files in .secrets/
#   docker compose up -d --wait                         # or podman-compose up -d
#   log in at http://127.0.0.1:8080/login (any name signs in: the identity provider is for development)
# Settings: DELINKCIOUS_PORT (8080), DELINKCIOUS_TAG, DELINKCIOUS_IMAGE_PREFIX, DELINKCIOUS_SECRETS_DIR,
# POSTGRES_IMAGE, REDIS_IMAGE, NATS_IMAGE. See docs/deployment.md.
"""


class _ComposeDumper(yaml.SafeDumper):
    """Block scalars for multi-line commands, one-line lists for short lists of words: a file people read."""


def _represent_string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    short = all(isinstance(item, str) and "\n" not in item for item in value) and sum(map(len, value)) < 80
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=short)


_ComposeDumper.add_representer(str, _represent_string)
_ComposeDumper.add_representer(list, _represent_list)


def render() -> str:
    services: dict[str, Any] = servers()
    services.update({spec.name: service_definition(spec) for spec in SERVICES})
    services[IDENTITY_PROVIDER] = identity_provider()
    document = {
        "name": "delinkcious",
        "services": services,
        "volumes": {name: {} for name in ("postgres-data", "redis-data", "nats-data")},
        "secrets": {name: {"file": f"${{DELINKCIOUS_SECRETS_DIR:-./{SECRETS_DIR_DEFAULT}}}/{name}"}
                    for name in secret_names()},
    }
    return HEADER + yaml.dump(document, Dumper=_ComposeDumper, sort_keys=False, width=120)


def write_secrets(directory: Path) -> list[Path]:
    """Every secret the file names, generated once; the directory is private (0700). The files are 0644:
    a container's user must read its bind-mounted secret, and only the directory guards them here."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    paths = []
    for name in secret_names():
        path = directory / name
        ensure_secret_file(path)
        path.chmod(0o644)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m delinkcious.local.compose", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render_command = commands.add_parser("render", help="write docker-compose.yaml (or --stdout)")
    render_command.add_argument("--stdout", action="store_true")
    secrets_command = commands.add_parser("secrets", help="generate the secret files that do not exist yet")
    secrets_command.add_argument("directory", nargs="?", type=Path, default=ROOT / SECRETS_DIR_DEFAULT)
    args = parser.parse_args(argv)
    if args.command == "render":
        if args.stdout:
            sys.stdout.write(render())
        else:
            COMPOSE_FILE.write_text(render())
            print(f"wrote {COMPOSE_FILE}", file=sys.stderr)
    else:
        for path in write_secrets(args.directory):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
