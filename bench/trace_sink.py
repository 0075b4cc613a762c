"""A local OTLP/HTTP trace sink for `python -m bench --tracing`: the services export their spans to it as they
would to a collector, and it only counts them.

It answers `POST /v1/traces` as a collector does (200 and an empty ExportTraceServiceResponse), decodes each
ExportTraceServiceRequest so that a run which traced nothing shows (and a payload that does not decode is a 400,
as a collector's), and counts exports, spans by the service named in their resource, and traces (root spans:
one per request traced, so spans dropped on the way show as fewer traces than requests). The CPU its handlers
spend is counted too, since it shares the machine with the system, as the load generator does.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

TRACES_PATH = "/v1/traces"  # where an OTLP/HTTP exporter sends, below OTEL_EXPORTER_OTLP_ENDPOINT
# The SDK's batch processor exports what it holds at least this often (OTEL_BSP_SCHEDULE_DELAY's default, 5 s).
EXPORT_INTERVAL_SECONDS = 5.0
EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


@dataclass(frozen=True)
class SinkCounts:
    exports: int  # POSTs that decoded
    spans: int
    spans_by_service: dict[str, int]
    traces: int  # root spans received
    rejected: int  # POSTs that did not decode (answered 400)
    cpu_seconds: float  # the handlers' own CPU time (decoding and answering)


@dataclass
class _Tally:
    exports: int = 0
    traces: int = 0
    rejected: int = 0
    cpu_seconds: float = 0.0
    last_export: float = 0.0  # time.monotonic() of the last export taken
    spans_by_service: Counter[str] = field(default_factory=Counter)


class TraceSink:
    """Started by start(), stopped by stop(); counts() may be read at any time."""

    def __init__(self) -> None:
        self._tally = _Tally()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="trace-sink", daemon=True)

    @property
    def url(self) -> str:
        """The value of OTEL_EXPORTER_OTLP_ENDPOINT (the exporter adds /v1/traces)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def counts(self) -> SinkCounts:
        with self._lock:
            tally = self._tally
            return SinkCounts(exports=tally.exports, spans=sum(tally.spans_by_service.values()),
                              spans_by_service=dict(tally.spans_by_service), traces=tally.traces,
                              rejected=tally.rejected,
                              cpu_seconds=tally.cpu_seconds)

    def wait_until_drained(self, longest: float = 30.0) -> None:
        """Wait until no export has arrived for longer than the exporters' interval (at most `longest` seconds):
        then every span ended so far has arrived, and what comes next is counted apart."""
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline:
            with self._lock:
                idle = time.monotonic() - self._tally.last_export
            if idle > EXPORT_INTERVAL_SECONDS + 0.5:
                return
            time.sleep(min(0.5, EXPORT_INTERVAL_SECONDS + 0.5 - idle + 0.01))

    def take(self, body: bytes, encoding: str) -> bool:
        """Count one export; False if it does not decode."""
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
        except Exception:  # noqa: BLE001 - whatever does not decode is the exporter's 400
            with self._lock:
                self._tally.rejected += 1
            return False
        received: Counter[str] = Counter()
        roots = 0
        for resource_spans in export.resource_spans:
            service = next((item.value.string_value for item in resource_spans.resource.attributes
                            if item.key == "service.name"), "unknown")
            for scope_spans in resource_spans.scope_spans:
                received[service] += len(scope_spans.spans)
                roots += sum(not span.parent_span_id for span in scope_spans.spans)
        with self._lock:
            self._tally.exports += 1
            self._tally.last_export = time.monotonic()
            self._tally.traces += roots
            self._tally.spans_by_service.update(received)
        return True

    def _count_cpu(self, seconds: float) -> None:
        with self._lock:
            self._tally.cpu_seconds += seconds

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the exporter's session keeps its connection, as with a collector

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                started = time.thread_time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != TRACES_PATH:
                    self._answer(404, b"", "text/plain")
                elif sink.take(body, self.headers.get("Content-Encoding", "")):
                    self._answer(200, EMPTY_RESPONSE, "application/x-protobuf")
                else:
                    self._answer(400, b"", "text/plain")
                sink._count_cpu(time.thread_time() - started)

            def _answer(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # the run's output is its own
                pass

        return Handler
