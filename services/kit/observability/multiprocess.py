"""Prometheus multi-process mode must be configured before prometheus_client is first imported,
so this module imports nothing from it; the CLI calls it first thing."""
from __future__ import annotations

import os
import tempfile


def prepare_metrics_directory(service: str) -> str | None:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory; returns it if we created it."""
    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if existing:
        os.makedirs(existing, exist_ok=True)
        for entry in os.listdir(existing):  # a previous run's samples would be summed in
            os.unlink(os.path.join(existing, entry))
        return None
    directory = tempfile.mkdtemp(prefix=f"delinkcious-{service}-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory
