"""The pip-installed servers the local runtime and the test suite run on: real PostgreSQL, NATS, Redis,
and the local OIDC identity provider."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
import psycopg2
import pytest
import redis
import requests
from delinkcious.local.servers import (
    DatabaseAccess,
    NatsServer,
    OidcProviderServer,
    PostgresServer,
    RedisServer,
    free_port,
)

from tests.support.servers import serving


def connect_as_service(access: DatabaseAccess, dbname: str | None = None) -> psycopg2.extensions.connection:
    """Connect the way a service does: the DSN plus the password from its file."""
    if dbname is None:
        return psycopg2.connect(access.dsn, password=access.read_password())
    return psycopg2.connect(access.dsn, password=access.read_password(), dbname=dbname)


def query_one(connection: psycopg2.extensions.connection, statement: str) -> tuple[object, ...] | None:
    with connection, connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchone()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with serving(PostgresServer(tmp_path_factory.mktemp("postgres"))) as server:
        yield server


@pytest.fixture
def role_secrets_dir(tmp_path: Path) -> Path:
    return tmp_path / "secrets"


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Callers take several ports before binding any (up's servers and services); the OS alone may offer the same
    unbound port again, so two of them would collide."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))


def test_admin_dsn_connects_as_superuser(postgres: PostgresServer) -> None:
    connection = psycopg2.connect(postgres.admin_dsn)
    try:
        assert query_one(connection, "SELECT current_setting('is_superuser')") == ("on",)
    finally:
        connection.close()


def test_service_database_keeps_rows_across_restart(postgres: PostgresServer, role_secrets_dir: Path) -> None:
    access = postgres.ensure_database("link", role_secrets_dir)
    assert access.password_file == role_secrets_dir / "link"
    assert access.read_password() not in access.dsn
    assert access.dsn == f"postgresql://link@127.0.0.1:{postgres.port}/link"
    assert stat.S_IMODE(access.password_file.stat().st_mode) == 0o600
    connection = connect_as_service(access)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE links (url text PRIMARY KEY)")
            cursor.execute("INSERT INTO links VALUES ('https://example.org/')")
    finally:
        connection.close()

    postgres.stop()
    assert not postgres.running
    postgres.start()

    again = postgres.ensure_database("link", role_secrets_dir)
    assert again == access
    connection = connect_as_service(again)
    try:
        assert query_one(connection, "SELECT url FROM links") == ("https://example.org/",)
        assert query_one(connection, "SELECT current_setting('is_superuser')") == ("off",)
    finally:
        connection.close()


def test_service_role_cannot_connect_to_another_service_database(postgres: PostgresServer, role_secrets_dir: Path) -> None:
    link = postgres.ensure_database("link-isolated", role_secrets_dir)
    postgres.ensure_database("social-graph", role_secrets_dir)
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_as_service(link, dbname="social-graph")


def test_existing_role_takes_the_password_of_a_new_secrets_file(postgres: PostgresServer, tmp_path: Path) -> None:
    first = postgres.ensure_database("user", tmp_path / "first")
    second = postgres.ensure_database("user", tmp_path / "second")
    assert first.read_password() != second.read_password()
    connect_as_service(second).close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect_as_service(first)


@contextmanager
def successor(previous: PostgresServer) -> Iterator[PostgresServer]:
    """A new PostgresServer on `previous`'s data dir and port, started; both are stopped at the end."""
    server = PostgresServer(previous.data_dir, port=previous.port)
    try:
        server.start(timeout=20)
        yield server
    finally:
        server.stop()
        previous.stop()


def test_postgres_starts_after_its_previous_run_was_killed(tmp_path: Path) -> None:
    killed = PostgresServer(tmp_path / "postgres")
    killed.start()
    assert killed.pid is not None
    os.killpg(killed.pid, signal.SIGKILL)  # leaves postmaster.pid behind
    with successor(killed) as restarted:
        psycopg2.connect(restarted.admin_dsn).close()


def test_postgres_start_stops_a_leftover_server_on_the_same_data_dir(tmp_path: Path) -> None:
    # As after `up` was SIGKILLed: its server still runs and holds the data dir and the port.
    leftover = PostgresServer(tmp_path / "postgres")
    leftover.start()
    with successor(leftover) as fresh:
        assert not leftover.running
        psycopg2.connect(fresh.admin_dsn).close()


def test_nats_jetstream_messages_survive_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")

    async def publish() -> None:
        client = await nats.connect(server.url)
        try:
            jetstream = client.jetstream()
            await jetstream.add_stream(name="EVENTS", subjects=["events.>"])
            await jetstream.publish("events.added", b"hello")
        finally:
            await client.close()

    async def first_message() -> bytes:
        client = await nats.connect(server.url)
        try:
            return (await client.jetstream().get_msg("EVENTS", 1)).data or b""
        finally:
            await client.close()

    with serving(server):
        assert server.url == f"nats://127.0.0.1:{server.port}"
        asyncio.run(publish())
        server.stop()
        assert not server.running
        server.start()
        assert asyncio.run(first_message()) == b"hello"


def test_redis_values_survive_restart(tmp_path: Path) -> None:
    with serving(RedisServer(tmp_path / "redis")) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        redis.Redis.from_url(server.url).set("feed", "kept")
        server.stop()
        assert not server.running
        server.start()
        assert redis.Redis.from_url(server.url).get("feed") == b"kept"
        assert (tmp_path / "redis" / "appendonly.aof").exists()


def test_start_and_stop_are_idempotent(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
        pid = server.pid
        server.start()
        assert server.pid == pid
    finally:
        server.stop()
        server.stop()
    assert not server.running


def test_oidc_provider_serves_its_discovery_document_until_stopped(tmp_path: Path) -> None:
    with serving(OidcProviderServer(tmp_path / "oidc-provider")) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.discovery_url == f"{server.url}/.well-known/openid-configuration"
        document = requests.get(server.discovery_url, timeout=5).json()
        assert document["issuer"] == server.url
        assert document["authorization_endpoint"].startswith(server.url + "/")
        assert server.pid_file.exists()
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(server.discovery_url, timeout=5)
