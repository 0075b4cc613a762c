"""The checker's own outage, as deployed (real NATS JetStream and Redis of this module's own): every check
target times out ("the internet is down": hosts that accept connections and never answer). No link is judged
invalid; the checker recognises its outage, sets `delinkcious_link_checker_outage` to 1 and reports a degraded
`checker_network` readiness detail, and stops judging; once the network is back, a probe sees it and checking
resumes: the links are judged valid, and what waited is checked."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from delinkcious.contracts.events import (
    LINK_ADDED,
    LINK_CHECK_INCONCLUSIVE,
    LINK_CHECKED,
    LINK_CHECKS_STREAM,
    LINKS_STREAM,
)
from delinkcious.kit.core.clock import format_timestamp, utc_now
from delinkcious.link_checker.app import DEFINITION as CHECKER
from delinkcious.local.servers import NatsServer, RedisServer
from prometheus_client import REGISTRY

from tests.link_checker.target import SilentServer
from tests.support.jetstream import publish_event, read_events, wait_for_events, wait_until
from tests.support.services import unique_username

SETTINGS = {
    "link_checker_allow_private_addresses": True,
    "link_checker_timeout": 0.3,
    "link_checker_connect_timeout": 0.3,
    "link_checker_host_interval": 0.0,
    "link_checker_backoff_initial": 0.2,
    "link_checker_backoff_max": 1.0,
    "link_checker_max_attempts": 50,
    "link_checker_retry_max_age": 120.0,
    "link_checker_outage_window": 30.0,
    "link_checker_outage_min_checks": 6,
    "link_checker_outage_threshold": 0.8,
    "link_checker_outage_min_hosts": 2,  # 127.0.0.1 and localhost
    "link_checker_probe_interval": 0.5,
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    nats_server = NatsServer(tmp_path_factory.mktemp("outage-nats"))
    redis_server = RedisServer(tmp_path_factory.mktemp("outage-redis"))
    nats_server.start()
    try:
        redis_server.start()
        try:
            yield nats_server.url, redis_server.url
        finally:
            redis_server.stop()
    finally:
        nats_server.stop()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer("127.0.0.1") as server:
        yield server


def link_event(user: str, url: str) -> dict[str, Any]:
    now = format_timestamp(utc_now())
    return {"event_id": str(uuid.uuid4()), "event_type": "link_added", "author": user, "occurred_at": now,
            "request_id": f"req-{uuid.uuid4().hex[:8]}", "username": user, "url": url, "title": "T",
            "description": "", "tags": [], "link_created_at": now, "link_updated_at": now}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "link-checker", **labels}) or 0.0


def network_check(app: Any) -> tuple[int, str, dict[str, Any]]:
    response = app.test_client().get("/healthz/readiness")
    body = response.get_json()
    [check] = [check for check in body["checks"] if check["name"] == "checker_network"]
    return response.status_code, body["status"], check


def consumer_exists(runtime: Any) -> bool:
    try:
        runtime.nats.run(runtime.nats.jetstream.consumer_info(LINKS_STREAM.name, "link-checker"))
        return True
    except Exception:
        return False


def test_when_every_target_times_out_nothing_is_invalid_the_checker_pauses_and_resumes(
        service_environment, servers, silent):
    nats_url, redis_url = servers
    # The canary answers like the rest of the internet: not at all, until the network is back.
    settings = {**SETTINGS, "link_checker_canary_urls": silent.url("/canary")}
    invalid_before = sample("delinkcious_link_checks_total", result="invalid", source="fetched")
    timeouts_before = sample("delinkcious_link_checks_inconclusive_total", reason="timeout")
    with SilentServer("127.0.0.1") as late_host, service_environment.running(
            CHECKER, nats_url=nats_url, redis_url=redis_url, **settings) as (runtime, app):
        assert wait_until(lambda: consumer_exists(runtime))
        assert network_check(app)[2]["ok"]

        # The internet is down: 8 links of 8 owners, on two host names, all time out.
        users = [unique_username() for _ in range(8)]
        urls = {user: silent.url(f"/page/{index}", host=("127.0.0.1", "localhost")[index % 2])
                for index, user in enumerate(users)}
        for user in users:
            publish_event(nats_url, LINK_ADDED, link_event(user, urls[user]))

        assert wait_until(lambda: sample("delinkcious_link_checker_outage") == 1.0, timeout=15)
        status, overall, check = network_check(app)
        assert (status, overall, check["ok"], check["critical"]) == (200, "degraded", False, False)
        assert "own network is out" in check["error"] and "judging paused" in check["error"]
        assert sample("delinkcious_link_checks_inconclusive_total", reason="timeout") >= timeouts_before + 6

        def announced() -> list[dict[str, Any]]:
            return [event for event in read_events(nats_url, LINK_CHECKS_STREAM.name, LINK_CHECK_INCONCLUSIVE)
                    if event["username"] in users]

        # The attempts made before the outage was recognised are each link's news; once it is, nothing more is
        # announced (the checks in flight included): the failures are the checker's, not the links'.
        before = announced()
        assert before

        # While the outage lasts nothing is judged: a new link (on a host of its own) is not even checked.
        late_user = unique_username()
        late_url = late_host.url("/late")
        publish_event(nats_url, LINK_ADDED, link_event(late_user, late_url))
        time.sleep(1.5)
        assert late_host.connections == 0
        assert sample("delinkcious_link_checker_outage") == 1.0
        checked = [event for event in read_events(nats_url, LINK_CHECKS_STREAM.name, LINK_CHECKED)
                   if event["username"] in {*users, late_user}]
        assert checked == []  # 0 of 8 marked invalid (nor valid: nothing was known)
        assert announced() == before
        assert sample("delinkcious_link_checks_total", result="invalid", source="fetched") == invalid_before

        # The network is back: a probe is answered, the outage ends, and every link is judged, the late one too.
        silent.answer()
        late_host.answer()
        assert wait_until(lambda: sample("delinkcious_link_checker_outage") == 0.0, timeout=10)
        assert network_check(app)[2]["ok"] and network_check(app)[1] == "ready"
        for user in [*users, late_user]:
            [event] = wait_for_events(nats_url, LINK_CHECKS_STREAM.name, LINK_CHECKED, 1, timeout=40, username=user)
            assert (event["status"], event["http_status"]) == ("valid", 200), event
            assert event["url"] == (late_url if user == late_user else urls[user])
