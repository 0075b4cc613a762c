"""The status table `delinkcious up` prints once its services are ready (or the wait is over): each
service's public address and readiness, each shared server's address shown without user names or
passwords (marked when it is an existing, external one), the data directory, the developer's caller
token file, where to log in, and the closing "delinkcious is up" line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2.extensions
from delinkcious.local.supervisor import SupervisedService
from delinkcious.local.wiring import GATEWAY


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


def gateway_login_url(services: Sequence[SupervisedService]) -> str | None:
    """Where people log in: the gateway's public base URL (else its address) + /login; None without a gateway."""
    gateway = next((service for service in services if service.name == GATEWAY), None)
    if gateway is None:
        return None
    base = gateway.environment.get("PUBLIC_BASE_URL") or gateway.address
    return base.rstrip("/") + "/login"


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
