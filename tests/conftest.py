"""Real servers for the whole suite: PostgreSQL and NATS JetStream are started from the pip
packages unless TEST_POSTGRES_URL (an admin DSN) / TEST_NATS_URL point at running ones."""
from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from delinkcious.local.servers import NatsServer, PostgresServer, RedisServer, ensure_service_database

from tests.support.servers import serving
from tests.support.services import ServiceEnvironment


def pytest_configure(config: pytest.Config) -> None:
    # A stopped run (CI's time limit, `kill`) unwinds like Ctrl-C, so the fixtures' teardown stops the servers
    # and services the suite started; pytest's default on SIGTERM is to die with them still running.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _session_server(configured_variable: str, server_class, factory: pytest.TempPathFactory, address):
    """A server for the whole session, unless `configured_variable` names one that already runs."""
    configured = os.environ.get(configured_variable)
    if configured:
        yield configured
        return
    with serving(server_class(factory.mktemp(server_class.name))) as server:
        yield address(server)


@pytest.fixture(scope="session")
def postgres_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _session_server("TEST_POSTGRES_URL", PostgresServer, tmp_path_factory, lambda s: s.admin_dsn)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _session_server("TEST_NATS_URL", NatsServer, tmp_path_factory, lambda s: s.url)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _session_server("TEST_REDIS_URL", RedisServer, tmp_path_factory, lambda s: s.url)


@pytest.fixture
def private_nats(tmp_path: Path):
    """A NATS server of the test's own, which it may stop and start."""
    with serving(NatsServer(tmp_path / "nats")) as server:
        yield server


@pytest.fixture
def private_redis(tmp_path: Path):
    """A Redis server of the test's own, which it may stop and start."""
    with serving(RedisServer(tmp_path / "redis")) as server:
        yield server


@pytest.fixture
def private_postgres(tmp_path: Path):
    """A PostgreSQL server of the test's own, which it may stop and start."""
    with serving(PostgresServer(tmp_path / "postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture(scope="session")
def callers_dir(secrets_dir: Path) -> Path:
    """Caller tokens as a Kubernetes secret volume would hold them: one file per caller."""
    directory = secrets_dir / "callers"
    directory.mkdir()
    for caller in ("api-gateway", "news", "test-outsider"):
        (directory / caller).write_text(secrets.token_urlsafe(32))
    return directory


@pytest.fixture(scope="session")
def service_environment(postgres_admin_dsn: str, nats_url: str, redis_url: str, secrets_dir: Path,
                        callers_dir: Path) -> ServiceEnvironment:
    return ServiceEnvironment(
        postgres_admin_dsn=postgres_admin_dsn,
        nats_url=nats_url,
        redis_url=redis_url,
        secrets_dir=secrets_dir,
        callers_dir=callers_dir,
        ensure_database=ensure_service_database,
    )
