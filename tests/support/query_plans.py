"""Query plans on a big, skewed table: a migrated database of a test module's own, loaded fast, and the
plan of the statement a repository really sent."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from delinkcious.kit.postgres.db import apply_migrations, build_dsn
from delinkcious.kit.serving.runtime import ServiceDefinition
from psycopg2 import sql


@contextmanager
def loaded_database(service_environment: Any, definition: ServiceDefinition, table: str,
                    insert: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a migrated database of its own where `insert` filled `table`, analysed; dropped after."""
    name = f"{definition.name.replace('-', '_')}_plan_{uuid.uuid4().hex[:8]}"
    password_dir = service_environment.secrets_dir / "postgres"
    access = service_environment.ensure_database(service_environment.postgres_admin_dsn, name, password_dir)
    try:
        apply_migrations(access.dsn, definition.migration_dirs(), password=access.read_password())
        connection = psycopg2.connect(build_dsn(access.dsn, access.read_password()),
                                      cursor_factory=psycopg2.extras.RealDictCursor)
        try:
            load_with_indexes_rebuilt(connection, table, insert)
            yield connection
        finally:
            connection.close()
    finally:
        drop_database(service_environment.postgres_admin_dsn, name)
        (password_dir / name).unlink(missing_ok=True)


@contextmanager
def rolled_back_cursor(connection: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.cursor]:
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.rollback()


def plan_nodes(cursor: psycopg2.extensions.cursor, options: str = "") -> list[dict[str, Any]]:
    """The nodes of the plan of the statement the cursor ran last (the repository's), top down."""
    cursor.execute(f"EXPLAIN ({options}FORMAT JSON) ".encode() + cursor.query)
    return nodes_of(cursor.fetchone()["QUERY PLAN"][0]["Plan"])


def nodes_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes_of(child))]


def load_with_indexes_rebuilt(connection: psycopg2.extensions.connection, table: str, insert: str) -> None:
    """Run `insert` with the table's secondary indexes dropped, then build them again from their own
    definitions (building an index once is much faster than growing it row by row), and ANALYZE."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(i.indexrelid) AS index_definition, i.indexrelid::regclass::text AS index_name, "
            "c.conname AS constraint_name, pg_get_constraintdef(c.oid) AS constraint_definition "
            "FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary",
            (table,),
        )
        indexes = cursor.fetchall()
        for index in indexes:
            if index["constraint_name"]:
                cursor.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(index["constraint_name"])))
            else:
                cursor.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index["index_name"])))  # quoted by ::regclass
        cursor.execute(insert)
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for index in indexes:
            if index["constraint_name"]:
                cursor.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                    sql.Identifier(table), sql.Identifier(index["constraint_name"])) + sql.SQL(
                    index["constraint_definition"]))
            else:
                cursor.execute(index["index_definition"])
    connection.commit()
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    connection.commit()


def drop_database(admin_dsn: str, name: str) -> None:
    connection = psycopg2.connect(admin_dsn)
    try:
        connection.autocommit = True  # DROP DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        connection.close()
