"""Real PostgreSQL, NATS (JetStream) and Redis servers, and a local OIDC identity provider,
from pip-installed packages.

Used by `delinkcious up` and by the test suite, so neither needs Docker nor
system packages. Each server is a child process listening on one host:port,
keeps its data, log and pid file in the `data_dir` it is given, and survives a
stop()/start() cycle with its data intact (the identity provider, a development
tool, keeps its state in memory only). One module per server; `base` holds what
they share, and this package names what callers use.
"""

from __future__ import annotations

from delinkcious.local.secrets import ensure_secret_file
from delinkcious.local.servers.base import ServerError, free_port, url_host
from delinkcious.local.servers.nats import NatsServer
from delinkcious.local.servers.oidc import OidcProviderServer
from delinkcious.local.servers.postgres import DatabaseAccess, PostgresServer, ensure_service_database
from delinkcious.local.servers.redis import RedisServer

__all__ = [
    "DatabaseAccess",
    "NatsServer",
    "OidcProviderServer",
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "ensure_secret_file",
    "ensure_service_database",
    "free_port",
    "url_host",
]
