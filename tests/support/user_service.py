"""A stand-in for the user service: a tiny HTTP server answering HEAD /v1/users/<name>."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandInUserService:
    """200 for the names in `users`, 404 for the others (or `status` for everyone when set); records
    each lookup with the Delinkcious-Caller-Token it carried."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.lookups: list[tuple[str, str | None]] = []
        self.status: int | None = None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.removeprefix("/v1/users/")
                stand_in.lookups.append((name, self.headers.get("Delinkcious-Caller-Token")))
                if stand_in.status is not None:
                    status = stand_in.status
                else:
                    status = 200 if self.path.startswith("/v1/users/") and name in stand_in.users else 404
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def looked_up(self, name: str) -> list[str | None]:
        """The caller tokens of the lookups of `name`."""
        return [token for looked, token in list(self.lookups) if looked == name]

    def start(self) -> StandInUserService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
