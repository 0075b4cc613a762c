"""Delinkcious benchmarks: `python -m bench` measures the system against its floors and its targets
(docs/performance.md); `bench/news_fanout.py` is the fan-out benchmark on its own."""
