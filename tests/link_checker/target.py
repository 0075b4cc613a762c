"""A local web server for the link checker to check: one route per behaviour, and a log of every
request it was sent (method, path, headers, time), so tests count attempts server-side.

The first path segment picks the behaviour; the rest of the path only makes URLs unique per test
(the checker caches results by URL and is polite per host):

  /ok/...               200
  /missing/...          404
  /gone/...             410
  /forbidden/...        403 (to HEAD and to GET)
  /error/...            500
  /close/...            closes the connection without a word
  /loop/...             302 to itself
  /no-head/...          HEAD 405, GET 200
  /chain/N/...          302 to /chain/N-1/..., /chain/0/... is 200
  /slow/...             sleeps `slow_s` before answering 200
  /flaky/N/...          503 for the first N requests of that path, then 200
  /limited/...          429 with Retry-After: 1 for the first request of that path, then 200
  /always-503/...       503
  /drip/...             sends its status line one byte every 0.1 s (each read is quick, the whole is not)
  /to?url=U             302 to U
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic()
    local_address: str


class TargetServer:
    def __init__(self, host: str = "127.0.0.1", *, slow_s: float = 1.0, certificate: tuple[Path, Path] | None = None):
        self.slow_s = slow_s
        self.seen: list[Seen] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                target._answer(self)

            def do_GET(self) -> None:  # noqa: N802
                target._answer(self)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certificate[0]), str(certificate[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TargetServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def requests_to(self, path: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.path == path]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path
        with self._lock:
            self._counts[path] += 1
            count = self._counts[path]
            self.seen.append(Seen(handler.command, path, dict(handler.headers.items()), time.monotonic(),
                                  handler.connection.getsockname()[0]))
        segments = path.strip("/").split("/")
        route = segments[0]
        headers: dict[str, str] = {}
        if route == "ok":
            status = 200
        elif route == "missing":
            status = 404
        elif route == "gone":
            status = 410
        elif route == "forbidden":
            status = 403
        elif route == "error":
            status = 500
        elif route == "close":
            handler.close_connection = True
            return
        elif route == "loop":
            status = 302
            headers["Location"] = path
        elif route == "no-head":
            status = 405 if handler.command == "HEAD" else 200
        elif route == "chain":
            hops = int(segments[1])
            status = 200 if hops == 0 else 302
            if hops:
                headers["Location"] = "/" + "/".join(["chain", str(hops - 1), *segments[2:]])
        elif route == "slow":
            time.sleep(self.slow_s)
            status = 200
        elif route == "flaky":
            status = 503 if count <= int(segments[1]) else 200
        elif route == "limited":
            status = 429 if count == 1 else 200
            if status == 429:
                headers["Retry-After"] = "1"
        elif route == "always-503":
            status = 503
        elif route == "drip":
            try:
                for byte in b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n":
                    handler.wfile.write(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                pass
            handler.close_connection = True
            return
        elif route == "to":
            status = 302
            headers["Location"] = parse_qs(parts.query)["url"][0]
        else:
            status = 404
        body = b"" if handler.command == "HEAD" else f"status {status}\n".encode()
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the checker gave up waiting (timeouts): nobody is listening any more


class SilentServer:
    """A host that accepts connections and never says a word (the checker's view of a network that is down),
    until `answer()`: from then on every new connection gets `200 OK` (the network is back). `connections`
    counts the connections it took."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.socket()
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._answering = threading.Event()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self._held:
            connection.close()
        self._listener.close()

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def answer(self) -> None:
        self._answering.set()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            if not self._answering.is_set():
                self._held.append(connection)
                continue
            threading.Thread(target=self._reply, args=(connection,), daemon=True).start()

    @staticmethod
    def _reply(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(2)
            try:
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    received += chunk
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
