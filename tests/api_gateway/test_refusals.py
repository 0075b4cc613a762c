"""Requests gunicorn refuses before the app sees them (a request line or headers over its limits, a malformed
request) are answered in the JSON error shape `{"message", "code"}` with the right status, as the app's own
errors are, not with gunicorn's HTML page. Checked on the gateway served for real; every service is served by the
same worker class (kit/serving/gunicorn.py)."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import requests

from tests.support.services import unique_username


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends `raw` as it is and reads the answer to the end (gunicorn closes after a refusal)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


REFUSALS = {
    "request line too long": (b"GET /v1/links?x=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: g\r\n\r\n", 414, "uri_too_long"),
    "a header too large": (b"GET /v1/me HTTP/1.1\r\nHost: g\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
                           "header_fields_too_large"),
    "too many headers": (b"GET /v1/me HTTP/1.1\r\nHost: g\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120))
                         + b"\r\n", 431, "header_fields_too_large"),
    "a malformed request line": (b"NONSENSE\r\n\r\n", 400, "invalid_input"),
    "a malformed header name": (b"GET /v1/me HTTP/1.1\r\nHost: g\r\nBad Name: x\r\n\r\n", 400, "invalid_input"),
}


def test_gunicorns_refusals_are_in_the_json_error_shape(served_gateway):
    port = served_gateway().port  # one gateway for every case: none of them reaches the app
    for case, (raw, status, code) in REFUSALS.items():
        answered_status, headers, body = exchange(port, raw)
        assert answered_status == status, (case, body[:300])
        assert headers["content-type"] == "application/json", case
        assert int(headers["content-length"]) == len(body), case
        error = json.loads(body)
        assert set(error) == {"message", "code"} and error["code"] == code and error["message"], (case, error)


def test_a_body_sent_chunked_past_the_limit_is_a_413(served_gateway, internal):
    """10 MB sent chunked (no Content-Length): the body limit holds as for a declared length (it was a 400 "must
    be a JSON object": the first 64 KiB passed for the whole body)."""
    user = unique_username()
    internal.answer("POST", "/v1/tokens/verify", 200, {"user": {"username": user}, "token": {}})
    served = served_gateway()

    def ten_megabytes() -> Iterator[bytes]:
        yield b'{"url": "https://big.example", "title": "'
        for _ in range(10 * 16):
            yield b"x" * 65536
        yield b'"}'

    response = requests.post(f"{served.base_url}/v1/links", data=ten_megabytes(), timeout=30,
                             headers={"Authorization": "Bearer dlk_big", "Content-Type": "application/json"})
    assert response.status_code == 413, response.text[:300]
    assert response.json()["code"] == "payload_too_large"
    assert internal.asked("POST", f"/v1/users/{user}/links") == []
