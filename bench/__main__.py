"""`python -m bench` (from the repository's root): see bench/run.py and docs/performance.md."""

from __future__ import annotations

import sys

from bench.run import main

sys.exit(main())
