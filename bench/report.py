"""The benchmark's results: each figure of ours beside its floor and its targets, and the CPU each request
cost, as tables for the terminal and for docs/performance.md (between markers, so a rerun replaces the
results and keeps the prose), with the machine they were measured on."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

BEGIN = "<!-- bench results: written by `python -m bench`; do not edit by hand -->"
END = "<!-- end of bench results -->"
# The tracing section's figures, rewritten by `python -m bench --tracing-cost` the same way.
TRACING_BEGIN = "<!-- tracing cost: written by `python -m bench --tracing-cost`; do not edit by hand -->"
TRACING_END = "<!-- end of tracing cost -->"

LATENCY = "latency"  # a figure read by its p50 and p99
RATE = "rate"  # a figure read by its achieved rate (closed-loop maximum)
VALUE = "value"  # a figure that is one number (seconds, MB)

CPU_TITLE = ("CPU per request, ms, by process group (from the start of the phase until the system was quiet "
             "again)")
CPU_CAVEAT = ("The whole phase's CPU, warm-up included, over every request answered in it, warm-up included; "
              "locust's own start-up is in the load generator's row.")
CPU_SORTED_BY = "POST /v1/links"  # the phase that sets off the most work after its answer


@dataclass(frozen=True)
class Figure:
    """One measurement: of ours or of a floor."""

    name: str
    headline: str  # LATENCY, RATE or VALUE
    offered: float | None = None  # requests per second; None: closed loop or not a load
    achieved: float | None = None  # requests per second
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    value: float | None = None
    unit: str = ""
    note: str = ""

    def numbers(self) -> list[float]:
        """The numbers this figure reports (what every row must have)."""
        candidates = {LATENCY: (self.p50_ms, self.p99_ms), RATE: (self.achieved,), VALUE: (self.value,)}
        return [number for number in candidates[self.headline] if number is not None]


@dataclass(frozen=True)
class Check:
    target: str
    passed: bool | None  # None: could not be judged (not measured)


@dataclass
class Row:
    ours: Figure
    floor: Figure | None = None
    checks: list[Check] = field(default_factory=list)

    def ratio(self) -> str:
        """Ours over the floor, in the figure's headline numbers ("3.1x / 2.4x" for p50 / p99)."""
        if self.floor is None:
            return "-"
        ours, floor = self.ours, self.floor
        if ours.headline == LATENCY:
            return f"{_ratio(ours.p50_ms, floor.p50_ms)} / {_ratio(ours.p99_ms, floor.p99_ms)}"
        if ours.headline == RATE:
            return _ratio(ours.achieved, floor.achieved)
        return _ratio(ours.value, floor.value)

    def result(self) -> str:
        if not self.checks:
            return ""
        if any(check.passed is None for check in self.checks):
            return "n/a"
        return "pass" if all(check.passed for check in self.checks) else "FAIL"


def _ratio(ours: float | None, floor: float | None) -> str:
    if ours is None or floor is None or not floor or math.isnan(ours) or math.isnan(floor):
        return "-"
    return f"{ours / floor:.2f}x"


def _number(value: float | None, decimals: int = 1) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    # Thousands separated: a large count or rate never reads like a port number in the docs.
    return f"{value:,.{decimals}f}" if abs(value) >= 1000 else f"{value:.{decimals}f}"


def _rate(figure: Figure) -> str:
    if figure.offered is None and figure.achieved is None:
        return ""
    offered = f"{_number(figure.offered, 0)}/s" if figure.offered is not None else "max"
    return f"{offered} -> {_number(figure.achieved)}/s" if figure.achieved is not None else offered


def _value(figure: Figure) -> str:
    if figure.value is None:
        return figure.note
    text = f"{_number(figure.value, 3 if figure.unit == 's' else 1)} {figure.unit}".strip()
    return f"{text} ({figure.note})" if figure.note else text


def _figure_cells(figure: Figure) -> list[str]:
    return [figure.name, _rate(figure), _number(figure.p50_ms, 2), _number(figure.p99_ms, 2),
            "" if figure.errors is None else _number(figure.errors, 0), _value(figure)]


FIGURE_HEADER = ["figure", "offered -> achieved", "p50 ms", "p99 ms", "errors", "value"]
ROW_HEADER = [*FIGURE_HEADER, "floor", "x floor", "target", "result"]


def row_cells(row: Row) -> list[str]:
    targets = "; ".join(check.target for check in row.checks)
    return [*_figure_cells(row.ours), row.floor.name if row.floor else "-", row.ratio(), targets, row.result()]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(cells) for cells in rows)])


def cpu_header(cpu_per_request: dict[str, dict[str, float]]) -> list[str]:
    return ["process group", *cpu_per_request]


def cpu_rows(cpu_per_request: dict[str, dict[str, float]]) -> list[list[str]]:
    """One row per process group, the costliest in CPU_SORTED_BY's phase first; then the total and what it
    means: how many such requests a second this machine's cores could serve if nothing else ran."""
    phases = list(cpu_per_request)
    sorted_by = CPU_SORTED_BY if CPU_SORTED_BY in cpu_per_request else phases[0]
    groups = sorted({group for costs in cpu_per_request.values() for group in costs},
                    key=lambda group: (-cpu_per_request[sorted_by].get(group, 0.0), group))
    rows = [[group, *(_number(cpu_per_request[phase].get(group), 2) or "-" for phase in phases)]
            for group in groups]
    totals = [cpu_total_ms(cpu_per_request[phase]) for phase in phases]
    cores = os.cpu_count() or 1
    rows.append(["total", *(_number(total, 2) for total in totals)])
    rows.append([f"requests per second {cores} cores could serve at this cost",
                 *(_number(cores * 1000 / total, 0) if total > 0 else "-" for total in totals)])
    return rows


def cpu_total_ms(costs: dict[str, float]) -> float:
    return sum(costs.values())


# --------------------------------------------------------------------------------------
# The machine


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    physical = psutil.cpu_count(logical=False)
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} logical" + (f", {physical} physical" if physical else ""),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": _os_name(),
        "load average at start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "commit": _commit(),
    }


def _os_name() -> str:
    try:
        for text in Path("/etc/os-release").read_text().splitlines():
            if text.startswith("PRETTY_NAME="):
                return f"{text.split('=', 1)[1].strip(chr(34))}, {platform.system()} {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' with uncommitted changes' if changed else ''}" if commit else "unknown"


# --------------------------------------------------------------------------------------
# The whole report


@dataclass
class Report:
    command: str
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    floors: list[Figure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)  # every load phase in full, for --json
    cpu_per_request: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process group -> ms
    tracing: dict[str, Any] | None = None  # what the trace sink received (bench.trace_sink.SinkCounts); None: off
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    duration_seconds: float = 0.0

    def text(self) -> str:
        parts = [text_table(ROW_HEADER, [row_cells(row) for row in self.rows]), "",
                 "floors:", text_table(FIGURE_HEADER, [_figure_cells(floor) for floor in self.floors])]
        passed = sum(row.result() == "pass" for row in self.rows)
        judged = sum(row.result() in ("pass", "FAIL") for row in self.rows)
        if self.cpu_per_request:
            parts += ["", f"{CPU_TITLE}:", text_table(cpu_header(self.cpu_per_request),
                                                       cpu_rows(self.cpu_per_request)), CPU_CAVEAT]
        parts += ["", f"targets: {passed} of {judged} rows pass", f"tracing: {tracing_text(self.tracing)}"]
        parts += [f"skipped: {reason}" for reason in self.skipped]
        parts += [f"note: {note}" for note in self.notes]
        return "\n".join(parts)

    def markdown(self, chart_name: str | None) -> str:
        passed = sum(row.result() == "pass" for row in self.rows)
        judged = sum(row.result() in ("pass", "FAIL") for row in self.rows)
        parts = [
            f"Measured {self.started:%Y-%m-%d %H:%M} UTC by `{self.command}` in {self.duration_seconds / 60:.1f} "
            f"minutes; {passed} of {judged} rows meet their targets. Tracing: {tracing_text(self.tracing)}.",
            "",
            markdown_table(["machine", ""], [[name, value] for name, value in self.machine.items()]),
            "",
            markdown_table(ROW_HEADER, [row_cells(row) for row in self.rows]),
            "",
            "Floors, driven the same way:",
            "",
            markdown_table(FIGURE_HEADER, [_figure_cells(floor) for floor in self.floors]),
        ]
        if self.cpu_per_request:
            parts += ["", f"{CPU_TITLE}:", "",
                      markdown_table(cpu_header(self.cpu_per_request), cpu_rows(self.cpu_per_request)), "",
                      CPU_CAVEAT]
        if self.skipped or self.notes:
            parts += ["", *(f"- skipped: {reason}" for reason in self.skipped), *(f"- {note}" for note in self.notes)]
        if chart_name:
            parts += ["", f"![latency against offered rate]({chart_name})"]
        return "\n".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "command": self.command, "machine": self.machine, "started": self.started.isoformat(),
            "duration_seconds": self.duration_seconds, "skipped": self.skipped, "notes": self.notes,
            "tracing": self.tracing,
            "rows": [{"ours": _figure_json(row.ours), "floor": _figure_json(row.floor) if row.floor else None,
                      "ratio": row.ratio(), "checks": [asdict(check) for check in row.checks],
                      "result": row.result()} for row in self.rows],
            "floors": [_figure_json(floor) for floor in self.floors],
            "loads": self.loads,
            "cpu_per_request": {
                "title": CPU_TITLE, "cores": os.cpu_count(),
                "phases": {phase: {"ms_by_group": costs, "total_ms": cpu_total_ms(costs)}
                           for phase, costs in self.cpu_per_request.items()},
            },
        }


def _figure_json(figure: Figure) -> dict[str, Any]:
    return {**asdict(figure), "numbers_reported": figure.numbers()}


def tracing_text(tracing: dict[str, Any] | None) -> str:
    """How a run traced: "off", or what the sink received (a run that traced nothing shows as 0 spans)."""
    if tracing is None:
        return "off"
    services = ", ".join(f"{service} {count:,}" for service, count in sorted(tracing["spans_by_service"].items()))
    return (f"on (OTLP/HTTP to a local sink, the SDK's defaults): {tracing['spans']:,} spans of "
            f"{tracing['traces']:,} traces received in {tracing['exports']:,} exports"
            + (f" (spans by service: {services})" if services else ""))


def replace_results(document: str, results: str, begin: str = BEGIN, end: str = END) -> str:
    """`document` with the text between `begin` and `end` replaced by `results` (the rest kept as written)."""
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        raise ValueError(f"the document must hold the markers {begin!r} and {end!r} once each, in order")
    head, rest = document.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{results.strip()}\n{end}{tail}"
