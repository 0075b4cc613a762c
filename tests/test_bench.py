"""The benchmarks keep working (their numbers are measured by running them, not here): `python -m bench
--quick --tracing` runs to the end, reports every row with numbers, and its system's traces reach the sink; no
timing is asserted."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_news_fanout_benchmark_runs(redis_url):
    assert load("news_fanout").main(["--followers", "50", "--runs", "2", "--redis-url", redis_url]) == 0


@pytest.mark.timeout(900)
def test_the_quick_benchmark_reports_every_row_with_numbers(tmp_path: Path) -> None:
    document = tmp_path / "performance.md"
    document.write_text((ROOT / "docs" / "performance.md").read_text())
    chart, results = tmp_path / "latency.svg", tmp_path / "results.json"
    run = subprocess.run(
        # With tracing on: the same run shows that the services' spans reach the sink (tracing off is the
        # default everywhere else in the suite).
        [sys.executable, "-m", "bench", "--quick", "--tracing", "--report", str(document), "--chart", str(chart),
         "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]

    report = json.loads(results.read_text())
    assert not report["skipped"] and not [note for note in report["notes"] if "failed" in note], report["notes"]
    figures = [row["ours"]["name"] for row in report["rows"]]
    for expected in ("GET /v1/links", "POST /v1/links", "GET /v1/news", "add link -> in follower's GET /v1/news",
                     "fan-out of one link", "GET /v1/links, ", "GET /v1/news, ", "memory of api-gateway, idle",
                     "memory of link, loaded", "`delinkcious up` to ready"):
        assert any(name.startswith(expected) for name in figures), (expected, figures)
    for row in report["rows"]:
        assert row["ours"]["numbers_reported"], row
        assert all(math.isfinite(number) for number in row["ours"]["numbers_reported"]), row
        assert row["floor"] is not None and row["floor"]["numbers_reported"], row
        assert row["result"] in ("", "pass", "FAIL"), row
    assert len([row for row in report["rows"] if row["checks"]]) >= 9

    cpu = report["cpu_per_request"]
    assert list(cpu["phases"]) == ["GET /v1/links", "POST /v1/links", "GET /v1/news"], cpu
    for phase, costs in cpu["phases"].items():
        assert costs["total_ms"] > 0 and "load generator" in costs["ms_by_group"], (phase, costs)
    assert {"api-gateway", "link"} <= set(cpu["phases"]["POST /v1/links"]["ms_by_group"]), cpu

    written = document.read_text()
    assert "Not yet measured" not in written and "| GET /v1/links |" in written
    assert written.startswith("# Performance") and "## Floors" in written  # the prose is kept
    assert chart.read_text().startswith("<svg") and "GET /v1/links p50" in chart.read_text()
    assert "floors:" in run.stdout and "targets:" in run.stdout
    assert cpu["title"] in run.stdout and cpu["title"] in written
    assert "| total |" in written and "cores could serve at this cost" in written

    tracing = report["tracing"]
    assert tracing["spans"] > tracing["traces"] > 0 and tracing["rejected"] == 0, tracing
    assert {"api-gateway", "link", "user", "news"} <= set(tracing["spans_by_service"]), tracing
    assert "trace sink" in cpu["phases"]["GET /v1/links"]["ms_by_group"], cpu
    assert f"Tracing: on (OTLP/HTTP to a local sink, the SDK's defaults): {tracing['spans']:,} spans of" in written


def test_a_rerun_replaces_the_results_and_keeps_the_prose() -> None:
    report = load_package_module("report")
    document = f"# Title\nprose\n\n{report.BEGIN}\nold results\n{report.END}\nmore prose\n"
    replaced = report.replace_results(report.replace_results(document, "first"), "second")
    assert replaced == f"# Title\nprose\n\n{report.BEGIN}\nsecond\n{report.END}\nmore prose\n"
    with pytest.raises(ValueError):
        report.replace_results("no markers", "results")


def test_percentiles_interpolate_between_ranks() -> None:
    stats = load_package_module("stats")
    assert stats.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert stats.percentile([1.0, 2.0], 50) == 1.5
    assert stats.percentile(list(range(101)), 99) == 99
    assert math.isnan(stats.percentile([], 50))


def load_package_module(name: str):
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"bench.{name}")
    finally:
        sys.path.remove(str(ROOT))
