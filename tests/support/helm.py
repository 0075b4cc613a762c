"""The chart rendered by `helm template`, where helm is available (it is not pip-installable: the deployment proof
runs these tests with the helm it builds, k8s/verify.sh's static stage)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "delinkcious"


def helm_binary() -> str | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "delinkcious/k8s/v1.20.2/bin/helm"
    return next((candidate for candidate in (os.environ.get("HELM"), shutil.which("helm"), str(cache))
                 if candidate and os.access(candidate, os.X_OK)), None)


HELM = helm_binary()
needs_helm = pytest.mark.skipif(HELM is None, reason="no helm binary (HELM, PATH, or k8s/cluster/build.sh's cache)")


def render(*args: str) -> list[dict]:
    """The chart as release `dlk` in namespace `shop`, with `args` for `helm template`."""
    assert HELM is not None
    result = subprocess.run([HELM, "template", "dlk", str(CHART), "--namespace", "shop", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def objects(documents: list[dict], kind: str) -> dict[str, dict]:
    return {document["metadata"]["name"]: document for document in documents if document["kind"] == kind}
