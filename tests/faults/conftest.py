"""The fault suite's system: one `delinkcious up` (the real services and servers, on free ports, in a fresh data
directory) shared by the suite, the handles a fault needs (the pid of every server and service, readiness, users
with tokens), a paced load through the public gateway, and the figures each scenario measured, printed at the
end of the run (and written as JSON to $DELINKCIOUS_RELIABILITY_REPORT when set) for docs/reliability.md.

Faults are injected the way an operator meets them: signals to the real processes `up` supervises, a Redis that
comes back without its files, check targets that stop answering. Every target and every request is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from delinkcious.local.processes import recorded_process

from tests.support.jetstream import wait_until
from tests.support.up import UpProcess, free_ports, start_up
from tests.support.web import answering_host

SERVICES = ("link", "user", "social-graph", "news", "link-checker", "api-gateway")
SERVERS = ("postgres", "nats", "redis")
REPORT_VARIABLE = "DELINKCIOUS_RELIABILITY_REPORT"

# What the suite's `up` is told beyond the free ports: everything comes from one address (the limits are tested
# elsewhere), the checker may check the suite's hosts on 127.0.0.x and judges its own network quickly.
SYSTEM_ENVIRONMENT = {
    "LINK__MAX_LINKS_PER_USER": "100000",
    "API_GATEWAY__RATE_LIMIT_PER_ADDRESS": "1000000/minute",
    "API_GATEWAY__RATE_LIMIT_PER_USER": "1000000/minute",
    "LINK_CHECKER__LINK_CHECKER_ALLOW_PRIVATE_ADDRESSES": "true",
    "LINK_CHECKER__LINK_CHECKER_CONNECT_TIMEOUT": "1",
    "LINK_CHECKER__LINK_CHECKER_TIMEOUT": "2",
    "LINK_CHECKER__LINK_CHECKER_BACKOFF_INITIAL": "1",
    "LINK_CHECKER__LINK_CHECKER_BACKOFF_MAX": "2",
    "LINK_CHECKER__LINK_CHECKER_MAX_ATTEMPTS": "50",
    "LINK_CHECKER__LINK_CHECKER_RETRY_MAX_AGE": "600",
    "LINK_CHECKER__LINK_CHECKER_OUTAGE_MIN_CHECKS": "6",
    "LINK_CHECKER__LINK_CHECKER_OUTAGE_WINDOW": "30",
    "LINK_CHECKER__LINK_CHECKER_PROBE_INTERVAL": "1",
    "LINK_CHECKER__LINK_CHECKER_HOST_INTERVAL": "0",
    "NEWS__STORE_CHECK_INTERVAL": "1",
}


# --- figures -----------------------------------------------------------------------------------------------------

@dataclass
class Figures:
    """What each scenario measured, in the order recorded: scenario -> figure -> value."""

    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, scenario: str, **figures: Any) -> None:
        self.scenarios.setdefault(scenario, {}).update(figures)


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES.scenarios:
        return
    terminalreporter.section("reliability figures (docs/reliability.md)")
    for scenario, values in _FIGURES.scenarios.items():
        terminalreporter.write_line(f"{scenario}: " + ", ".join(f"{name}={value}" for name, value in values.items()))
    if report := os.environ.get(REPORT_VARIABLE):
        Path(report).write_text(json.dumps(_FIGURES.scenarios, indent=2, default=str) + "\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scenarios that end the shared `up` run last."""
    items.sort(key=lambda item: item.get_closest_marker("ends_the_system") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ends_the_system: stops or kills the suite's shared `up` (runs last)")


# --- the system --------------------------------------------------------------------------------------------------

@dataclass
class System:
    up: UpProcess
    data_dir: Path
    ports: dict[str, int]
    web: str  # a web server on 127.0.0.1 that answers 200: where the suite's links point (no name to resolve)
    minted_tokens: set[str] = field(default_factory=set)  # every access token handed out, looked for in the logs

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['api-gateway']}"

    def service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def readiness_url(self, service: str) -> str:
        port = self.ports["api-gateway-admin"] if service == "api-gateway" else self.ports[service]
        return f"http://127.0.0.1:{port}/healthz/readiness"

    def caller_headers(self, caller: str = "developer") -> dict[str, str]:
        token = (self.data_dir / "secrets" / "callers" / caller).read_text().strip()
        return {"Delinkcious-Caller-Token": token}

    def process(self, name: str) -> psutil.Process:
        """The live process `up` recorded for a server or a service."""
        pid_file = (self.data_dir / name / f"{name}.pid" if name in SERVERS else self.data_dir / "run" / f"{name}.pid")
        found = recorded_process(pid_file)
        assert found is not None, f"no live {name} recorded in {pid_file}\n{self.transcript()}"
        return found

    def transcript(self, lines: int = 60) -> str:
        """The last lines `up` printed (its own messages and every service's log)."""
        while not self.up.lines.empty():
            self.up.output.append(self.up.lines.get_nowait())
        return "\n".join(self.up.output[-lines:])

    def kill_hard(self, name: str) -> psutil.Process:
        """SIGKILL to the process `up` started for `name` and everything in its process group (its workers), as an
        OOM kill of a container takes all of it; the process killed."""
        process = self.process(name)
        os.killpg(process.pid, signal.SIGKILL)
        return process

    def readiness(self, service: str) -> tuple[int, dict[str, Any]]:
        try:
            # Longer than a health check may take (2 s): a stalled dependency makes the report slow, not absent.
            response = requests.get(self.readiness_url(service), timeout=5)
        except requests.RequestException:
            return 0, {}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {}

    def ready(self, service: str) -> bool:
        return self.readiness(service)[0] == 200

    def wait_all_ready(self, timeout: float = 60) -> None:
        assert wait_until(lambda: all(self.ready(service) for service in SERVICES), timeout), {
            service: self.readiness(service) for service in SERVICES}

    def new_user(self, name: str) -> User:
        """A user as the gateway would sign them in, and an access token for them (from the user service, with
        the developer's caller token)."""
        headers = self.caller_headers()
        login = requests.post(f"{self.service_url('user')}/v1/logins", headers=headers, timeout=10,
                              json={"provider": "github", "subject": f"faults-{name}", "login": name})
        assert login.status_code in (200, 201), login.text
        username = login.json()["user"]["username"]
        issued = requests.post(f"{self.service_url('user')}/v1/users/{username}/tokens", headers=headers,
                               json={}, timeout=10)
        assert issued.status_code == 201, issued.text
        self.minted_tokens.add(issued.json()["token"])
        return User(username, issued.json()["token"], self.gateway, self.web)


@dataclass(frozen=True)
class User:
    username: str
    token: str
    gateway: str
    web: str  # System.web

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def call(self, method: str, path: str, session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 15)
        return (session or requests).request(method, self.gateway + path, headers=self.headers, **kwargs)

    def links(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.call("GET", "/v1/links", params={"limit": 100, **({"start_token": token} if token else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            found += body["links"]
            token = body.get("next_token") or ""
            if not token:
                return found

    def news(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.call("GET", "/v1/news", params={"limit": 100, **({"start_token": token} if token else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            found += body["events"]
            token = body.get("next_token") or ""
            if not token:
                return found


@pytest.fixture(scope="session")
def web_server() -> Iterator[str]:
    with answering_host() as url:
        yield url


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory, web_server: str) -> Iterator[System]:
    data_dir = tmp_path_factory.mktemp("faults") / "data"
    ports = free_ports()
    up = start_up(data_dir, ports, **SYSTEM_ENVIRONMENT)
    running = System(up, data_dir, ports, web_server)
    try:
        up.wait_for_line("delinkcious is up", timeout=180)
        yield running
    finally:
        if up.process.poll() is None:
            up.stop()
        for name in (*SERVERS, *SERVICES):  # after a scenario killed `up` itself: nothing may be left
            pid_file = data_dir / name / f"{name}.pid" if name in SERVERS else data_dir / "run" / f"{name}.pid"
            if (leftover := recorded_process(pid_file)) is not None:
                leftover.kill()


# --- load --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    took: float
    status: int  # 0: no answer (the connection failed or was reset)
    code: str = ""  # the JSON error's code, or the exception's name when there was no answer


@dataclass
class Load:
    """`clients` threads each sending `request(session, n)` at `rate / clients` a second until stopped (or until
    `count` requests in all), recording every outcome. Bounded: it stops itself after `max_seconds`."""

    request: Callable[[requests.Session, int], requests.Response]
    rate: float
    clients: int = 4
    count: int | None = None
    max_seconds: float = 120.0
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_number(self) -> int | None:
        with self._lock:
            if self.count is not None and self._issued >= self.count:
                return None
            self._issued += 1
            return self._issued - 1

    def _client(self) -> None:
        interval = self.clients / self.rate
        session = requests.Session()
        due = time.monotonic()
        deadline = self._started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            number = self._next_number()
            if number is None:
                return
            started = time.monotonic()
            try:
                response = self.request(session, number)
                code = ""
                if response.status_code >= 400:
                    try:
                        code = str(response.json().get("code", ""))
                    except ValueError:
                        code = "not-json"
                outcome = Outcome(started, time.monotonic() - started, response.status_code, code)
            except requests.RequestException as error:
                outcome = Outcome(started, time.monotonic() - started, 0, no_answer(error))
                session = requests.Session()
            with self._lock:
                self.outcomes.append(outcome)
            due += interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def finished(self, timeout: float) -> bool:
        """Wait for a counted load to send all of its requests."""
        return wait_until(lambda: not any(thread.is_alive() for thread in self._threads), timeout)

    # --- what happened ---
    def statuses(self) -> Counter[int]:
        return Counter(outcome.status for outcome in self.outcomes)

    def failures(self) -> list[Outcome]:
        """Anything but a success or a clean 503 (unavailable, in the JSON error shape)."""
        return [outcome for outcome in self.outcomes
                if outcome.status >= 400 and not (outcome.status == 503 and outcome.code == "unavailable")
                or outcome.status == 0]

    def started_between(self, start: float, end: float) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if start <= outcome.started < end]

    def first_answered_after(self, moment: float, status: int) -> float | None:
        """When the first request sent after `moment` that got `status` was answered."""
        return min((outcome.started + outcome.took for outcome in self.outcomes
                    if outcome.status == status and outcome.started >= moment), default=None)

    def unavailable_after(self, moment: float) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == 503 and outcome.started >= moment]

    def median_ms(self) -> float:
        return round(statistics.median(outcome.took for outcome in self.outcomes) * 1000, 1)


def no_answer(error: requests.RequestException) -> str:
    """Why a request got no answer: `refused` (nothing listened: it was never accepted), `timeout`, or `reset` (an
    accepted connection was dropped)."""
    if isinstance(error, requests.Timeout):
        return "timeout"
    if "refused" in str(error).lower():
        return "refused"
    return "reset"


def send_signal(process: psutil.Process, signum: signal.Signals) -> float:
    """Signal the process; the moment it was sent."""
    process.send_signal(signum)
    return time.monotonic()


def exited_within(process: psutil.Process, timeout: float) -> float | None:
    """Seconds until `process` is gone (or a zombie), None if it is still running after `timeout`."""
    started = time.monotonic()

    def gone() -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return round(time.monotonic() - started, 2) if wait_until(gone, timeout) else None
