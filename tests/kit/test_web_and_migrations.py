"""Kit behaviour not specific to one service: unexpected errors, concurrent migrations, indexes."""
from __future__ import annotations

import dataclasses
import uuid

import psycopg2
from delinkcious.kit.postgres.db import apply_migrations, build_dsn
from delinkcious.kit.serving.callers import allow_callers
from delinkcious.kit.serving.runtime import ServiceParts
from delinkcious.link.app import DEFINITION
from flask import Blueprint

from tests.support.threads import raised_together


def test_unexpected_errors_are_500_without_internals(service_environment):
    broken = allow_callers("api-gateway")(Blueprint("broken", __name__))

    @broken.get("/v1/broken")
    def explode():
        raise KeyError("secret internal detail")

    definition = dataclasses.replace(DEFINITION, build=lambda runtime: ServiceParts(blueprints=[broken]))
    with service_environment.running(definition) as (_runtime, app):
        response = app.test_client().get("/v1/broken", headers={**service_environment.caller_headers(),
                                                               "X-Request-Id": "boom-1"})
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal" and body["request_id"] == "boom-1"
    assert "secret" not in response.get_data(as_text=True)


def test_replicas_starting_together_migrate_once(service_environment):
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    access = service_environment.ensure_database(service_environment.postgres_admin_dsn, name,
                                                 service_environment.secrets_dir / "postgres")

    def start_replica() -> None:
        apply_migrations(access.dsn, DEFINITION.migration_dirs(), password=access.read_password())

    assert raised_together([start_replica] * 4) == []
    with psycopg2.connect(build_dsn(access.dsn, access.read_password())) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")
            applied = [row[0] for row in cursor.fetchall()]
    # Each migration once: every file of the service's migration folders (the kit's and its own), none twice.
    assert applied == sorted(path.stem for folder in DEFINITION.migration_dirs() for path in folder.glob("*.sql"))
    assert "link_0001_links" in applied


def test_a_users_page_is_served_by_an_index(service_environment):
    access = service_environment.database(DEFINITION)
    # The schema the service would have: not whatever an earlier test happened to leave (run alone, none).
    apply_migrations(access.dsn, DEFINITION.migration_dirs(), password=access.read_password())
    with psycopg2.connect(build_dsn(access.dsn, access.read_password())) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")  # tiny test tables would make any plan a seq scan
            cursor.execute("EXPLAIN SELECT id FROM links WHERE username = 'ann' AND id < 100 "
                           "ORDER BY id DESC LIMIT 11")
            plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "links_user_page_idx" in plan and "Sort" not in plan
