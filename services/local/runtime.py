"""`delinkcious up`: the whole system on one machine, no Docker.

`LocalRuntime` is one run: it starts PostgreSQL, NATS (JetStream) and Redis from
pip-installed packages (unless POSTGRES_URL / NATS_URL / REDIS_URL point at
existing servers), and a local OIDC identity provider for the API gateway (unless
OIDC_DISCOVERY_URL names one), gives every service its own database role, caller
token, page-token secret (where it signs page tokens) and environment, runs each
service as a supervised child process, prints one status table once they are
ready, and on SIGINT/SIGTERM stops the services first and the servers last, all
within 30 s (what does not stop in time is killed, and `up` says so). A server
that crashes is restarted like a service. The children die with `up` even when
it is killed (SIGKILL) on Linux; anywhere, the next `up` stops what a killed one
left running (pid files in the data directory). All state lives in one data
directory, so the next `up` finds it as it was. With --monitoring it also runs
Prometheus, scraping every service it started (services/local/monitoring.py), as
one more server. `up(argv)` is the command that builds and runs it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType

import psycopg2
from delinkcious.catalogue import SERVICES, ServiceFacts
from delinkcious.local.monitoring import (
    RULES_FILE,
    PrometheusServer,
    existing_rules_file,
    find_prometheus,
    missing_prometheus_advice,
    prometheus_config,
    scrape_targets,
)
from delinkcious.local.options import Options, parse_options, select_services
from delinkcious.local.secrets import (
    DEVELOPER_CALLER,
    SecretsLayout,
    ensure_caller_tokens,
    ensure_gateway_secrets,
    ensure_page_token_secrets,
)
from delinkcious.local.servers import (
    NatsServer,
    OidcProviderServer,
    PostgresServer,
    RedisServer,
    ServerError,
    ensure_service_database,
)
from delinkcious.local.servers.base import Server, StartAbandoned
from delinkcious.local.status import ServerEndpoint, display_address, gateway_login_url, status_report
from delinkcious.local.supervisor import SupervisedServer, SupervisedService, check_all_ready, stop_services
from delinkcious.local.wiring import GATEWAY, ServiceWiring, service_command, service_environment, services_wiring

log = logging.getLogger(__name__)

READINESS_TIMEOUT = 120.0
_SUPERVISION_TICK = 0.2
# Servers stop last, all at once once the services are gone, each killed if it has not stopped in this time
# (after SERVICE_STOP_TIMEOUT for the services: the whole stop stays under 30 s).
SERVER_STOP_TIMEOUT = 10.0
_SERVER_STOP_ORDER = (
    PrometheusServer.name,
    OidcProviderServer.name,
    NatsServer.name,
    RedisServer.name,
    PostgresServer.name,
)


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
        self._started_servers: dict[str, Server] = {}
        self._supervised_servers: list[SupervisedServer] = []
        self._stop_requested = False

    def run(self) -> int:
        with _stop_signals(self._request_stop):
            try:
                self._start()
                self._supervise()
                return 0
            except (_StopRequested, StartAbandoned):
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
        ensure_page_token_secrets(self.secrets, [spec.name for spec in self.selected if spec.signs_page_tokens])
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
        if self.options.monitoring:
            self._start_prometheus()

    @property
    def _gateway_selected(self) -> bool:
        return any(spec.name == GATEWAY for spec in self.selected)

    def _start_servers(self) -> ServiceWiring:
        wiring = services_wiring(
            self.all_services, self.options.host, self.options.log_format, self.secrets, self.environ
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
        return server.reachable_discovery_url

    def _postgres_admin_dsn(self) -> str:
        if external := self.environ.get("POSTGRES_URL"):
            self._add_endpoint(PostgresServer.name, external, external=True)
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

    def _start_server(self, server: Server) -> None:
        self._check_stop()
        log.info("starting %s on %s (data in %s)", server.name, server.address, server.data_dir)
        self._started_servers[server.name] = server  # registered first: stopped even if start fails halfway
        server.start(abandon=lambda: self._stop_requested)
        self._supervised_servers.append(SupervisedServer(server))

    def _start_prometheus(self) -> None:
        """Prometheus scraping the services just started; without the binary, how to get it (not an error)."""
        executable = find_prometheus(self.environ)
        if executable is None:
            log.warning("%s", missing_prometheus_advice(self.environ))
            return
        rules_file = existing_rules_file()
        if rules_file is None:
            log.warning("prometheus runs without alerting rules: %s is not there", RULES_FILE)
        config = prometheus_config(scrape_targets(self.services), rules_file)
        server = PrometheusServer(executable, config, self.options.data_dir / PrometheusServer.name,
                                  self.options.host, self.options.prometheus_port)  # fmt: skip
        self._start_server(server)
        self._add_endpoint(server.name, server.url, external=False)

    def _add_endpoint(self, kind: str, url_or_dsn: str, external: bool) -> None:
        self.endpoints.append(ServerEndpoint(kind, display_address(url_or_dsn), external))

    def _supervise(self) -> None:
        readiness_deadline = time.monotonic() + READINESS_TIMEOUT
        reported = False
        while not self._stop_requested:
            now = time.monotonic()
            for server in self._supervised_servers:
                server.supervise(now)
            for service in self.services:
                service.supervise(now)
            if not reported and (check_all_ready(self.services) or now > readiness_deadline):
                _print(self._status_report())
                reported = True
            time.sleep(_SUPERVISION_TICK)

    def _status_report(self) -> str:
        return status_report(
            self.services,
            self.endpoints,
            self.options.data_dir,
            self.secrets.caller_token_file(DEVELOPER_CALLER),
            login_url=gateway_login_url(self.services),
        )

    def _stop(self) -> None:
        self._stop_requested = True  # no restarts from here on
        stop_services(self.services)
        servers = [self._started_servers[name] for name in _SERVER_STOP_ORDER if name in self._started_servers]
        for server in servers:
            server.signal_stop()
        deadline = time.monotonic() + SERVER_STOP_TIMEOUT
        for server in servers:
            try:
                server.wait_stopped(max(0.0, deadline - time.monotonic()))
            except (ServerError, OSError) as error:
                log.error("could not stop %s cleanly: %s", server.name, error)


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
    try:
        runtime = LocalRuntime(options, SERVICES if services is None else services, os.environ)
    except ValueError as error:
        log.error("%s", error)
        return 2
    return runtime.run()


if __name__ == "__main__":
    sys.exit(up(sys.argv[1:]))
