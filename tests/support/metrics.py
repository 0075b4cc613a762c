"""Metric names three ways: the dictionary's (services/kit/observability/metrics.py, as PromQL names them), those a
PromQL expression names, and the families a /metrics page exports with samples."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "delinkcious" / "files" / "monitoring" / "dashboard.json"
# What prometheus_client writes after a family's name for each of its samples, by type.
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# A metric of ours in PromQL; recording rules (`delinkcious:...`) do not match.
_OUR_METRIC = re.compile(r"(?<![\w:])delinkcious_[a-z0-9_]+")


def dictionary() -> dict[str, str]:
    """Every metric of the dictionary by the name PromQL uses (counters end in _total), with its type."""
    from delinkcious.kit.observability import metrics

    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            # prometheus_client keeps a counter's name without _total.
            found[value._name + ("_total" if value._type == "counter" else "")] = value._type
    return found


def sample_names(name: str, kind: str) -> set[str]:
    """The series names PromQL may use for a metric of the dictionary (a histogram's _bucket, _sum, _count)."""
    base = name.removesuffix("_total") if kind == "counter" else name
    return {base + suffix for suffix in SAMPLE_SUFFIXES[kind]}


def names_in_promql(expression: str) -> set[str]:
    return set(_OUR_METRIC.findall(expression))


def unknown_names(expression: str) -> set[str]:
    """The names of ours an expression uses that no metric of the dictionary exports."""
    known = {sample for name, kind in dictionary().items() for sample in sample_names(name, kind)}
    return names_in_promql(expression) - known


def metric_of(sample: str) -> str | None:
    """The dictionary name a series name belongs to (`..._bucket` -> the histogram), or None."""
    for name, kind in dictionary().items():
        if sample in sample_names(name, kind):
            return name
    return None


def exported_metrics(exposition: str) -> set[str]:
    """The dictionary names of the families a /metrics page holds at least one sample of. Under gunicorn
    (prometheus_client's multi-process mode) a family appears only once one of its series was created."""
    found = set()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            name = metric_of(sample.name)
            if name is not None:
                found.add(name)
    return found


def dashboard_queries() -> list[str]:
    """The PromQL of every panel of the Grafana dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def dashboard_metrics() -> set[str]:
    """The dictionary names of the metrics the dashboard queries (a histogram's _bucket is the histogram)."""
    return {metric_of(name) or name for expression in dashboard_queries() for name in names_in_promql(expression)}
