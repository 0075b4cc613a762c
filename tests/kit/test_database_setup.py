"""`delinkcious provision-databases` (the one-shot job of docker-compose and the Helm chart) against a real
PostgreSQL: each service gets a role and a database that only it can use, a rerun rotates the passwords,
and bad settings or a missing secret change nothing."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn


def provision(environment: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    """The job as containers run it, in a process of its own (it configures the process's logging). With names,
    those databases instead of the catalogue's, so the suite's own service databases stay as they are."""
    code = ("import sys; from delinkcious.kit.serving.database_setup import run_database_setup; "
            "sys.exit(run_database_setup(sys.argv[1:]))") if names else None
    command = [sys.executable, "-c", code, *names] if code else [sys.executable, "-m", "delinkcious.cli",
                                                                "provision-databases"]
    return subprocess.run(command, env={"PATH": os.environ["PATH"], **environment}, capture_output=True, text=True,
                          timeout=60)


def connect_as(admin_dsn: str, role: str, password: str):
    options = parse_dsn(admin_dsn)
    options.update(user=role, password=password, dbname=role)
    return psycopg2.connect(make_dsn(**options), connect_timeout=3)


@pytest.fixture
def job_environment(tmp_path, postgres_admin_dsn):
    names = [f"setup-{secrets.token_hex(3)}", f"setup-{secrets.token_hex(3)}"]
    passwords_dir = tmp_path / "database-passwords"
    passwords_dir.mkdir()
    for name in names:
        (passwords_dir / name).write_text(secrets.token_urlsafe(16) + "\n")
    environment = {"POSTGRES_ADMIN_URL": postgres_admin_dsn,  # a URL with the password: also accepted
                   "DATABASE_PASSWORDS_DIR": str(passwords_dir), "STARTUP_TIMEOUT": "10"}
    return names, passwords_dir, environment


def test_each_service_gets_a_database_only_its_role_can_use(job_environment, postgres_admin_dsn):
    (first, second), passwords_dir, environment = job_environment
    assert provision(environment, first, second).returncode == 0
    first_password = (passwords_dir / first).read_text().strip()
    with connect_as(postgres_admin_dsn, first, first_password) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_database()")
        assert cursor.fetchone() == (first, first)
    options = parse_dsn(postgres_admin_dsn)
    options.update(user=first, password=first_password, dbname=second)
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        psycopg2.connect(make_dsn(**options), connect_timeout=3)


def test_a_rerun_sets_the_passwords_from_the_secrets_again(job_environment, postgres_admin_dsn):
    (first, second), passwords_dir, environment = job_environment
    assert provision(environment, first, second).returncode == 0
    (passwords_dir / first).write_text("rotated-" + secrets.token_urlsafe(12))
    assert provision(environment, first, second).returncode == 0
    connect_as(postgres_admin_dsn, first, (passwords_dir / first).read_text().strip()).close()


def test_a_missing_password_changes_nothing(job_environment, postgres_admin_dsn):
    (first, second), passwords_dir, environment = job_environment
    (passwords_dir / second).unlink()
    result = provision(environment, first, second)
    assert result.returncode == 2
    assert f"{passwords_dir / second}" in result.stdout
    with psycopg2.connect(postgres_admin_dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (first, second))
        assert cursor.fetchone() == (0,)


def test_a_server_that_never_answers_is_exit_status_1(job_environment):
    names, _, environment = job_environment
    environment.update(POSTGRES_ADMIN_URL="postgresql://postgres@127.0.0.1:9/postgres", STARTUP_TIMEOUT="1")
    result = provision(environment, *names)
    assert result.returncode == 1
    assert "not reachable" in result.stdout


def test_the_command_names_missing_settings():
    result = provision({})
    assert result.returncode == 2
    assert "POSTGRES_ADMIN_URL" in result.stdout and "DATABASE_PASSWORDS_DIR" in result.stdout
