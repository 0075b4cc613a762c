"""A stand-in for a Delinkcious service, run by the runtime test in place of `delinkcious.cli serve`.

It uses exactly what the runtime hands a service (environment, database role,
NATS, Redis, caller token) and reports what it saw on /healthz/readiness, so
the test can check the wiring and that data survives a second `up`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import redis


def record_start_in_postgres() -> int:
    connection = psycopg2.connect(
        os.environ["DATABASE_URL"], password=Path(os.environ["DATABASE_PASSWORD_FILE"]).read_text().strip()
    )
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS starts (id serial PRIMARY KEY)")
            cursor.execute("INSERT INTO starts DEFAULT VALUES")
            cursor.execute("SELECT count(*) FROM starts")
            (count,) = cursor.fetchone() or (0,)
            return int(count)
    finally:
        connection.close()


def nats_has_jetstream() -> bool:
    address = urlsplit(os.environ["NATS_URL"])
    with socket.create_connection((address.hostname, address.port), timeout=5) as connection:
        info = connection.makefile("rb").readline()
    return bool(json.loads(info[len(b"INFO ") :])["jetstream"])


def page_token_secret_file() -> str | None:
    path = os.environ.get("PAGE_TOKEN_SECRET_FILE")
    if path is not None and len(Path(path).read_text().strip()) < 32:
        sys.exit("PAGE_TOKEN_SECRET_FILE: shorter than 32 characters")
    return path


def main() -> None:
    crash_marker = os.environ.get("CRASH_MARKER")
    if crash_marker and not Path(crash_marker).exists():
        Path(crash_marker).touch()
        sys.exit(3)  # the runtime must notice and restart us

    report = {
        "postgres_starts": record_start_in_postgres(),
        "redis_starts": redis.Redis.from_url(os.environ["REDIS_URL"]).incr("starts"),
        "nats_jetstream": nats_has_jetstream(),
        "caller_token_readable": bool(Path(os.environ["CALLER_TOKEN_FILE"]).read_text().strip()),
        # Where `up` put its page-token secret, once it has read it (None when it was given none).
        "page_token_secret_file": page_token_secret_file(),
        "environment": {
            name: os.environ.get(name)
            for name in ("SERVICE_NAME", "LOG_FORMAT", "ALLOWED_CALLERS", "GREETING", "POSTGRES_URL")
        },
    }
    body = json.dumps(report).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz/readiness" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
    if os.environ.get("IGNORE_SIGTERM"):
        # A service stuck in work it will not give up (a consumer that never returns): SIGTERM changes nothing.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
