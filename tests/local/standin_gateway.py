"""A stand-in for the API gateway, run by the runtime test in place of `delinkcious.cli serve api-gateway`.

Like the real gateway it keeps /healthz off its public port: readiness answers on ADMIN_PORT only,
and only once the identity provider named by OIDC_DISCOVERY_URL serves its discovery document. The
readiness body reports the sign-in wiring the runtime handed it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def report() -> dict[str, object]:
    with urllib.request.urlopen(os.environ["OIDC_DISCOVERY_URL"], timeout=5) as response:
        issuer = json.load(response)["issuer"]
    return {
        "issuer": issuer,
        "environment": {
            name: os.environ.get(name)
            for name in ("AUTH_PROVIDER", "OIDC_DISCOVERY_URL", "OIDC_PROVIDER_NAME", "OAUTH_CLIENT_ID",
                         "PUBLIC_BASE_URL", "NEWS_GRPC_ADDRESS", "LINK_SERVICE_URL", "ADMIN_PORT")
        },  # fmt: skip
        "secrets_readable": all(
            Path(os.environ[name]).read_text().strip() for name in ("OAUTH_CLIENT_SECRET_FILE", "SESSION_SECRET_FILE")
        ),
    }


def handler(serves_health: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if serves_health and self.path == "/healthz/readiness":
                status, body = 200, json.dumps(report()).encode()
            else:
                status, body = 404, b'{"message": "not found", "code": "not_found"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    host = os.environ["HOST"]
    public = ThreadingHTTPServer((host, int(os.environ["PORT"])), handler(serves_health=False))
    admin = ThreadingHTTPServer((host, int(os.environ["ADMIN_PORT"])), handler(serves_health=True))
    threading.Thread(target=public.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    admin.serve_forever()


if __name__ == "__main__":
    main()
