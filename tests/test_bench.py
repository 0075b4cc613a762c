"""The benchmarks keep working (their numbers are measured by running them, not here)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_news_fanout_benchmark_runs(redis_url):
    assert load("news_fanout").main(["--followers", "50", "--runs", "2", "--redis-url", redis_url]) == 0
