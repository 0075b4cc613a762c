"""The link service as deployed: gunicorn with several workers, JSON logs on stdout, metrics summed
over workers, and a SIGTERM that loses no accepted request and no event."""
from __future__ import annotations

import json
import re
import time

import pytest
import requests
from delinkcious.contracts.events import LINK_ADDED, LINKS_STREAM
from delinkcious.link.app import DEFINITION

from tests.support.jetstream import wait_for_events
from tests.support.process import ServedService, run_in_threads
from tests.support.services import unique_username


@pytest.fixture
def served_link(service_environment, tmp_path):
    access = service_environment.database(DEFINITION)
    service = ServedService("link", {
        "DATABASE_URL": access.dsn,
        "DATABASE_PASSWORD_FILE": str(access.password_file),
        "NATS_URL": service_environment.nats_url,
        "TRUSTED_CALLERS_DIR": str(service_environment.callers_dir),
        "ALLOWED_CALLERS": "api-gateway",
        "WEB_WORKERS": "2",
        "WEB_THREADS": "4",
        "LOG_FORMAT": "json",
        "GRACEFUL_TIMEOUT": "15",
    }, tmp_path / "link.log")
    try:
        service.wait_ready()
        yield service
    finally:
        service.kill()


def test_json_logs_request_ids_and_metrics_across_workers(served_link, service_environment):
    headers = service_environment.caller_headers()
    user = unique_username()
    for index in range(12):
        response = served_link.request("POST", f"/v1/users/{user}/links",
                                       json={"url": f"https://served.example/{index}", "title": "t"},
                                       headers={**headers, "X-Request-Id": f"served-{index}"})
        assert response.status_code == 201 and response.headers["X-Request-Id"] == f"served-{index}"

    metrics = served_link.request("GET", "/metrics").text
    # Samples from both gunicorn workers are summed, whichever worker took each request.
    created = sum(float(value) for value in re.findall(
        r'delinkcious_http_requests_total\{method="POST",route="/v1/users/<username>/links",service="link",'
        r'status="201"\} (\S+)', metrics))
    assert created == 12

    assert served_link.terminate() == 0
    lines = [line for line in served_link.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "service", "event"} <= record.keys() for record in records)
    access = [record for record in records if record["event"] == "request" and record.get("user") == user]
    assert len(access) == 12
    assert {record["request_id"] for record in access} == {f"served-{index}" for index in range(12)}
    assert all(record["status"] == 201 and record["route"] == "/v1/users/<username>/links" and
               isinstance(record["duration_ms"], float) and record["method"] == "POST" for record in access)


def test_sigterm_finishes_accepted_requests_and_publishes_their_events(served_link, service_environment):
    headers = service_environment.caller_headers()
    user = unique_username()

    def add_links(worker: int, results: list) -> None:
        session = requests.Session()
        for index in range(200):
            try:
                response = session.post(f"{served_link.base_url}/v1/users/{user}/links",
                                        json={"url": f"https://term.example/{worker}/{index}", "title": "t"},
                                        headers=headers, timeout=20)
            except requests.RequestException:
                return  # the server stopped accepting: expected once SIGTERM is received
            results.append((response.status_code, f"https://term.example/{worker}/{index}"))

    results, done = run_in_threads(4, add_links)
    while len(results) < 20:
        time.sleep(0.01)
    assert served_link.terminate() == 0, served_link.logs()[-3000:]
    assert done.wait(30)

    statuses = {status for status, _url in results}
    assert statuses == {201}, f"no accepted request may fail during shutdown: {statuses}"
    accepted = {url for _status, url in results}
    events = wait_for_events(service_environment.nats_url, LINKS_STREAM.name, LINK_ADDED, len(accepted),
                             author=user)
    assert {event["url"] for event in events} == accepted
    assert len(events) == len(accepted)
    assert '"event": "outbox_drained"' in served_link.logs()


def test_a_worker_that_exits_leaves_the_others_working(served_link, service_environment):
    """gunicorn replaces a dead worker; the shared multi-process metrics directory must survive it."""
    import psutil

    master = psutil.Process(served_link.process.pid)

    def workers_when(count: int) -> list:
        deadline = time.monotonic() + 30
        while len(master.children()) != count and time.monotonic() < deadline:
            time.sleep(0.1)  # gunicorn forks its workers one after the other
        return master.children()

    workers = workers_when(2)
    assert len(workers) == 2
    workers[0].terminate()
    workers[0].wait(30)
    headers = service_environment.caller_headers()
    user = unique_username()
    assert len(workers_when(2)) == 2
    for index in range(10):  # both the surviving and the replacement worker answer
        response = served_link.request("POST", f"/v1/users/{user}/links",
                                       json={"url": f"https://survivor.example/{index}", "title": "t"}, headers=headers)
        assert response.status_code == 201, response.text
    assert served_link.request("GET", "/metrics").status_code == 200
