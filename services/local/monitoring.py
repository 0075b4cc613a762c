"""Prometheus for `delinkcious up --monitoring`: found on PATH (or named by $PROMETHEUS), given a scrape
config built from the services this run started (one job per service, on the port that serves /metrics,
every target labelled with its catalogue name) and the repository's alerting rules, and run as one more
local server: supervised, restarted after a crash, stopped with `up` and dying with it. Without the
binary, `up` says how to get it and runs without monitoring."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from delinkcious.local.servers.base import Server, answers_ok, reachable_address, url_host
from delinkcious.local.supervisor import SupervisedService

PROMETHEUS_VARIABLE = "PROMETHEUS"  # names the binary when it is not `prometheus` on PATH
HOW_TO_GET_PROMETHEUS = (
    "install Debian's `prometheus` package (apt install prometheus) or put the prometheus binary from "
    "prometheus.io on PATH"
)
# The rules the Helm chart deploys, found beside the package's source (services/ is the package, its parent the
# repository); an installed wheel has no repository around it, so Prometheus then runs without rules.
RULES_FILE = Path(__file__).resolve().parents[2] / "helm" / "delinkcious" / "files" / "monitoring" / "rules.yaml"
SCRAPE_INTERVAL = "5s"
# The rules select targets by this label (`up{service="link"}`); with honor_labels the `service` label each
# service puts on its own metrics is kept as it is (the same name).
SERVICE_LABEL = "service"


@dataclass(frozen=True)
class ScrapeTarget:
    service: str
    address: str  # host:port where this machine reaches the service's /metrics


def scrape_targets(services: Sequence[SupervisedService]) -> list[ScrapeTarget]:
    """Each started service's /metrics: its ops port, where `up` also probes its readiness."""
    return [ScrapeTarget(service.name, reachable_address(service.host, service.ops_port)) for service in services]


def prometheus_config(targets: Sequence[ScrapeTarget], rules_file: Path | None) -> dict[str, Any]:
    """Prometheus' configuration: one scrape job per service, and the alerting rules when there are any."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": target.service,
                "honor_labels": True,
                "static_configs": [{"targets": [target.address], "labels": {SERVICE_LABEL: target.service}}],
            }
            for target in targets
        ],
    }
    if rules_file is not None:
        config["rule_files"] = [str(rules_file)]
    return config


def existing_rules_file(candidate: Path = RULES_FILE) -> Path | None:
    return candidate if candidate.is_file() else None


def find_prometheus(environ: Mapping[str, str]) -> Path | None:
    """The binary $PROMETHEUS names (a path, or a name looked up on PATH), else `prometheus` on PATH."""
    found = shutil.which(environ.get(PROMETHEUS_VARIABLE) or "prometheus", path=environ.get("PATH", os.defpath))
    return Path(found) if found else None


def missing_prometheus_advice(environ: Mapping[str, str]) -> str:
    """One line: why monitoring is off, and how to get Prometheus."""
    if named := environ.get(PROMETHEUS_VARIABLE):
        missing = f"${PROMETHEUS_VARIABLE} names {named!r}, which is not an executable"
    else:
        missing = "prometheus is not on PATH"
    return f"monitoring is off: {missing}; to get it, {HOW_TO_GET_PROMETHEUS}"


class PrometheusServer(Server):
    """Prometheus with the given configuration (written to the data directory at each start) and its time
    series kept in the data directory across runs."""

    name = "prometheus"

    def __init__(self, executable: Path, config: Mapping[str, Any], data_dir: Path, host: str, port: int) -> None:
        super().__init__(data_dir, host, port)
        self.executable = executable
        self.config = dict(config)
        self.config_file = self.data_dir / "prometheus.yml"
        self.storage_dir = self.data_dir / "tsdb"

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def _prepare(self) -> None:
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _command(self) -> list[str]:
        return [
            str(self.executable),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.storage_dir}",
            f"--web.listen-address={self.address}",
        ]

    def _is_ready(self) -> bool:
        return answers_ok(f"http://{reachable_address(self.host, self.port)}/-/ready")
