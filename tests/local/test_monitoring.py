"""`delinkcious up --monitoring`: Prometheus' configuration (a scrape job per started service on the port that
serves /metrics, labelled with the service's name, and the alerting rules), how the binary is found, and runs of
`up` with a stand-in `prometheus` on PATH that checks the configuration it is given and answers /-/ready: it is
started, shown in the status table and stopped with `up` (also when `up` is killed); without it, `up` says how to
get it and comes up all the same."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from delinkcious.catalogue import SERVICES, ServiceFacts, get_service
from delinkcious.local.monitoring import (
    RULES_FILE,
    PrometheusServer,
    ScrapeTarget,
    existing_rules_file,
    find_prometheus,
    missing_prometheus_advice,
    prometheus_config,
    scrape_targets,
)
from delinkcious.local.options import parse_options
from delinkcious.local.secrets import SecretsLayout
from delinkcious.local.servers import DatabaseAccess, free_port
from delinkcious.local.supervisor import SupervisedService
from delinkcious.local.wiring import service_environment, services_wiring

from tests.support.jetstream import wait_until
from tests.support.up import UpProcess, inherited_environment, is_alive, listening

ROOT = Path(__file__).resolve().parents[2]
REPORT_VARIABLE = "STANDIN_PROMETHEUS_REPORT"
DISCOVERY = "http://127.0.0.1:9400/.well-known/openid-configuration"

# The stand-in: records its argv and configuration in the file $STANDIN_PROMETHEUS_REPORT names, refuses a
# configuration Prometheus would not scrape as `up` means it to (exit 1, as Prometheus does on a bad one), and
# answers /-/ready on its listen address until SIGTERM.
STANDIN_PROMETHEUS = """
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml

flags = dict(argument[2:].split("=", 1) for argument in sys.argv[1:])
config = yaml.safe_load(Path(flags["config.file"]).read_text())
problems = []
if config["global"]["scrape_interval"] != "5s":
    problems.append("scrape_interval is not 5s")
for job in config["scrape_configs"]:
    if job.get("honor_labels") is not True:
        problems.append(f"{job['job_name']}: honor_labels is not true")
    for static in job["static_configs"]:
        if static["labels"].get("service") != job["job_name"]:
            problems.append(f"{job['job_name']}: service label {static['labels']}")
        for target in static["targets"]:
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit():
                problems.append(f"{job['job_name']}: target {target!r} is not host:port")
problems += [f"rule file {path} is missing" for path in config.get("rule_files", []) if not Path(path).is_file()]
if "storage.tsdb.path" not in flags:
    problems.append("no --storage.tsdb.path")
report = {"argv": sys.argv[1:], "pid": os.getpid(), "config": config, "problems": problems}
Path(os.environ["STANDIN_PROMETHEUS_REPORT"]).write_text(json.dumps(report))
if problems:
    sys.exit("invalid configuration: " + "; ".join(problems))


class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/-/ready" else 404)
        self.end_headers()

    def log_message(self, format, *args):
        pass


host, _, port = flags["web.listen-address"].rpartition(":")
server = HTTPServer((host.strip("[]"), int(port)), Ready)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
server.serve_forever()
"""

# A service with no stores (so `up` starts no server for it) that answers /healthz/readiness and /metrics.
STANDIN_SERVICE = """
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        known = self.path in ("/healthz/readiness", "/metrics")
        self.send_response(200 if known else 404)
        self.end_headers()
        if self.path == "/metrics":
            self.wfile.write(b'delinkcious_http_requests_total{service="standin"} 1\\n')

    def log_message(self, format, *args):
        pass


server = HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
server.serve_forever()
"""

# `up` of the stand-in service through LocalRuntime, as `delinkcious up` runs the catalogue's services.
DRIVER = """
import os
import sys
from delinkcious.catalogue import ServiceFacts
from delinkcious.local import runtime
from delinkcious.local.options import parse_options

service_script, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
service = ServiceFacts(name="standin", summary="stand-in", port=port)
runtime._configure_logging()
options = parse_options(argv, os.environ, stdout_is_tty=False)
local = runtime.LocalRuntime(options, [service], os.environ, command_for=lambda name: [sys.executable, service_script])
sys.exit(local.run())
"""


# --------------------------------------------------------------------------------------
# Options, configuration and finding the binary


def test_monitoring_is_off_unless_asked_for_and_prometheus_has_its_default_port() -> None:
    defaults = parse_options([], {}, stdout_is_tty=False)
    assert (defaults.monitoring, defaults.prometheus_port) == (False, 9090)
    chosen = parse_options(["--monitoring", "--prometheus-port", "19090"], {}, stdout_is_tty=False)
    assert (chosen.monitoring, chosen.prometheus_port) == (True, 19090)


def catalogue_services(tmp_path: Path, base_env: dict[str, str]) -> list[SupervisedService]:
    """Every catalogue service as `up` would start it (its environment, overrides included)."""
    secrets = SecretsLayout(tmp_path / "secrets")
    wiring = services_wiring(SERVICES, "127.0.0.1", "json", secrets, base_env)
    databases = {spec.name: DatabaseAccess(f"postgresql://{spec.name}@127.0.0.1:15432/{spec.name}",
                                           secrets.postgres_dir / spec.name) for spec in SERVICES}  # fmt: skip
    wiring = replace(wiring, nats_url="nats://127.0.0.1:14222", redis_url="redis://127.0.0.1:16379/0",
                     databases=databases, oidc_discovery_url=DISCOVERY)  # fmt: skip
    return [SupervisedService(spec.name, ["true"], service_environment(spec, wiring, base_env),
                              tmp_path / f"{spec.name}.pid") for spec in SERVICES]  # fmt: skip


def kit_ops_port(spec: ServiceFacts, environment: dict[str, str]) -> int:
    """Where the service's own kit serves /metrics given that environment (ServiceDefinition.ops_port)."""
    definition = spec.definition()
    admin_port = int(environment["ADMIN_PORT"]) if "ADMIN_PORT" in environment else None
    settings = definition.settings_class.model_construct(port=int(environment["PORT"]), admin_port=admin_port)
    return definition.ops_port(settings)


@pytest.mark.parametrize("base_env", [{}, {"API_GATEWAY__ADMIN_PORT": "18090", "NEWS__PORT": "18084"}],
                         ids=["defaults", "overridden"])  # fmt: skip
def test_every_service_is_scraped_where_its_kit_serves_metrics_labelled_with_its_name(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    services = catalogue_services(tmp_path, base_env)
    config = prometheus_config(scrape_targets(services), rules_file=None)
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == [spec.name for spec in SERVICES]
    for spec, service in zip(SERVICES, services, strict=True):
        assert jobs[spec.name] == {
            "job_name": spec.name,
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{kit_ops_port(spec, service.environment)}"],
                                "labels": {"service": spec.name}}],
        }  # fmt: skip
    # The gateway keeps /metrics on its admin port; news, a worker, serves it on its only HTTP port.
    gateway_admin_port = base_env.get("API_GATEWAY__ADMIN_PORT", get_service("api-gateway").admin_port)
    assert jobs["api-gateway"]["static_configs"][0]["targets"] == [f"127.0.0.1:{gateway_admin_port}"]
    news_port = base_env.get("NEWS__PORT", get_service("news").port)
    assert jobs["news"]["static_configs"][0]["targets"] == [f"127.0.0.1:{news_port}"]
    assert "rule_files" not in config


def test_a_wildcard_host_is_scraped_on_the_loopback_address(tmp_path: Path) -> None:
    service = SupervisedService("link", ["true"], {"HOST": "0.0.0.0", "PORT": "8081"}, tmp_path / "link.pid")
    assert scrape_targets([service]) == [ScrapeTarget("link", "127.0.0.1:8081")]


def test_the_rules_are_loaded_when_the_file_is_there(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    assert existing_rules_file(rules) is None
    assert "rule_files" not in prometheus_config([], existing_rules_file(rules))
    rules.write_text("groups: []\n")
    assert prometheus_config([], existing_rules_file(rules))["rule_files"] == [str(rules)]


def test_the_rules_are_the_charts_in_this_repository() -> None:
    assert RULES_FILE == ROOT / "helm" / "delinkcious" / "files" / "monitoring" / "rules.yaml"


def write_executable(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_prometheus_is_found_on_path_or_where_prometheus_names_it(tmp_path: Path) -> None:
    on_path = write_executable(tmp_path / "bin" / "prometheus", "")
    named = write_executable(tmp_path / "elsewhere" / "prometheus-2.53", "")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_prometheus({"PATH": str(on_path.parent)}) == on_path
    assert find_prometheus({"PATH": str(empty), "PROMETHEUS": str(named)}) == named
    assert find_prometheus({"PATH": str(named.parent), "PROMETHEUS": named.name}) == named
    assert find_prometheus({"PATH": str(empty)}) is None
    assert find_prometheus({"PATH": str(on_path.parent), "PROMETHEUS": "/nowhere/prometheus"}) is None


def test_without_prometheus_one_line_says_how_to_get_it() -> None:
    advice = missing_prometheus_advice({})
    assert advice.startswith("monitoring is off: prometheus is not on PATH; to get it, install Debian's")
    assert "apt install prometheus" in advice and "prometheus.io" in advice and "\n" not in advice
    named = missing_prometheus_advice({"PROMETHEUS": "/opt/prom/prometheus"})
    assert named.startswith("monitoring is off: $PROMETHEUS names '/opt/prom/prometheus', which is not an executable;")


def test_the_options_table_documents_monitoring_with_its_default_port() -> None:
    document = (ROOT / "docs" / "configuration.md").read_text()
    row = next(line for line in document.splitlines() if line.startswith("| `--prometheus-port"))
    assert f"`{parse_options([], {}, False).prometheus_port}`" in row
    assert any(line.startswith("| `--monitoring`") for line in document.splitlines())


# --------------------------------------------------------------------------------------
# `up --monitoring` runs (real signals; a stand-in prometheus)


@pytest.fixture
def standin_prometheus(tmp_path: Path) -> Path:
    """A directory holding the stand-in `prometheus`, to put first on PATH."""
    return write_executable(tmp_path / "standin-bin" / "prometheus", STANDIN_PROMETHEUS).parent


def up_environment(path: str, **extra: str) -> dict[str, str]:
    environment = {name: value for name, value in inherited_environment().items() if name != "PROMETHEUS"}
    return {**environment, "PATH": path, **extra}


def flag_values(argv: list[str]) -> dict[str, str]:
    return dict(argument.removeprefix("--").split("=", 1) for argument in argv)


def test_up_monitoring_scrapes_the_started_service_and_stops_prometheus_with_up(
    tmp_path: Path, standin_prometheus: Path
) -> None:
    data_dir, report_file = tmp_path / "data", tmp_path / "prometheus-report.json"
    postgres_port, nats_port, link_port, prometheus_port = free_port(), free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "delinkcious.cli", "up", "--only", "link", "--monitoring",
        "--prometheus-port", str(prometheus_port), "--data-dir", str(data_dir), "--postgres-port", str(postgres_port),
        "--nats-port", str(nats_port), "--log-format", "json",
    ]  # fmt: skip
    path = f"{standin_prometheus}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    up = UpProcess(command, up_environment(path, LINK__PORT=str(link_port), **{REPORT_VARIABLE: str(report_file)}))
    prometheus: psutil.Process | None = None
    try:
        up.wait_for_line("delinkcious is up", timeout=120)
        report: dict[str, Any] = json.loads(report_file.read_text())
        prometheus = psutil.Process(report["pid"])
        with urllib.request.urlopen(f"http://127.0.0.1:{link_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
    finally:
        code, transcript = up.stop()
        if prometheus is not None and is_alive(prometheus):
            prometheus.kill()
    assert code == 0, transcript
    assert report["problems"] == [], report
    assert report["config"]["scrape_configs"] == [
        {"job_name": "link", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{link_port}"], "labels": {"service": "link"}}]},
    ]  # fmt: skip
    assert re.search(r'^delinkcious_http_requests_total\{.*service="link"', metrics, re.MULTILINE), metrics
    if RULES_FILE.is_file():
        assert report["config"]["rule_files"] == [str(RULES_FILE)]
    else:  # an installed package, or before the rules exist: Prometheus runs without them, and `up` says so
        assert "rule_files" not in report["config"]
        assert f"[up] prometheus runs without alerting rules: {RULES_FILE} is not there" in up.output
    prometheus_dir = data_dir / "prometheus"
    flags = flag_values(report["argv"])
    assert flags == {
        "config.file": str(prometheus_dir / "prometheus.yml"),
        "storage.tsdb.path": str(prometheus_dir / "tsdb"),
        "web.listen-address": f"127.0.0.1:{prometheus_port}",
    }
    assert yaml.safe_load(Path(flags["config.file"]).read_text()) == report["config"]
    rows = [line.split() for line in up.output]
    assert ["prometheus", f"http://127.0.0.1:{prometheus_port}", "yes"] in rows
    assert not is_alive(prometheus) and not listening(prometheus_port)


def driver_up(tmp_path: Path, service_port: int, argv: list[str], environment: dict[str, str]) -> UpProcess:
    service_script = tmp_path / "standin_service.py"
    service_script.write_text(STANDIN_SERVICE)
    command = [sys.executable, "-c", DRIVER, str(service_script), str(service_port), "--data-dir",
               str(tmp_path / "data"), *argv]  # fmt: skip
    return UpProcess(command, environment)


def test_without_prometheus_up_says_how_to_get_it_and_comes_up(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    service_port = free_port()
    up = driver_up(tmp_path, service_port, ["--monitoring", "--prometheus-port", str(free_port())],
                   up_environment(str(empty)))  # fmt: skip
    try:
        up.wait_for_line("delinkcious is up", timeout=60)
    finally:
        code, transcript = up.stop()
    assert code == 0, transcript
    assert f"[up] {missing_prometheus_advice({})}" in up.output
    rows = [line.split() for line in up.output]
    assert ["standin", f"http://127.0.0.1:{service_port}", "yes"] in rows
    assert not any(row and row[0] == "prometheus" for row in rows)
    assert not (tmp_path / "data" / PrometheusServer.name).exists()


@pytest.fixture
def leftovers() -> Iterator[list[psutil.Process]]:
    """Processes to kill after the test, whatever happened."""
    processes: list[psutil.Process] = []
    yield processes
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


def test_prometheus_dies_with_up_killed_hard(
    tmp_path: Path, standin_prometheus: Path, leftovers: list[psutil.Process]
) -> None:
    report_file, prometheus_port = tmp_path / "prometheus-report.json", free_port()
    environment = up_environment(f"{standin_prometheus}{os.pathsep}{os.defpath}",
                                 **{REPORT_VARIABLE: str(report_file)})  # fmt: skip
    up = driver_up(tmp_path, free_port(), ["--monitoring", "--prometheus-port", str(prometheus_port)], environment)
    try:
        up.wait_for_line("delinkcious is up", timeout=60)
        prometheus = psutil.Process(json.loads(report_file.read_text())["pid"])
        leftovers.append(prometheus)
        assert listening(prometheus_port)
        up.process.kill()  # SIGKILL: `up` stops nothing itself
        up.process.wait(10)
        assert wait_until(lambda: not is_alive(prometheus), timeout=15)
        assert not listening(prometheus_port)
    finally:
        if up.process.poll() is None:
            up.process.kill()
