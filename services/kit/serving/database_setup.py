"""`delinkcious provision-databases`: the one-shot job that gives each service that owns a database its
role and database on a shared PostgreSQL server (docker-compose's `database-setup`, the Helm chart's Job).
Only this job holds the superuser's password; the services get their own role's password alone."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from ..core.errors import Unavailable
from ..observability.logs import configure_logging, get_logger
from ..postgres.provisioning import provision_databases
from .config import ConfigurationError, PostgresUrl, ProcessSettings, load_settings

JOB_NAME = "database-setup"


class DatabaseSetupSettings(ProcessSettings):
    postgres_admin_url: PostgresUrl = Field(description=(
        "The server, as a role that may create roles and databases: `postgresql://postgres@postgres:5432/postgres`. "
        "Leave the password out of the URL."))
    postgres_admin_password: SecretStr | None = Field(None, description="That role's password.")
    database_passwords_dir: Path = Field(description=(
        "A directory with one file per service that owns a database, named after the service (`link`, `user`, "
        "`social-graph`), holding that service's role password."))
    startup_timeout: float = Field(60.0, gt=0, description="How long to wait for the server to accept connections.")
    log_format: Literal["json", "console"] = "json"


def run_database_setup(database_owners: Sequence[str]) -> int:
    """Provision `database_owners`' databases; 0 when done, 1 when the server never answered, 2 on bad settings."""
    try:
        settings = load_settings(DatabaseSetupSettings)
    except ConfigurationError as error:
        configure_logging(JOB_NAME)
        get_logger(__name__).error("startup_failed", error=error.message)
        return 2
    configure_logging(JOB_NAME, settings.log_format)
    log = get_logger(__name__)
    admin_password = settings.postgres_admin_password.get_secret_value() if settings.postgres_admin_password else None
    try:
        provision_databases(settings.postgres_admin_url, admin_password, settings.database_passwords_dir,
                            database_owners, settings.startup_timeout)
    except ValueError as error:
        log.error("startup_failed", error=str(error))
        return 2
    except Unavailable as error:
        log.error("startup_failed", error=str(error))
        return 1
    log.info("databases_ready", databases=list(database_owners))
    return 0
