"""docs/reliability.md reports the fault suite: every scenario in tests/faults is named there (with the figures of
a run), and every scenario it names still exists, so the document and the suite cannot drift apart."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "reliability.md"


def scenarios() -> set[str]:
    names = set()
    for module in Path(__file__).parent.glob("test_*.py"):
        if module.name == Path(__file__).name:
            continue
        tree = ast.parse(module.read_text())
        names |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    return names


def test_every_scenario_is_in_the_document_and_every_documented_one_exists():
    text = DOCUMENT.read_text(encoding="utf-8")
    documented = set(re.findall(r"`(test_[a-z0-9_]+)`", text))
    assert scenarios(), "no scenario found"
    assert scenarios() - documented == set(), "scenarios missing from docs/reliability.md"
    assert documented - scenarios() == set(), "docs/reliability.md names scenarios that no longer exist"
