"""What keeps the gateway small and its requests cheap: it is built once in the gunicorn master (its workers share
that memory), the login stack (authlib, requests, cryptography) is imported by the first login only, and the
login cookie's session is opened on the login routes only."""
from __future__ import annotations

import subprocess
import sys

import pytest
from delinkcious.api_gateway.identity import LoginStateSessions
from delinkcious.catalogue import SERVICES
from delinkcious.kit.serving.gunicorn import builds_before_fork
from flask import Flask, request


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_only_the_gateway_is_built_before_the_fork(facts):
    # Every other service holds a NATS connection (and most a database pool), which each process makes itself.
    assert builds_before_fork(facts.definition().settings_class) == (facts.name == "api-gateway")


def modules_loaded_with_the_gateway(*candidates: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", "import sys, delinkcious.cli, delinkcious.api_gateway.app; "
                               f"print(sorted({set(candidates)!r} & set(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout.strip()


def test_the_login_stack_is_not_imported_with_the_gateway():
    assert modules_loaded_with_the_gateway("authlib", "requests", "joserfc") == "[]"


def test_the_database_and_broker_clients_are_not_imported_by_a_service_without_them():
    # The kit imports them where a service's settings ask for a database or a broker.
    assert modules_loaded_with_the_gateway("psycopg2", "nats", "yoyo") == "[]"


@pytest.mark.parametrize("path,opened", [("/login", True), ("/login/authorized", True), ("/v1/links", False),
                                         ("/v1/me", False), ("/logout", False)])
def test_the_session_is_opened_on_the_login_routes_only(path, opened):
    app = Flask(__name__)
    app.secret_key = "s" * 32
    with app.test_request_context(path):
        session = LoginStateSessions().open_session(app, request)
    assert (session is not None) == opened
