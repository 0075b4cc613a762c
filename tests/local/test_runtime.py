"""The local runtime (`delinkcious up`): options, secrets, service environments, supervision."""

from __future__ import annotations

import contextlib
import json
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest
import redis
from delinkcious.catalogue import ServiceFacts
from delinkcious.local.options import default_data_dir, parse_options, select_services
from delinkcious.local.processes import recorded_process
from delinkcious.local.secrets import (
    DEVELOPER_CALLER,
    SecretsLayout,
    ensure_caller_tokens,
    ensure_gateway_secrets,
    ensure_page_token_secrets,
)
from delinkcious.local.servers import DatabaseAccess, OidcProviderServer, free_port
from delinkcious.local.status import ServerEndpoint, display_address, status_report
from delinkcious.local.supervisor import RestartBackoff, SupervisedService
from delinkcious.local.wiring import (
    ServiceWiring,
    grpc_address_variable,
    override_prefix,
    service_environment,
    service_grpc_port,
    service_port,
    service_url_variable,
)

from tests.support.jetstream import wait_until
from tests.support.servers import serving
from tests.support.up import UpProcess, inherited_environment, is_alive, listening

LINK = ServiceFacts(
    name="link", summary="stand-in", port=8081, uses_postgres=True, uses_nats=True, allowed_callers=("api-gateway",),
    signs_page_tokens=True,
)
LINK_CHECKER = ServiceFacts(name="link-checker", summary="stand-in", port=8085, uses_nats=True)
NEWS = ServiceFacts(name="news", summary="stand-in", port=8084, uses_redis=True, uses_nats=True)
SPECS = (LINK, LINK_CHECKER, NEWS)


def wiring(tmp_path: Path) -> ServiceWiring:
    secrets = SecretsLayout(tmp_path / "secrets")
    return ServiceWiring(
        host="127.0.0.1",
        log_format="json",
        secrets=secrets,
        service_names=tuple(spec.name for spec in SPECS),
        nats_url="nats://127.0.0.1:14222",
        redis_url="redis://127.0.0.1:16379/0",
        databases={"link": DatabaseAccess("postgresql://link@127.0.0.1:15432/link", secrets.postgres_dir / "link")},
    )


# --------------------------------------------------------------------------------------
# Options


def test_data_dir_defaults_in_order_of_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir({}) == tmp_path / ".local/share/delinkcious"
    assert default_data_dir({"XDG_DATA_HOME": "/xdg"}) == Path("/xdg/delinkcious")
    assert default_data_dir({"XDG_DATA_HOME": "/xdg", "DELINKCIOUS_DATA_DIR": "/data"}) == Path("/data")


def test_options_defaults_and_overrides() -> None:
    defaults = parse_options([], {"DELINKCIOUS_DATA_DIR": "/data"}, stdout_is_tty=True)
    assert (defaults.data_dir, defaults.host, defaults.only, defaults.log_format) == (
        Path("/data"),
        "127.0.0.1",
        (),
        "console",
    )
    assert (defaults.postgres_port, defaults.nats_port, defaults.redis_port) == (15432, 14222, 16379)
    assert defaults.oidc_port == 9400
    assert parse_options(["--oidc-port", "9401"], {}, False).oidc_port == 9401
    assert parse_options([], {}, stdout_is_tty=False).log_format == "json"
    chosen = parse_options(
        ["--only", "link", "--only", "news", "--postgres-port", "5433", "--log-format", "console"], {}, False
    )
    assert (chosen.only, chosen.postgres_port, chosen.log_format) == (("link", "news"), 5433, "console")


def test_only_selects_services_in_registry_order_and_rejects_unknown_names() -> None:
    assert select_services(SPECS, []) == list(SPECS)
    assert select_services(SPECS, ["news", "link"]) == [LINK, NEWS]
    with pytest.raises(ValueError, match="unknown service"):
        select_services(SPECS, ["lnk"])


# --------------------------------------------------------------------------------------
# Secrets


def test_caller_tokens_are_generated_once_and_private(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path / "secrets")
    callers = ["link", "news", DEVELOPER_CALLER]
    ensure_caller_tokens(layout, callers)
    first = {caller: layout.caller_token_file(caller).read_text() for caller in callers}
    ensure_caller_tokens(layout, callers)
    assert {caller: layout.caller_token_file(caller).read_text() for caller in callers} == first
    assert len(set(first.values())) == len(callers)
    assert stat.S_IMODE(layout.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.callers_dir.stat().st_mode) == 0o700
    for caller in callers:
        assert stat.S_IMODE(layout.caller_token_file(caller).stat().st_mode) == 0o600


def test_page_token_secrets_are_generated_once_one_per_service_and_private(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path / "secrets")
    services = ["link", "social-graph", "news"]
    ensure_page_token_secrets(layout, services)
    first = {service: layout.page_token_secret_file(service).read_text() for service in services}
    ensure_page_token_secrets(layout, services)
    assert {service: layout.page_token_secret_file(service).read_text() for service in services} == first
    assert len(set(first.values())) == len(services)
    assert all(len(value.strip()) >= 32 for value in first.values())  # what PAGE_TOKEN_SECRET requires
    assert stat.S_IMODE(layout.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.page_tokens_dir.stat().st_mode) == 0o700
    for service in services:
        assert stat.S_IMODE(layout.page_token_secret_file(service).stat().st_mode) == 0o600


# --------------------------------------------------------------------------------------
# Service environment


def test_service_environment_wires_dependencies_and_identity(tmp_path: Path) -> None:
    environment = service_environment(LINK, wiring(tmp_path), {"PATH": "/bin"})
    secrets = tmp_path / "secrets"
    assert environment["PATH"] == "/bin"
    assert environment["SERVICE_NAME"] == "link"
    assert (environment["HOST"], environment["PORT"], environment["LOG_FORMAT"]) == ("127.0.0.1", "8081", "json")
    assert environment["DATABASE_URL"] == "postgresql://link@127.0.0.1:15432/link"
    assert environment["DATABASE_PASSWORD_FILE"] == str(secrets / "postgres" / "link")
    assert environment["NATS_URL"] == "nats://127.0.0.1:14222"
    assert "REDIS_URL" not in environment
    assert environment["CALLER_TOKEN_FILE"] == str(secrets / "callers" / "link")
    assert environment["TRUSTED_CALLERS_DIR"] == str(secrets / "callers")
    assert environment["ALLOWED_CALLERS"] == "api-gateway,developer"
    assert environment["PAGE_TOKEN_SECRET_FILE"] == str(secrets / "page-tokens" / "link")


def test_service_environment_only_has_what_the_service_uses(tmp_path: Path) -> None:
    environment = service_environment(NEWS, wiring(tmp_path), {})
    assert environment["REDIS_URL"] == "redis://127.0.0.1:16379/0"
    assert "DATABASE_URL" not in environment and "DATABASE_PASSWORD_FILE" not in environment
    assert environment["ALLOWED_CALLERS"] == "developer"
    assert "PAGE_TOKEN_SECRET_FILE" not in environment  # this stand-in news signs no page tokens


def test_a_stray_page_token_secret_reaches_no_service(tmp_path: Path) -> None:
    base = {"PAGE_TOKEN_SECRET": "one-for-every-service-" + "x" * 20, "PAGE_TOKEN_SECRET_FILE": "/elsewhere"}
    link = service_environment(LINK, wiring(tmp_path), base)
    assert "PAGE_TOKEN_SECRET" not in link  # it would win over the file and be every service's
    assert link["PAGE_TOKEN_SECRET_FILE"] == str(tmp_path / "secrets" / "page-tokens" / "link")
    news = service_environment(NEWS, wiring(tmp_path), base)
    assert "PAGE_TOKEN_SECRET" not in news and "PAGE_TOKEN_SECRET_FILE" not in news
    # A service's own override still wins, as every override does.
    override = service_environment(LINK, wiring(tmp_path), {**base, "LINK__PAGE_TOKEN_SECRET_FILE": "/mine"})
    assert override["PAGE_TOKEN_SECRET_FILE"] == "/mine"


def test_server_level_and_stray_variables_do_not_reach_services(tmp_path: Path) -> None:
    base = {
        "POSTGRES_URL": "postgresql://postgres:secret@db/postgres",
        "REDIS_URL": "redis://elsewhere:6379/0",
        "NATS_URL": "nats://elsewhere:4222",
        "DATABASE_URL": "postgresql://stray@db/stray",
        "PORT": "1",
    }
    environment = service_environment(LINK, wiring(tmp_path), base)
    assert "POSTGRES_URL" not in environment
    assert "REDIS_URL" not in environment  # link does not use Redis
    assert environment["NATS_URL"] == "nats://127.0.0.1:14222"
    assert environment["DATABASE_URL"] == "postgresql://link@127.0.0.1:15432/link"
    assert environment["PORT"] == "8081"


def test_per_service_overrides_win_and_stay_with_their_service(tmp_path: Path) -> None:
    base = {
        "LINK__PORT": "9000",
        "LINK__MAX_LINKS_PER_USER": "5",
        "LINK__DATABASE_URL": "postgresql://link@other:5432/link",
        "LINK_CHECKER__ALLOW_PRIVATE_ADDRESSES": "true",
        "LINK__": "names nothing",
    }
    link = service_environment(LINK, wiring(tmp_path), base)
    assert link["PORT"] == "9000"
    assert link["MAX_LINKS_PER_USER"] == "5"
    assert link["DATABASE_URL"] == "postgresql://link@other:5432/link"
    assert "ALLOW_PRIVATE_ADDRESSES" not in link
    assert not any("__" in name for name in link)
    assert "" not in link

    checker = service_environment(LINK_CHECKER, wiring(tmp_path), base)
    assert checker["ALLOW_PRIVATE_ADDRESSES"] == "true"
    assert checker["PORT"] == "8085"
    assert "MAX_LINKS_PER_USER" not in checker


def test_override_prefix_turns_dashes_into_underscores() -> None:
    assert override_prefix("link-checker") == "LINK_CHECKER__"


def test_supervised_service_listens_where_its_environment_says(tmp_path: Path) -> None:
    environment = service_environment(LINK, wiring(tmp_path), {"LINK__PORT": "9000", "LINK__HOST": "0.0.0.0"})
    service = SupervisedService("link", ["true"], environment, tmp_path / "link.pid")
    assert (service.host, service.port, service.address) == ("0.0.0.0", 9000, "http://0.0.0.0:9000")


# --------------------------------------------------------------------------------------
# Supervision and report


def test_restart_backoff_doubles_to_a_cap_and_resets_after_a_stable_run() -> None:
    backoff = RestartBackoff()
    assert [backoff.delay_after(uptime=0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay_after(uptime=61) == 1
    assert backoff.delay_after(uptime=0.5) == 2


def test_addresses_are_displayed_without_credentials() -> None:
    assert (
        display_address("postgresql://postgres:secret@db.internal:5432/postgres")
        == "postgresql://db.internal:5432/postgres"
    )
    assert display_address("host=db port=5433 user=postgres password=secret dbname=app") == "db:5433/app"
    assert display_address("nats://user:pw@a:4222,nats://b:4222") == "nats://a:4222,nats://b:4222"
    assert display_address("redis://:pw@cache:6379/0") == "redis://cache:6379/0"


def test_status_report_ends_with_the_up_line(tmp_path: Path) -> None:
    ready = SupervisedService("link", ["true"], {"HOST": "127.0.0.1", "PORT": "8081"}, tmp_path / "a.pid")
    ready.ready = True
    waiting = SupervisedService("news", ["true"], {"HOST": "127.0.0.1", "PORT": "8084"}, tmp_path / "b.pid")
    servers = [
        ServerEndpoint("postgres", "127.0.0.1:15432", external=False),
        ServerEndpoint("nats", "nats://x:1", True),
    ]
    report = status_report([ready], servers, tmp_path, tmp_path / "developer").splitlines()
    assert report[0].split() == ["service", "address", "ready"]
    assert report[1].split() == ["link", "http://127.0.0.1:8081", "yes"]
    assert report[2].split() == ["postgres", "127.0.0.1:15432", "yes"]
    assert report[3].split() == ["nats", "nats://x:1", "(external)", "yes"]
    assert f"data dir: {tmp_path}" in report
    assert f"developer caller token: {tmp_path / 'developer'}" in report
    assert report[-1] == "delinkcious is up"
    last = status_report([ready, waiting], [], tmp_path, tmp_path / "developer").splitlines()[-1]
    assert last == "delinkcious is up (not ready: news)"


# --------------------------------------------------------------------------------------
# A whole `up` run with a stand-in service (real servers, real signals)

_DRIVER = """
import os
import sys
from delinkcious.catalogue import ServiceFacts
from delinkcious.local import runtime
from delinkcious.local.options import parse_options

standin, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
service = ServiceFacts(
    name="standin", summary="stand-in", port=port, uses_postgres=True, uses_redis=True, uses_nats=True,
    allowed_callers=("api-gateway",), signs_page_tokens=True,
)
runtime._configure_logging()
options = parse_options(argv, {}, stdout_is_tty=False)
environ = {"STANDIN__GREETING": "hello", **os.environ}
local = runtime.LocalRuntime(options, [service], environ, command_for=lambda name: [sys.executable, standin])
sys.exit(local.run())
"""


def standin_up(data_dir: Path, service_port: int, server_ports: tuple[int, int, int], crash_marker: Path,
               **standin_settings: str) -> UpProcess:
    postgres_port, nats_port, redis_port = server_ports
    command = [
        sys.executable, "-c", _DRIVER, str(Path(__file__).with_name("standin_service.py")), str(service_port),
        "--data-dir", str(data_dir), "--postgres-port", str(postgres_port),
        "--nats-port", str(nats_port), "--redis-port", str(redis_port),
    ]  # fmt: skip
    overrides = {f"STANDIN__{name}": value for name, value in standin_settings.items()}
    return UpProcess(command, {**inherited_environment(), "STANDIN__CRASH_MARKER": str(crash_marker), **overrides})


def readiness_report(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/readiness", timeout=5) as response:
        report: dict[str, Any] = json.load(response)
        return report


def readiness_once_up(up: UpProcess, port: int) -> tuple[dict[str, Any], int, str]:
    """Once `up` says the system is up, the readiness report on `port`; then `up` is stopped (in any case):
    the report, its exit code and its transcript."""
    try:
        up.wait_for_line("delinkcious is up")
        report = readiness_report(port)
    finally:
        code, transcript = up.stop()
    return report, code, transcript


def test_up_runs_supervises_and_stops_a_service_and_keeps_data_for_the_next_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    service_port = free_port()
    server_ports = (free_port(), free_port(), free_port())
    crash_marker = tmp_path / "crashed-once"

    first = standin_up(data_dir, service_port, server_ports, crash_marker)
    try:
        assert first.wait_for_line("delinkcious is up") == "delinkcious is up"
        report = readiness_report(service_port)
    finally:
        code, transcript = first.stop()
    assert code == 0, transcript
    assert "[up] standin exited with code 3, restarting in 1 s" in transcript
    assert report["postgres_starts"] == 1 and report["redis_starts"] == 1 and report["nats_jetstream"]
    assert report["caller_token_readable"]
    page_token_secret = data_dir / "secrets" / "page-tokens" / "standin"
    assert report["page_token_secret_file"] == str(page_token_secret)
    assert stat.S_IMODE(page_token_secret.stat().st_mode) == 0o600
    page_token_value = page_token_secret.read_text()
    assert report["environment"] == {
        "SERVICE_NAME": "standin",
        "LOG_FORMAT": "json",
        "ALLOWED_CALLERS": "api-gateway,developer",
        "GREETING": "hello",
        "POSTGRES_URL": None,
    }
    rows = [line.split() for line in first.output]
    assert ["standin", f"http://127.0.0.1:{service_port}", "yes"] in rows
    assert ["postgres", f"postgresql://127.0.0.1:{server_ports[0]}/postgres", "yes"] in rows
    assert ["nats", f"nats://127.0.0.1:{server_ports[1]}", "yes"] in rows
    assert ["redis", f"redis://127.0.0.1:{server_ports[2]}/0", "yes"] in rows
    # No gateway, so no identity provider and no gateway secrets.
    assert not (data_dir / "oidc-provider").exists()
    assert not (data_dir / "secrets" / "gateway-session-secret").exists()
    assert not any(row and row[0] == "oidc-provider" for row in rows)
    superuser_password = (data_dir / "postgres" / "superuser-password").read_text().strip()
    developer_token = (data_dir / "secrets" / "callers" / DEVELOPER_CALLER).read_text().strip()
    assert superuser_password not in transcript and developer_token not in transcript
    assert page_token_value.strip() not in transcript

    second = standin_up(data_dir, service_port, server_ports, crash_marker)
    report, code, transcript = readiness_once_up(second, service_port)
    assert code == 0, transcript
    assert (report["postgres_starts"], report["redis_starts"]) == (2, 2)
    assert (data_dir / "secrets" / "callers" / DEVELOPER_CALLER).read_text().strip() == developer_token
    assert page_token_secret.read_text() == page_token_value  # kept: the tokens clients hold stay valid


def test_callers_are_told_where_the_services_they_call_listen(tmp_path: Path) -> None:
    social = ServiceFacts(name="social-graph", summary="stand-in", port=8083, calls=("user",))
    user = ServiceFacts(name="user", summary="stand-in", port=8082)
    base_env = {"USER__PORT": "9999"}
    urls = {spec.name: f"http://127.0.0.1:{service_port(spec, base_env)}" for spec in (social, user)}
    environment = service_environment(social, replace(wiring(tmp_path), service_urls=urls), base_env)
    assert environment["USER_SERVICE_URL"] == "http://127.0.0.1:9999"
    assert service_url_variable("link-checker") == "LINK_CHECKER_SERVICE_URL"


# --------------------------------------------------------------------------------------
# Admin ports, gRPC addresses and the gateway's sign-in

GATEWAY = ServiceFacts(
    name="api-gateway",
    summary="stand-in",
    port=8080,
    admin_port=8090,
    uses_redis=True,
    calls=("link", "user", "social-graph", "news"),
)
USER = ServiceFacts(name="user", summary="stand-in", port=8082)
SOCIAL = ServiceFacts(name="social-graph", summary="stand-in", port=8083, calls=("user",))
NEWS_GRPC = replace(NEWS, grpc_port=9084)
ALL = (LINK, USER, SOCIAL, NEWS_GRPC, LINK_CHECKER, GATEWAY)
GATEWAY_ONLY_VARIABLES = (
    "AUTH_PROVIDER", "OIDC_DISCOVERY_URL", "OIDC_PROVIDER_NAME", "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET",
    "OAUTH_CLIENT_SECRET_FILE", "SESSION_SECRET", "SESSION_SECRET_FILE", "PUBLIC_BASE_URL",
)  # fmt: skip
DISCOVERY = "http://127.0.0.1:9400/.well-known/openid-configuration"


def full_wiring(tmp_path: Path, base_env: dict[str, str]) -> ServiceWiring:
    """Wiring as LocalRuntime builds it for every registry-like service."""
    return replace(
        wiring(tmp_path),
        service_names=tuple(spec.name for spec in ALL),
        service_urls={spec.name: f"http://127.0.0.1:{service_port(spec, base_env)}" for spec in ALL},
        grpc_addresses={
            spec.name: f"127.0.0.1:{port}" for spec in ALL if (port := service_grpc_port(spec, base_env)) is not None
        },
        oidc_discovery_url=DISCOVERY,
    )


def test_readiness_is_polled_on_the_admin_port_and_the_table_shows_the_public_one(tmp_path: Path) -> None:
    gateway = SupervisedService(
        "api-gateway", ["true"], service_environment(GATEWAY, full_wiring(tmp_path, {}), {}), tmp_path / "g.pid"
    )
    assert gateway.environment["ADMIN_PORT"] == "8090"
    assert gateway.readiness_url == "http://127.0.0.1:8090/healthz/readiness"
    assert gateway.address == "http://127.0.0.1:8080"

    base = {"API_GATEWAY__ADMIN_PORT": "9191", "API_GATEWAY__PORT": "9180", "API_GATEWAY__HOST": "0.0.0.0"}
    moved = service_environment(GATEWAY, full_wiring(tmp_path, base), base)
    service = SupervisedService("api-gateway", ["true"], moved, tmp_path / "g.pid")
    assert service.readiness_url == "http://127.0.0.1:9191/healthz/readiness"
    assert service.address == "http://0.0.0.0:9180"

    link = SupervisedService("link", ["true"], service_environment(LINK, full_wiring(tmp_path, {}), {}), tmp_path / "l")
    assert "ADMIN_PORT" not in link.environment
    assert link.readiness_url == "http://127.0.0.1:8081/healthz/readiness"


def test_a_stray_admin_or_grpc_port_does_not_reach_services(tmp_path: Path) -> None:
    base = {"ADMIN_PORT": "1", "GRPC_PORT": "2"}
    link = service_environment(LINK, full_wiring(tmp_path, base), base)
    assert "ADMIN_PORT" not in link and "GRPC_PORT" not in link
    assert service_environment(GATEWAY, full_wiring(tmp_path, base), base)["ADMIN_PORT"] == "8090"


def test_grpc_services_get_their_port_and_callers_their_address(tmp_path: Path) -> None:
    news = service_environment(NEWS_GRPC, full_wiring(tmp_path, {}), {})
    assert news["GRPC_PORT"] == "9084"
    gateway = service_environment(GATEWAY, full_wiring(tmp_path, {}), {})
    assert gateway["NEWS_GRPC_ADDRESS"] == "127.0.0.1:9084"
    assert "NEWS_SERVICE_URL" not in gateway
    assert gateway["LINK_SERVICE_URL"] == "http://127.0.0.1:8081"
    assert gateway["USER_SERVICE_URL"] == "http://127.0.0.1:8082"
    assert gateway["SOCIAL_GRAPH_SERVICE_URL"] == "http://127.0.0.1:8083"
    assert grpc_address_variable("news") == "NEWS_GRPC_ADDRESS"

    base = {"NEWS__GRPC_PORT": "19084", "NEWS_GRPC_ADDRESS": "stray:1", "LINK_SERVICE_URL": "http://stray"}
    assert service_environment(NEWS_GRPC, full_wiring(tmp_path, base), base)["GRPC_PORT"] == "19084"
    moved = service_environment(GATEWAY, full_wiring(tmp_path, base), base)
    assert moved["NEWS_GRPC_ADDRESS"] == "127.0.0.1:19084"
    assert moved["LINK_SERVICE_URL"] == "http://127.0.0.1:8081"
    checker = service_environment(LINK_CHECKER, full_wiring(tmp_path, base), base)
    assert "NEWS_GRPC_ADDRESS" not in checker and "LINK_SERVICE_URL" not in checker
    assert "GRPC_PORT" not in checker


def test_the_gateway_signs_people_in_with_the_local_identity_provider(tmp_path: Path) -> None:
    gateway = service_environment(GATEWAY, full_wiring(tmp_path, {}), {})
    secrets = tmp_path / "secrets"
    assert gateway["AUTH_PROVIDER"] == "oidc"
    assert gateway["OIDC_DISCOVERY_URL"] == DISCOVERY
    assert gateway["OIDC_PROVIDER_NAME"] == "local"
    assert gateway["OAUTH_CLIENT_ID"] == "delinkcious-local"
    assert gateway["OAUTH_CLIENT_SECRET_FILE"] == str(secrets / "oauth-client-secret")
    assert gateway["SESSION_SECRET_FILE"] == str(secrets / "gateway-session-secret")
    assert gateway["PUBLIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert gateway["REDIS_URL"] == "redis://127.0.0.1:16379/0"
    assert "OAUTH_CLIENT_SECRET" not in gateway and "SESSION_SECRET" not in gateway
    assert "DATABASE_URL" not in gateway and "NATS_URL" not in gateway


def test_the_public_base_url_follows_the_gateway_port_and_overrides_win(tmp_path: Path) -> None:
    base = {"API_GATEWAY__PORT": "18080", "API_GATEWAY__OIDC_PROVIDER_NAME": "keycloak",
            "API_GATEWAY__OAUTH_CLIENT_ID": "mine"}  # fmt: skip
    gateway = service_environment(GATEWAY, full_wiring(tmp_path, base), base)
    assert gateway["PUBLIC_BASE_URL"] == "http://127.0.0.1:18080"
    assert gateway["PORT"] == "18080"
    assert (gateway["OIDC_PROVIDER_NAME"], gateway["OAUTH_CLIENT_ID"]) == ("keycloak", "mine")
    wide = replace(full_wiring(tmp_path, {}), host="0.0.0.0")
    assert service_environment(GATEWAY, wide, {})["PUBLIC_BASE_URL"] == "http://127.0.0.1:8080"
    explicit = {"API_GATEWAY__PUBLIC_BASE_URL": "https://dev.example"}
    assert service_environment(GATEWAY, full_wiring(tmp_path, {}), explicit)["PUBLIC_BASE_URL"] == "https://dev.example"


def test_stray_sign_in_variables_reach_no_service(tmp_path: Path) -> None:
    base = {name: f"stray-{name}" for name in GATEWAY_ONLY_VARIABLES}
    for spec in (LINK, USER, SOCIAL, NEWS_GRPC, LINK_CHECKER):
        environment = service_environment(spec, full_wiring(tmp_path, base), base)
        assert not set(GATEWAY_ONLY_VARIABLES) & set(environment), spec.name
    gateway = service_environment(GATEWAY, full_wiring(tmp_path, base), base)
    assert not any(value.startswith("stray-") for value in gateway.values())
    assert "OAUTH_CLIENT_SECRET" not in gateway and "SESSION_SECRET" not in gateway


def test_gateway_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path / "secrets")
    ensure_gateway_secrets(layout)
    files = (layout.oauth_client_secret_file, layout.session_secret_file)
    first = [path.read_text() for path in files]
    ensure_gateway_secrets(layout)
    assert [path.read_text() for path in files] == first
    assert first[0] != first[1] and all(len(value.strip()) >= 32 for value in first)
    assert stat.S_IMODE(layout.root.stat().st_mode) == 0o700
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_status_report_shows_the_login_url(tmp_path: Path) -> None:
    gateway = SupervisedService(
        "api-gateway", ["true"], service_environment(GATEWAY, full_wiring(tmp_path, {}), {}), tmp_path / "g.pid"
    )
    gateway.ready = True
    provider = ServerEndpoint("oidc-provider", "http://127.0.0.1:9400", external=False)
    report = status_report([gateway], [provider], tmp_path, tmp_path / "developer", "http://127.0.0.1:8080/login")
    lines = report.splitlines()
    assert lines[1].split() == ["api-gateway", "http://127.0.0.1:8080", "yes"]
    assert lines[2].split() == ["oidc-provider", "http://127.0.0.1:9400", "yes"]
    assert "log in at: http://127.0.0.1:8080/login" in lines
    assert lines[-1] == "delinkcious is up"


_GATEWAY_DRIVER = """
import os
import sys
from delinkcious.catalogue import ServiceFacts
from delinkcious.local import runtime
from delinkcious.local.options import parse_options

standin, port, admin_port, argv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
news = ServiceFacts(name="news", summary="stand-in", port=8084, grpc_port=9084)
gateway = ServiceFacts(name="api-gateway", summary="stand-in", port=port, admin_port=admin_port, calls=("news",))
runtime._configure_logging()
options = parse_options(argv, {}, stdout_is_tty=False)
local = runtime.LocalRuntime(
    options, [news, gateway], dict(os.environ), command_for=lambda name: [sys.executable, standin]
)
sys.exit(local.run())
"""


@pytest.fixture
def external_provider(tmp_path: Path) -> Iterator[OidcProviderServer]:
    with serving(OidcProviderServer(tmp_path / "external-provider")) as server:
        yield server


def gateway_up(data_dir: Path, port: int, admin_port: int, oidc_port: int, environment: dict[str, str]) -> UpProcess:
    """`up --only api-gateway` of a stand-in gateway that calls a gRPC news service."""
    command = [
        sys.executable, "-c", _GATEWAY_DRIVER, str(Path(__file__).with_name("standin_gateway.py")),
        str(port), str(admin_port), "--only", "api-gateway", "--data-dir", str(data_dir),
        "--oidc-port", str(oidc_port),
    ]  # fmt: skip
    return UpProcess(command, {**inherited_environment(), **environment})


def test_up_starts_the_identity_provider_for_the_gateway_and_polls_its_admin_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port, admin_port, oidc_port, news_grpc_port = free_port(), free_port(), free_port(), free_port()
    environment = {"NEWS__GRPC_PORT": str(news_grpc_port), "SESSION_SECRET": "stray, must not reach the gateway"}
    up = gateway_up(data_dir, port, admin_port, oidc_port, environment)
    report, code, transcript = readiness_once_up(up, admin_port)
    assert code == 0, transcript
    provider = f"http://127.0.0.1:{oidc_port}"
    assert report["issuer"] == provider
    assert report["secrets_readable"]
    assert report["environment"] == {
        "AUTH_PROVIDER": "oidc",
        "OIDC_DISCOVERY_URL": f"{provider}/.well-known/openid-configuration",
        "OIDC_PROVIDER_NAME": "local",
        "OAUTH_CLIENT_ID": "delinkcious-local",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "NEWS_GRPC_ADDRESS": f"127.0.0.1:{news_grpc_port}",
        "LINK_SERVICE_URL": None,
        "ADMIN_PORT": str(admin_port),
    }
    rows = [line.split() for line in up.output]
    assert ["api-gateway", f"http://127.0.0.1:{port}", "yes"] in rows
    assert ["oidc-provider", provider, "yes"] in rows
    assert f"log in at: http://127.0.0.1:{port}/login" in up.output
    assert not any(row and row[0] in ("postgres", "nats", "redis") for row in rows)
    for secret in ("oauth-client-secret", "gateway-session-secret"):
        value = (data_dir / "secrets" / secret).read_text().strip()
        assert value not in transcript
    # The provider was stopped with everything else.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{provider}/.well-known/openid-configuration", timeout=2)

    assert (data_dir / "oidc-provider" / "oidc-provider.log").exists()


def test_up_uses_the_identity_provider_named_by_oidc_discovery_url(
    tmp_path: Path, external_provider: OidcProviderServer
) -> None:
    data_dir = tmp_path / "data"
    port, admin_port = free_port(), free_port()
    up = gateway_up(data_dir, port, admin_port, free_port(), {"OIDC_DISCOVERY_URL": external_provider.discovery_url})
    report, code, transcript = readiness_once_up(up, admin_port)
    assert code == 0, transcript
    assert report["issuer"] == external_provider.url
    assert report["environment"]["OIDC_DISCOVERY_URL"] == external_provider.discovery_url
    rows = [line.split() for line in up.output]
    assert ["oidc-provider", external_provider.discovery_url, "(external)", "yes"] in rows
    assert not (data_dir / "oidc-provider").exists()
    assert external_provider.running


# --------------------------------------------------------------------------------------
# Stopping in time, dying with `up`, leftovers and crashed servers (real servers, real signals)

SERVERS = ("postgres", "nats", "redis")


def pid_files(data_dir: Path) -> dict[str, Path]:
    """Where `up` records its children: each server in its own directory, the services under run/."""
    return {**{name: data_dir / name / f"{name}.pid" for name in SERVERS}, "standin": data_dir / "run" / "standin.pid"}


def recorded_children(data_dir: Path) -> dict[str, psutil.Process]:
    children = {name: recorded_process(path) for name, path in pid_files(data_dir).items()}
    assert all(children.values()), children
    return {name: process for name, process in children.items() if process is not None}


def kill_all(processes: Iterator[psutil.Process] | list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


@pytest.fixture
def up_ports(tmp_path: Path) -> tuple[Path, int, tuple[int, int, int], Path]:
    """A data directory, the stand-in's port, the servers' ports and a crash marker already there (no crash)."""
    marker = tmp_path / "crashed-once"
    marker.touch()
    return tmp_path / "data", free_port(), (free_port(), free_port(), free_port()), marker


def test_up_killed_hard_takes_its_servers_and_services_with_it(up_ports) -> None:
    data_dir, service_port, server_ports, marker = up_ports
    first = standin_up(data_dir, service_port, server_ports, marker)
    children: dict[str, psutil.Process] = {}
    try:
        first.wait_for_line("delinkcious is up")
        children = recorded_children(data_dir)
        first.process.kill()  # SIGKILL: `up` stops nothing itself
        first.process.wait(10)
        assert wait_until(lambda: not any(is_alive(process) for process in children.values()), timeout=15), {
            name: process.pid for name, process in children.items() if is_alive(process)}
        assert not any(listening(port) for port in (service_port, *server_ports))
    finally:
        kill_all(list(children.values()))
        if first.process.poll() is None:
            first.process.kill()

    second = standin_up(data_dir, service_port, server_ports, marker)
    report, code, transcript = readiness_once_up(second, service_port)
    assert code == 0, transcript
    assert (report["postgres_starts"], report["redis_starts"]) == (2, 2)  # same data, same servers' ports


def test_up_stops_a_service_that_will_not_stop_in_time_and_the_next_up_stops_a_leftover(up_ports) -> None:
    """A service stuck in its work ignores SIGTERM: `up` kills it at its deadline and says so, all within 30 s;
    after `up` itself was killed hard, the stuck service (deaf to the signal it got) is a leftover holding its
    port, which the next `up` stops through its pid file before starting the service again."""
    data_dir, service_port, server_ports, marker = up_ports
    first = standin_up(data_dir, service_port, server_ports, marker, IGNORE_SIGTERM="1")
    stuck: dict[str, psutil.Process] = {}
    try:
        first.wait_for_line("delinkcious is up")
        stuck = recorded_children(data_dir)
        first.process.kill()
        first.process.wait(10)
        servers = [stuck[name] for name in SERVERS]
        assert wait_until(lambda: not any(is_alive(process) for process in servers), timeout=15)
        assert is_alive(stuck["standin"]) and listening(service_port)  # the leftover

        second = standin_up(data_dir, service_port, server_ports, marker, IGNORE_SIGTERM="1")
        try:
            second.wait_for_line("delinkcious is up", timeout=90)
            assert not is_alive(stuck["standin"])
            assert any(line.startswith(f"[up] stopping leftover process {stuck['standin'].pid} ")
                       for line in second.output), second.output
            restarted = recorded_process(pid_files(data_dir)["standin"])
            assert restarted is not None and restarted.pid != stuck["standin"].pid
            started = time.monotonic()
            code, transcript = second.stop()
            took = time.monotonic() - started
        finally:
            if second.process.poll() is None:
                second.process.kill()
        assert code == 0, transcript
        assert took < 30, transcript
        assert "[up] standin did not stop within 15 s of SIGTERM: killing it (SIGKILL)" in transcript
        assert not is_alive(restarted)
        assert not any(listening(port) for port in (service_port, *server_ports))
    finally:
        kill_all(list(stuck.values()))
        if first.process.poll() is None:
            first.process.kill()


def test_up_restarts_a_crashed_server(up_ports) -> None:
    data_dir, service_port, server_ports, marker = up_ports
    up = standin_up(data_dir, service_port, server_ports, marker)
    try:
        up.wait_for_line("delinkcious is up")
        for name, port in zip(SERVERS, server_ports, strict=True):
            crashed = recorded_process(pid_files(data_dir)[name])
            assert crashed is not None
            crashed.kill()
            up.wait_for_line(f"[up] {name} exited with code -9, restarting in 1 s", timeout=20)
            up.wait_for_line(f"[up] {name} is ready again on 127.0.0.1:{port}", timeout=60)
            restarted = recorded_process(pid_files(data_dir)[name])
            assert restarted is not None and restarted.pid != crashed.pid
        superuser = (data_dir / "postgres" / "superuser-password").read_text().strip()
        connection = psycopg2.connect(host="127.0.0.1", port=server_ports[0], user="postgres", password=superuser,
                                      dbname="standin", connect_timeout=5)
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM starts")  # the data survived the crash
            assert cursor.fetchone() == (1,)
        assert redis.Redis(port=server_ports[2], socket_timeout=5).get("starts") == b"1"
    finally:
        code, transcript = up.stop()
    assert code == 0, transcript


_PARENT = """
import sys
from pathlib import Path
from delinkcious.local.servers import OidcProviderServer

server = OidcProviderServer(Path(sys.argv[1]), port=int(sys.argv[2]))
server.start()
print(server.pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_the_identity_provider_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path / "provider"), str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    provider: psutil.Process | None = None
    try:
        assert parent.stdout is not None
        provider = psutil.Process(int(parent.stdout.readline()))
        assert listening(port)
        parent.kill()
        parent.wait(10)
        assert wait_until(lambda: not is_alive(provider), timeout=15)
        assert not listening(port)
    finally:
        if parent.poll() is None:
            parent.kill()
        if provider is not None:
            kill_all([provider])
