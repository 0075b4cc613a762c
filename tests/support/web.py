"""Web hosts on this machine for the link checker to check: one that answers 200, one that accepts connections
and never says a word (a slow host)."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Answering(BaseHTTPRequestHandler):
    """200 to every HEAD and GET, quietly."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering_host() -> Iterator[str]:
    """The base URL of a host on 127.0.0.1 that answers 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def web_hosts() -> Iterator[dict[str, Any]]:
    """`answering` and `silent` base URLs on 127.0.0.1; `silent_connections` are the connections the silent one
    took (held open until the end)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold_connections() -> None:
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    holder = threading.Thread(target=hold_connections, daemon=True)
    holder.start()
    try:
        with answering_host() as answering:
            yield {"answering": answering, "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
                   "silent_connections": held}
    finally:
        stop.set()
        holder.join(5)
        for connection in held:
            connection.close()
        silent.close()
