"""`delinkcious up`: the whole system on one machine, no Docker.

Starts PostgreSQL, NATS (JetStream) and Redis from pip-installed packages
(unless POSTGRES_URL / NATS_URL / REDIS_URL point at existing servers), and a
local OIDC identity provider for the API gateway (unless OIDC_DISCOVERY_URL
names one), gives every service its own database role, caller token and
environment, runs each service as a supervised child process, prints one status
table once they are ready, and on SIGINT/SIGTERM stops the services first and
the servers last. All state lives in one data directory, so the next `up` finds
it as it was.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions
from delinkcious.catalogue import ServiceFacts
from delinkcious.local.processes import ChildProcess
from delinkcious.local.servers import (
    DatabaseAccess,
    NatsServer,
    OidcProviderServer,
    PostgresServer,
    RedisServer,
    ServerError,
    ensure_secret_file,
    ensure_service_database,
    url_host,
)

log = logging.getLogger("delinkcious.local.runtime")

DEVELOPER_CALLER = "developer"
READINESS_TIMEOUT = 120.0
# Longer than a service's own kill timer (GRACEFUL_TIMEOUT + SHUTDOWN_DRAIN_TIMEOUT + 5 = 35 s by default).
SERVICE_STOP_TIMEOUT = 45.0
_SUPERVISION_TICK = 0.2
_READINESS_PROBE_TIMEOUT = 1.0

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
        *GATEWAY_VARIABLES,
    }
)


# --------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Options:
    data_dir: Path
    host: str
    postgres_port: int
    nats_port: int
    redis_port: int
    oidc_port: int
    only: tuple[str, ...]
    log_format: str


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """$DELINKCIOUS_DATA_DIR, else $XDG_DATA_HOME/delinkcious, else ~/.local/share/delinkcious."""
    if environ.get("DELINKCIOUS_DATA_DIR"):
        return Path(environ["DELINKCIOUS_DATA_DIR"]).expanduser()
    if environ.get("XDG_DATA_HOME"):
        return Path(environ["XDG_DATA_HOME"]).expanduser() / "delinkcious"
    return Path.home() / ".local" / "share" / "delinkcious"


def parse_options(argv: Sequence[str], environ: Mapping[str, str], stdout_is_tty: bool) -> Options:
    parser = argparse.ArgumentParser(
        prog="delinkcious up",
        description="Run the whole Delinkcious system locally (embedded PostgreSQL, NATS and Redis).",
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(environ))
    parser.add_argument("--host", default="127.0.0.1", help="address every server and service listens on")
    parser.add_argument("--postgres-port", type=int, default=15432)
    parser.add_argument("--nats-port", type=int, default=14222)
    parser.add_argument("--redis-port", type=int, default=16379)
    parser.add_argument(
        "--oidc-port", type=int, default=9400, help="port of the local identity provider started for the API gateway"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="SERVICE", help="start only this service (repeatable)"
    )
    parser.add_argument("--log-format", choices=("json", "console"), default="console" if stdout_is_tty else "json")
    arguments = parser.parse_args(list(argv))
    return Options(
        data_dir=arguments.data_dir.expanduser().absolute(),
        host=arguments.host,
        postgres_port=arguments.postgres_port,
        nats_port=arguments.nats_port,
        redis_port=arguments.redis_port,
        oidc_port=arguments.oidc_port,
        only=tuple(dict.fromkeys(arguments.only)),
        log_format=arguments.log_format,
    )


def select_services(services: Sequence[ServiceFacts], only: Sequence[str]) -> list[ServiceFacts]:
    """The services named by --only (all of them if none is named), in catalogue order."""
    known = {spec.name for spec in services}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [spec for spec in services if not only or spec.name in only]


# --------------------------------------------------------------------------------------
# Secrets


@dataclass(frozen=True)
class SecretsLayout:
    """data_dir/secrets (0700): callers/<name> tokens, postgres/<role> passwords and the gateway's
    oauth-client-secret and gateway-session-secret (files 0600)."""

    root: Path

    @property
    def oauth_client_secret_file(self) -> Path:
        return self.root / "oauth-client-secret"

    @property
    def session_secret_file(self) -> Path:
        return self.root / "gateway-session-secret"

    @property
    def callers_dir(self) -> Path:
        return self.root / "callers"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    def caller_token_file(self, caller: str) -> Path:
        return self.callers_dir / caller


def ensure_caller_tokens(layout: SecretsLayout, callers: Sequence[str]) -> None:
    """One token per caller, generated on first use and kept afterwards."""
    layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    for caller in callers:
        ensure_secret_file(layout.caller_token_file(caller))


def ensure_gateway_secrets(layout: SecretsLayout) -> None:
    """The gateway's OAuth client secret and session secret, generated on first use and kept afterwards."""
    layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    ensure_secret_file(layout.oauth_client_secret_file)
    ensure_secret_file(layout.session_secret_file)


# --------------------------------------------------------------------------------------
# Service environment


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
    )
    if spec.admin_port is not None:
        environment["ADMIN_PORT"] = str(spec.admin_port)
    if spec.grpc_port is not None:
        environment["GRPC_PORT"] = str(spec.grpc_port)
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
        "PUBLIC_BASE_URL": f"http://{url_host(probe_host(wiring.host))}:{gateway_port}",
    }


def service_command(name: str) -> list[str]:
    return [sys.executable, "-m", "delinkcious.cli", "serve", name]


# --------------------------------------------------------------------------------------
# Supervision


@dataclass
class RestartBackoff:
    """Delay before restarting a crashed child: 1 s doubling up to 30 s, reset once it ran 60 s."""

    initial: float = 1.0
    maximum: float = 30.0
    stable_after: float = 60.0
    _next: float = 1.0

    def delay_after(self, uptime: float) -> float:
        if uptime >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


def probe_host(host: str) -> str:
    """Where to reach a server that listens on `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


class SupervisedService:
    """One service: its child process, restarts and readiness."""

    def __init__(self, name: str, command: Sequence[str], environment: Mapping[str, str], pid_file: Path) -> None:
        self.name = name
        self.command = list(command)
        self.environment = dict(environment)
        self.host = environment["HOST"]
        self.port = int(environment["PORT"])
        # /healthz lives on ADMIN_PORT when the service separates it from its public port.
        self.admin_port = int(environment["ADMIN_PORT"]) if environment.get("ADMIN_PORT") else None
        self.pid_file = pid_file
        self.ready = False
        self._child: ChildProcess | None = None
        self._started_at = 0.0
        self._restart_at: float | None = None
        self._backoff = RestartBackoff()

    @property
    def address(self) -> str:
        """The public address, as shown in the status table."""
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def readiness_url(self) -> str:
        port = self.admin_port if self.admin_port is not None else self.port
        return f"http://{url_host(probe_host(self.host))}:{port}/healthz/readiness"

    def start(self) -> None:
        self._child = ChildProcess(self.command, pid_file=self.pid_file, env=self.environment)
        self._child.start()
        self._started_at = time.monotonic()
        self._restart_at = None

    def supervise(self, now: float) -> None:
        """Notice an exit and schedule a restart; restart when it is due."""
        if self._child is not None and (exit_code := self._child.poll()) is not None:
            self._child.forget_pid_file()
            self._child = None
            self.ready = False
            delay = self._backoff.delay_after(now - self._started_at)
            log.warning("%s exited with code %d, restarting in %.0f s", self.name, exit_code, delay)
            self._restart_at = now + delay
        if self._restart_at is not None and now >= self._restart_at:
            self.start()

    def check_readiness(self) -> bool:
        if self._child is None or not self._child.running:
            self.ready = False
        else:
            try:
                with urllib.request.urlopen(self.readiness_url, timeout=_READINESS_PROBE_TIMEOUT) as response:
                    self.ready = response.status == 200
            except (urllib.error.URLError, OSError, ValueError):
                self.ready = False  # HTTPError (e.g. 503) is a URLError too
        return self.ready

    def signal_stop(self) -> None:
        self._restart_at = None
        if self._child is not None:
            self._child.signal_stop()

    def wait_stopped(self, timeout: float) -> None:
        if self._child is not None:
            self._child.wait_stopped(timeout)
            self._child = None


# --------------------------------------------------------------------------------------
# Status report


@dataclass(frozen=True)
class ServerEndpoint:
    """A shared server for the status table: its kind, a password-free address, and who runs it."""

    kind: str
    address: str
    external: bool


def display_address(url_or_dsn: str) -> str:
    """A URL/DSN without user names or passwords (several comma-separated URLs allowed)."""
    if "://" not in url_or_dsn:  # libpq keyword/value DSN
        options = psycopg2.extensions.parse_dsn(url_or_dsn)
        return f"{options.get('host', 'localhost')}:{options.get('port', '5432')}/{options.get('dbname', '')}"
    return ",".join(_without_credentials(part.strip()) for part in url_or_dsn.split(","))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="").geturl()


def status_report(
    services: Sequence[SupervisedService],
    servers: Sequence[ServerEndpoint],
    data_dir: Path,
    developer_token: Path,
    login_url: str | None = None,
) -> str:
    rows = [("service", "address", "ready")]
    rows += [(service.name, service.address, "yes" if service.ready else "no") for service in services]
    rows += [(server.kind, server.address + (" (external)" if server.external else ""), "yes") for server in servers]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    lines = [f"{name:<{widths[0]}}  {address:<{widths[1]}}  {ready}".rstrip() for name, address, ready in rows]
    lines += [f"data dir: {data_dir}", f"developer caller token: {developer_token}"]
    if login_url is not None:
        lines.append(f"log in at: {login_url}")
    not_ready = [service.name for service in services if not service.ready]
    lines.append("delinkcious is up" + (f" (not ready: {', '.join(not_ready)})" if not_ready else ""))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The runtime


class _StopRequested(Exception):
    """SIGINT/SIGTERM arrived while starting up."""


@contextmanager
def _stop_signals(handler: Callable[[], None]) -> Iterator[None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


_LocalServer = PostgresServer | NatsServer | RedisServer | OidcProviderServer


class LocalRuntime:
    """One `up` run: servers, secrets and supervised services, stopped in order at the end."""

    def __init__(
        self,
        options: Options,
        all_services: Sequence[ServiceFacts],
        environ: Mapping[str, str],
        command_for: Callable[[str], list[str]] = service_command,
    ) -> None:
        self.options = options
        self.command_for = command_for
        self.all_services = list(all_services)
        self.selected = select_services(all_services, options.only)
        self.environ = dict(environ)
        self.secrets = SecretsLayout(options.data_dir / "secrets")
        self.services: list[SupervisedService] = []
        self.endpoints: list[ServerEndpoint] = []
        self._started_servers: dict[str, _LocalServer] = {}
        self._stop_requested = False

    def run(self) -> int:
        with _stop_signals(self._request_stop):
            try:
                self._start()
                self._supervise()
                return 0
            except _StopRequested:
                return 0
            except (ServerError, psycopg2.Error, OSError) as error:
                log.error("could not start: %s", error)
                return 1
            finally:
                self._stop()
                _print("delinkcious stopped\n")

    def _request_stop(self) -> None:
        if not self._stop_requested:
            log.info("stopping")
        self._stop_requested = True

    def _check_stop(self) -> None:
        # Startup steps are short, so a stop request is honoured between them.
        if self._stop_requested:
            raise _StopRequested()

    def _start(self) -> None:
        self.options.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_caller_tokens(self.secrets, [spec.name for spec in self.all_services] + [DEVELOPER_CALLER])
        if self._gateway_selected:
            ensure_gateway_secrets(self.secrets)
        wiring = self._start_servers()
        for spec in self.selected:
            self._check_stop()
            service = SupervisedService(
                spec.name,
                self.command_for(spec.name),
                service_environment(spec, wiring, self.environ),
                pid_file=self.options.data_dir / "run" / f"{spec.name}.pid",
            )
            service.start()
            self.services.append(service)
            log.info("started %s on %s", service.name, service.address)

    @property
    def _gateway_selected(self) -> bool:
        return any(spec.name == GATEWAY for spec in self.selected)

    def _start_servers(self) -> ServiceWiring:
        reachable_host = url_host(probe_host(self.options.host))
        wiring = ServiceWiring(
            host=self.options.host,
            log_format=self.options.log_format,
            secrets=self.secrets,
            service_names=tuple(spec.name for spec in self.all_services),
            service_urls={
                spec.name: f"http://{reachable_host}:{service_port(spec, self.environ)}" for spec in self.all_services
            },
            grpc_addresses={
                spec.name: f"{reachable_host}:{grpc_port}"
                for spec in self.all_services
                if (grpc_port := service_grpc_port(spec, self.environ)) is not None
            },
        )
        if any(spec.uses_postgres for spec in self.selected):
            admin_dsn = self._postgres_admin_dsn()
            databases = {
                spec.name: ensure_service_database(admin_dsn, spec.name, self.secrets.postgres_dir)
                for spec in self.selected
                if spec.uses_postgres
            }
            wiring = replace(wiring, databases=databases)
        if any(spec.uses_nats for spec in self.selected):
            wiring = replace(wiring, nats_url=self._server_url("NATS_URL", NatsServer, self.options.nats_port))
        if any(spec.uses_redis for spec in self.selected):
            wiring = replace(wiring, redis_url=self._server_url("REDIS_URL", RedisServer, self.options.redis_port))
        if self._gateway_selected:
            wiring = replace(wiring, oidc_discovery_url=self._oidc_discovery_url())
        return wiring

    def _oidc_discovery_url(self) -> str:
        """The identity provider given by OIDC_DISCOVERY_URL, else a local one (a development tool only)."""
        if external := self.environ.get("OIDC_DISCOVERY_URL"):
            self._add_endpoint(OidcProviderServer.name, external, external=True)
            return external
        server = OidcProviderServer(self.options.data_dir / OidcProviderServer.name, self.options.host,
                                    self.options.oidc_port)  # fmt: skip
        self._start_server(server)
        self._add_endpoint(server.name, server.url, external=False)
        return f"http://{url_host(probe_host(server.host))}:{server.port}/.well-known/openid-configuration"

    def _postgres_admin_dsn(self) -> str:
        if external := self.environ.get("POSTGRES_URL"):
            self._add_endpoint("postgres", external, external=True)
            return external
        server = PostgresServer(self.options.data_dir / "postgres", self.options.host, self.options.postgres_port)
        self._start_server(server)
        self._add_endpoint(server.name, server.admin_dsn, external=False)
        return server.admin_dsn

    def _server_url(self, variable: str, server_type: type[NatsServer] | type[RedisServer], port: int) -> str:
        if external := self.environ.get(variable):
            self._add_endpoint(server_type.name, external, external=True)
            return external
        server = server_type(self.options.data_dir / server_type.name, self.options.host, port)
        self._start_server(server)
        self._add_endpoint(server.name, server.url, external=False)
        return server.url

    def _start_server(self, server: _LocalServer) -> None:
        self._check_stop()
        log.info("starting %s on %s (data in %s)", server.name, server.address, server.data_dir)
        self._started_servers[server.name] = server  # registered first: stopped even if start fails halfway
        server.start()

    def _add_endpoint(self, kind: str, url_or_dsn: str, external: bool) -> None:
        self.endpoints.append(ServerEndpoint(kind, display_address(url_or_dsn), external))

    def _supervise(self) -> None:
        readiness_deadline = time.monotonic() + READINESS_TIMEOUT
        reported = False
        while not self._stop_requested:
            now = time.monotonic()
            for service in self.services:
                service.supervise(now)
            if not reported:
                # A list, not a generator: every service is probed on every tick.
                all_ready = all([service.ready or service.check_readiness() for service in self.services])
                if all_ready or now > readiness_deadline:
                    _print(self._status_report())
                    reported = True
            time.sleep(_SUPERVISION_TICK)

    def _status_report(self) -> str:
        return status_report(
            self.services,
            self.endpoints,
            self.options.data_dir,
            self.secrets.caller_token_file(DEVELOPER_CALLER),
            login_url=self._login_url(),
        )

    def _login_url(self) -> str | None:
        gateway = next((service for service in self.services if service.name == GATEWAY), None)
        if gateway is None:
            return None
        base = gateway.environment.get("PUBLIC_BASE_URL") or gateway.address
        return base.rstrip("/") + "/login"

    def _stop(self) -> None:
        self._stop_requested = True  # no restarts from here on
        for service in self.services:
            service.signal_stop()
        deadline = time.monotonic() + SERVICE_STOP_TIMEOUT
        for service in self.services:
            service.wait_stopped(max(0.0, deadline - time.monotonic()))
        # Servers last, message bus and cache before the database.
        for name in (OidcProviderServer.name, "nats", "redis", "postgres"):
            if server := self._started_servers.get(name):
                try:
                    server.stop()
                except (ServerError, OSError) as error:
                    log.error("could not stop %s cleanly: %s", name, error)


def _print(text: str) -> None:
    # One write, so the block is not interleaved with the services' log lines.
    sys.stdout.write(text)
    sys.stdout.flush()


def _configure_logging() -> None:
    """Our own messages: short, human readable, `[up]`-prefixed, on stderr."""
    package_log = logging.getLogger("delinkcious.local")
    if not any(getattr(handler, "_delinkcious_up", False) for handler in package_log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[up] %(message)s"))
        handler._delinkcious_up = True  # type: ignore[attr-defined]
        package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    package_log.propagate = False


def up(argv: list[str], *, services: Sequence[ServiceFacts] | None = None) -> int:
    """Run the system until SIGINT/SIGTERM; `services` defaults to the catalogue."""
    try:
        options = parse_options(argv, os.environ, sys.stdout.isatty())
    except SystemExit as exit_request:  # --help, or a usage error already printed by argparse
        return int(exit_request.code or 0)
    _configure_logging()
    if services is None:
        from delinkcious.catalogue import SERVICES

        services = SERVICES
    try:
        runtime = LocalRuntime(options, services, os.environ)
    except ValueError as error:
        log.error("%s", error)
        return 2
    return runtime.run()


if __name__ == "__main__":
    sys.exit(up(sys.argv[1:]))
