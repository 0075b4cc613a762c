"""The benchmark's tracing parts without running the system: the trace sink counts what a real OTLP exporter
sends, `--tracing-cost`'s table compares its two runs right, and its section of docs/performance.md is rewritten
apart from the results section. (`python -m bench --quick --tracing` in tests/test_bench.py runs them for real.)"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
import urllib3
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from bench import report, run
from bench.load import LoadResult
from bench.trace_sink import SinkCounts, TraceSink

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sink():
    started = TraceSink()
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_the_sink_counts_the_spans_an_otlp_exporter_sends_by_service(sink: TraceSink) -> None:
    for service, count in (("api-gateway", 3), ("link", 2)):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces")))
        tracer = provider.get_tracer("bench-test")
        with tracer.start_as_current_span("request"):  # a trace of `count` spans: a root and its children
            for index in range(count - 1):
                with tracer.start_as_current_span(f"step {index}"):
                    pass
        provider.shutdown()
    counts = sink.counts()
    assert (counts.spans, counts.traces, counts.exports, counts.rejected) == (5, 2, 5, 0)
    assert counts.spans_by_service == {"api-gateway": 3, "link": 2}
    assert counts.cpu_seconds > 0


def test_the_sink_refuses_what_does_not_decode_and_paths_it_does_not_serve(sink: TraceSink) -> None:
    http = urllib3.PoolManager()
    assert http.request("POST", f"{sink.url}/v1/traces", body=b"\xff not protobuf").status == 400
    assert http.request("POST", f"{sink.url}/v1/metrics", body=b"").status == 404
    assert sink.counts().rejected == 1 and sink.counts().spans == 0
    assert run.tracing_failures(sink.counts()) == ["tracing was on, but the trace sink received no span",
                                                   "the trace sink could not decode 1 exports"]
    assert run.tracing_failures(None) == []  # tracing off: nothing is expected


def load_result(offered: float | None, achieved: float, p50: float, p99: float) -> LoadResult:
    return LoadResult(name="GET /v1/links", offered_rate=offered, users=100 if offered else 32, seconds=30,
                      requests=int(achieved * 30), failures=0, achieved_rate=achieved, p50_ms=p50, p99_ms=p99,
                      client_cpu_percent=50, client_cpu_seconds=10, answered_in_all=int(achieved * 31))


def links_reads(factor: float, tracing: SinkCounts | None, spans_per_request: float | None,
                traces_per_request: float | None) -> run.LinksReads:
    """A run whose latencies and the system's CPU are `factor` times tracing off's, its throughput 1/factor."""
    loads = {"GET /v1/links@100": load_result(100, 99.5, 10 * factor, 20 * factor),
             "GET /v1/links@200": load_result(200, 180 / factor, 400 * factor, 800 * factor),
             "GET /v1/links@max": load_result(None, 200 / factor, 150, 300)}
    costs = {"api-gateway": 4.0 * factor, "link": 4.0 * factor, "load generator": 1.0}
    if tracing is not None:
        costs["trace sink"] = 0.5
    return run.LinksReads(loads=loads, cpu_per_request={key: dict(costs) for key in loads},
                          others_cpu_per_request={key: 0.1 * factor for key in loads}, tracing=tracing,
                          spans_per_request=spans_per_request, traces_per_request=traces_per_request, failures=[],
                          notes=[])


def test_the_tracing_cost_table_puts_off_beside_on_with_the_change() -> None:
    received = SinkCounts(exports=40, spans=9000, spans_by_service={"api-gateway": 5000, "link": 4000},
                          traces=1000, rejected=0, cpu_seconds=3.0)
    off, on = links_reads(1.0, None, None, None), links_reads(1.25, received, 9.0, 1.0)
    rows = {row[0]: row[1:] for row in run.tracing_cost_rows(off, on)}
    assert rows["200/s offered: achieved"] == ["180.0/s", "144.0/s", "-20%"]
    assert rows["200/s offered: p99"] == ["800.00 ms", "1000.00 ms", "+25%"]
    assert rows["100/s offered: p50"] == ["10.00 ms", "12.50 ms", "+25%"]
    assert rows["maximum (32 users, closed loop): achieved"] == ["200.0/s", "160.0/s", "-20%"]
    # The system's CPU leaves out the load generator and the sink, which gets a row of its own.
    assert rows["200/s offered: CPU per request, the system"] == ["8.00 ms", "10.00 ms", "+2.00 ms (+25%)"]
    assert rows["200/s offered: CPU per request, the trace sink"] == ["-", "0.50 ms", ""]
    assert rows["200/s offered: CPU per request, other processes"] == [
        "0.10 ms", "0.12 ms", ""]
    assert rows["spans received per request"] == ["-", "9.0", ""]
    assert rows["traces received per request (1: every request traced)"] == ["-", "1.00", ""]

    by_group = run.tracing_cost_group_rows(off, on, "GET /v1/links@200")
    assert by_group[-1] == ["total", "9.00", "11.50", "+2.50"]
    assert ["trace sink", "-", "0.50", "+0.50"] in by_group

    written = run.tracing_cost_report(off, on, command="python -m bench --tracing-cost", machine_facts={"cores": "2"},
                                      started=datetime(2026, 12, 1, 5, 0), seconds=600, markdown=True)
    assert "9,000 spans of 1,000 traces received in 40 exports (spans by service: api-gateway 5,000, link 4,000)" \
        in written
    assert "| 200/s offered: p99 | 800.00 ms | 1000.00 ms | +25% |" in written


def test_the_tracing_section_and_the_results_section_are_rewritten_apart() -> None:
    document = (f"# Title\n{report.TRACING_BEGIN}\nold tracing\n{report.TRACING_END}\nprose\n"
                f"{report.BEGIN}\nold results\n{report.END}\n")
    both = report.replace_results(report.replace_results(document, "new results"), "new tracing",
                                  report.TRACING_BEGIN, report.TRACING_END)
    assert both == (f"# Title\n{report.TRACING_BEGIN}\nnew tracing\n{report.TRACING_END}\nprose\n"
                    f"{report.BEGIN}\nnew results\n{report.END}\n")
    # The real document holds both pairs of markers, so either run can rewrite its part of it.
    performance = (ROOT / "docs" / "performance.md").read_text()
    report.replace_results(performance, "results")
    report.replace_results(performance, "tracing", report.TRACING_BEGIN, report.TRACING_END)
    assert re.search(r"^## Tracing$", performance, re.MULTILINE)


def test_every_option_of_the_benchmark_is_in_the_documents_option_table() -> None:
    performance = (ROOT / "docs" / "performance.md").read_text()
    table = [line for line in performance.splitlines() if line.startswith("| `--")]
    documented = set(re.findall(r"`(--[a-z-]+)", "\n".join(table)))
    options = {option for action in run.argument_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    assert options == documented
