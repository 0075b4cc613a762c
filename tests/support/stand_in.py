"""A programmable stand-in for an internal HTTP service: answers per (method, path) and records what
it was asked, so a caller's behaviour (headers, bodies, retries, breakers) can be checked."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_LIMIT_S = 30.0  # a held request is answered after this long even if never released, so no test hangs


class Hold:
    """Requests to one (method, path) wait, recorded but unanswered, until `release()`; `arrived` is set by the
    first of them."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait(self) -> None:
        self.arrived.set()
        self._released.wait(HOLD_LIMIT_S)


class StandInService:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.holds: dict[tuple[str, str], Hold] = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                stand_in.requests.append({"method": self.command, "path": path, "url": self.path,
                                          "headers": dict(self.headers), "body": json.loads(raw) if raw else None})
                hold = stand_in.holds.get((self.command, path))
                if hold is not None:
                    hold.wait()
                status, body = stand_in.answers.get((self.command, path), (404, {"message": "nope",
                                                                                 "code": "not_found"}))
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, status: int, body: Any = None) -> None:
        self.answers[(method, path)] = (status, body)

    def hold(self, method: str, path: str) -> Hold:
        """Holds the requests to (method, path) from now on until the returned hold is released."""
        hold = self.holds[(method, path)] = Hold()
        return hold

    def asked(self, method: str, path: str) -> list[dict[str, Any]]:
        return [request for request in list(self.requests) if request["method"] == method and request["path"] == path]

    def stop(self) -> None:
        for hold in self.holds.values():
            hold.release()
        self._server.shutdown()
        self._server.server_close()
