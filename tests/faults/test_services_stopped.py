"""Each service stopped under load, politely (SIGTERM, as a rolling update does) and not (SIGKILL, as an OOM kill
does), while `up` restarts it like a container platform would.

SIGTERM: the service exits within its grace, nothing the clients sent fails except with a clean 503 while it is
away, and the gateway sends traffic again as soon as the service is ready (its breaker probes within 2 s).
SIGKILL: the same for the services behind the gateway (a request cut off in a dying process is the gateway's clean
503); the gateway itself, killed, drops the connections it held: the figures say how many."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.faults.conftest import SERVICES, Figures, Load, Outcome, System, User, exited_within
from tests.support.jetstream import wait_until

# The public routes that need each service (the checker is on no request's path).
ROUTES = {
    "link": ("GET", "/v1/links"),
    "user": ("GET", "/v1/me"),
    "social-graph": ("GET", "/v1/following"),
    "news": ("GET", "/v1/news"),
}
# How long after a service is ready again the gateway may still answer 503 for it: one breaker probe interval
# (BREAKER_MAX_RESET_SECONDS) and a request's own time.
RECOVERY_ALLOWANCE_S = 1.5


@pytest.fixture(scope="module")
def reader(system: System) -> User:
    reader, author = system.new_user("stop-reader"), system.new_user("stop-author")
    assert reader.call("POST", "/v1/following", json={"followed": author.username}).status_code in (200, 201)
    for number in range(5):
        added = author.call("POST", "/v1/links", json={"url": f"{system.web}/stop/{number}", "title": "t"})
        assert added.status_code == 201, added.text
    return reader


def every_route(reader: User):
    routes = list(ROUTES.values())

    def call(session: requests.Session, number: int) -> requests.Response:
        method, path = routes[number % len(routes)]
        return reader.call(method, path, session, params={"limit": 5})
    return call


def stop_under_load(system: System, reader: User, service: str, signum: signal.Signals) -> dict[str, object]:
    """Signal `service` under 50 requests a second over every route; the figures of what followed."""
    with Load(every_route(reader), rate=50, clients=5, max_seconds=60) as load:
        time.sleep(2)
        sent = time.monotonic()
        if signum == signal.SIGKILL:
            process = system.kill_hard(service)
        else:
            process = system.process(service)
            process.send_signal(signum)
        exit_s = exited_within(process, 30)
        assert wait_until(lambda: system.ready(service), timeout=40), (system.readiness(service), system.transcript())
        ready_at = time.monotonic()
        time.sleep(4)
    late = load.unavailable_after(ready_at + RECOVERY_ALLOWANCE_S)
    return {
        "load": load,
        "exit_s": exit_s,
        "ready_again_s": round(ready_at - sent, 1),
        "requests": len(load.outcomes),
        "unavailable": load.statuses()[503],
        "failed": len(load.failures()),
        "late_503": len(late),
        "last_503_after_ready_s": round(max((outcome.started + outcome.took - ready_at
                                             for outcome in load.outcomes if outcome.status == 503),
                                            default=0.0), 2),
    }


def describe(failures: list[Outcome]) -> list[str]:
    return [f"{outcome.status} {outcome.code} after {outcome.took:.2f}s" for outcome in failures[:10]]


@pytest.mark.parametrize("service", [name for name in SERVICES if name != "api-gateway"])
def test_a_service_stopped_with_sigterm_under_load(system: System, reader: User, figures: Figures, service: str):
    result = stop_under_load(system, reader, service, signal.SIGTERM)
    load: Load = result.pop("load")  # type: ignore[assignment]
    figures.record(f"sigterm_{service}", **result)
    assert result["exit_s"] is not None and result["exit_s"] < 10, result
    assert not load.failures(), describe(load.failures())
    assert not result["late_503"], result


@pytest.mark.parametrize("service", [name for name in SERVICES if name != "api-gateway"])
def test_a_service_killed_under_load(system: System, reader: User, figures: Figures, service: str):
    result = stop_under_load(system, reader, service, signal.SIGKILL)
    load: Load = result.pop("load")  # type: ignore[assignment]
    figures.record(f"sigkill_{service}", **result)
    assert not load.failures(), describe(load.failures())
    assert not result["late_503"], result


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_gateway_stopped_under_load(system: System, reader: User, figures: Figures, signum: signal.Signals):
    """One gateway here (no replica to take over): while it is away connections are refused. A SIGTERM resets no
    connection that carried an accepted request: every request it took is answered."""
    with Load(every_route(reader), rate=50, clients=5, max_seconds=60) as load:
        time.sleep(2)
        sent = time.monotonic()
        if signum == signal.SIGKILL:
            gateway = system.kill_hard("api-gateway")
        else:
            gateway = system.process("api-gateway")
            gateway.send_signal(signum)
        exit_s = exited_within(gateway, 30)
        assert wait_until(lambda: system.ready("api-gateway"), timeout=40), (system.readiness("api-gateway"),
                                                                            system.transcript())
        ready_at = time.monotonic()
        time.sleep(3)
    answered_late = [outcome for outcome in load.outcomes if outcome.started > ready_at + 1 and outcome.status != 200]
    # Connections refused while no gateway listens are expected; a reset or a timeout is an accepted request lost.
    lost = [outcome for outcome in load.outcomes if outcome.status == 0 and outcome.code != "refused"]
    refused = [outcome for outcome in load.outcomes if outcome.status == 0 and outcome.code == "refused"]
    name = signal.Signals(signum).name.lower()
    figures.record(f"{name}_api-gateway", exit_s=exit_s, ready_again_s=round(ready_at - sent, 1),
                   requests=len(load.outcomes), refused_while_away=len(refused), cut_off=len(lost),
                   errors_after_ready=len(answered_late))
    assert not answered_late, describe(answered_late)
    if signum == signal.SIGTERM:
        assert exit_s is not None and exit_s < 10
        assert not lost, describe(lost)
