"""A database of its own for each service that owns one: a LOGIN role and a database named after the
service, owned by that role and closed to PUBLIC, so no service can connect to another's data.

Run with a superuser's connection by `delinkcious up` for its local cluster and, as the one-shot
`delinkcious provision-databases`, by docker-compose and the Helm chart. Idempotent: every run (re)sets each
role's password from its secret, so the secret is the source of truth and rotating it takes one run.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ..observability.logs import get_logger
from .db import _connect_with_retry, build_dsn, describe_dsn

log = get_logger(__name__)


def provision_service_database(admin_connection: psycopg2.extensions.connection, name: str, password: str) -> None:
    """Make sure role and database `name` exist, the role logs in with `password`, and only it can connect."""
    admin_connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    with admin_connection.cursor() as cursor:
        role = sql.Identifier(name)
        # Send a SCRAM verifier, not the password: it never shows up in server logs.
        verifier = psycopg2.extensions.encrypt_password(password, name, admin_connection, "scram-sha-256")
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        verb = "ALTER" if cursor.fetchone() else "CREATE"
        cursor.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD %s").format(role), (verifier,))
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
        else:
            cursor.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(role, role))
        cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))


def provision_databases(
    admin_url: str, admin_password: str | None, passwords_dir: Path, names: Iterable[str], timeout: float
) -> None:
    """One database per name, each role's password read from `passwords_dir/<name>`; waits up to `timeout`
    seconds for the server. Every password is read before anything is changed, so a missing one changes nothing."""
    passwords = {}
    for name in names:
        path = passwords_dir / name
        try:
            passwords[name] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"DATABASE_PASSWORDS_DIR: cannot read {path}: {exc.strerror}") from exc
        if not passwords[name]:
            raise ValueError(f"DATABASE_PASSWORDS_DIR: {path} is empty")
    dsn = build_dsn(admin_url, admin_password)
    connection = _connect_with_retry(dsn, timeout)
    try:
        for name, password in passwords.items():
            provision_service_database(connection, name, password)
            log.info("database_provisioned", database=name, server=describe_dsn(dsn))
    finally:
        connection.close()
