"""`delinkcious provision-databases` (the one-shot job of docker-compose and the Helm chart) against a real
PostgreSQL: each service gets a role and a database that only it can use, a rerun rotates the passwords,
and bad settings or a missing secret change nothing."""
from __future__ import annotations

import secrets

import psycopg2
import pytest
from delinkcious.kit.serving.database_setup import run_database_setup
from psycopg2.extensions import make_dsn, parse_dsn


def connect_as(admin_dsn: str, role: str, password: str):
    options = parse_dsn(admin_dsn)
    options.update(user=role, password=password, dbname=role)
    return psycopg2.connect(make_dsn(**options), connect_timeout=3)


@pytest.fixture
def job_environment(monkeypatch, tmp_path, postgres_admin_dsn):
    names = [f"setup-{secrets.token_hex(3)}", f"setup-{secrets.token_hex(3)}"]
    passwords_dir = tmp_path / "database-passwords"
    passwords_dir.mkdir()
    for name in names:
        (passwords_dir / name).write_text(secrets.token_urlsafe(16) + "\n")
    monkeypatch.setenv("POSTGRES_ADMIN_URL", postgres_admin_dsn)  # a URL with the password: also accepted
    monkeypatch.setenv("DATABASE_PASSWORDS_DIR", str(passwords_dir))
    monkeypatch.setenv("STARTUP_TIMEOUT", "10")
    return names, passwords_dir


def test_each_service_gets_a_database_only_its_role_can_use(job_environment, postgres_admin_dsn):
    (first, second), passwords_dir = job_environment
    assert run_database_setup([first, second]) == 0
    first_password = (passwords_dir / first).read_text().strip()
    with connect_as(postgres_admin_dsn, first, first_password) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_database()")
        assert cursor.fetchone() == (first, first)
    options = parse_dsn(postgres_admin_dsn)
    options.update(user=first, password=first_password, dbname=second)
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        psycopg2.connect(make_dsn(**options), connect_timeout=3)


def test_a_rerun_sets_the_passwords_from_the_secrets_again(job_environment, postgres_admin_dsn):
    (first, second), passwords_dir = job_environment
    assert run_database_setup([first, second]) == 0
    (passwords_dir / first).write_text("rotated-" + secrets.token_urlsafe(12))
    assert run_database_setup([first, second]) == 0
    connect_as(postgres_admin_dsn, first, (passwords_dir / first).read_text().strip()).close()


def test_a_missing_password_changes_nothing(job_environment, postgres_admin_dsn, capsys):
    (first, second), passwords_dir = job_environment
    (passwords_dir / second).unlink()
    assert run_database_setup([first, second]) == 2
    assert f"{passwords_dir / second}" in capsys.readouterr().out
    with psycopg2.connect(postgres_admin_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (first, second))
        assert cursor.fetchone() == (0,)


def test_a_server_that_never_answers_is_exit_status_1(job_environment, monkeypatch, capsys):
    monkeypatch.setenv("POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:9/postgres")
    monkeypatch.setenv("STARTUP_TIMEOUT", "1")
    assert run_database_setup(job_environment[0]) == 1
    assert "not reachable" in capsys.readouterr().out


def test_missing_settings_are_named(monkeypatch, capsys):
    monkeypatch.delenv("POSTGRES_ADMIN_URL", raising=False)
    monkeypatch.delenv("DATABASE_PASSWORDS_DIR", raising=False)
    assert run_database_setup(["link"]) == 2
    out = capsys.readouterr().out
    assert "POSTGRES_ADMIN_URL" in out and "DATABASE_PASSWORDS_DIR" in out
