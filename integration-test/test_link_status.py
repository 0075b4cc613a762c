"""The link checker: a new link is `pending`, then `valid` or `invalid` once it was checked.

The links point at an HTTP server this test starts on 127.0.0.1, so the deployment must be able to
reach this machine and its checker must allow private addresses
(`LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES=true`). Skip with --no-local-targets otherwise."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from delinkcious_client import Cleanup, GatewaySession, Settings, User, assert_ok, eventually

pytestmark = pytest.mark.local_targets


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, with_body: bool) -> None:
        status = 200 if self.path == "/ok" else 404
        body = b"ok\n" if status == 200 else b"missing\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    """http://127.0.0.1:<port>: 200 for /ok, 404 for anything else."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_links_become_valid_or_invalid_once_checked(
    api: GatewaySession, settings: Settings, alice: User, cleanup: Cleanup, target: str, run_id: str
) -> None:
    tag = f"status-{run_id}"
    statuses = {}
    for path in ("/ok", "/missing"):
        url = f"{target}{path}"
        link = assert_ok(api.post("/v1/links", json={"url": url, "title": path, "tags": [tag]}, headers=alice.bearer),
                         201)  # fmt: skip
        cleanup.delete_link(alice, url)
        statuses[url] = link["status"]
    assert set(statuses.values()) == {"pending"}, statuses

    def checked() -> dict[str, Any] | None:
        links = assert_ok(api.get("/v1/links", params={"tag": tag}, headers=alice.bearer))["links"]
        found = {link["url"]: link for link in links}
        return found if all(found[url]["status"] != "pending" for url in statuses) else None

    found = eventually(checked, settings.wait_timeout * 2, "the checker's verdict on both links")
    assert found[f"{target}/ok"]["status"] == "valid", found
    assert found[f"{target}/missing"]["status"] == "invalid", found
