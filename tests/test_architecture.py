"""The architecture holds: the import-linter contracts in pyproject.toml (the kit's layers, a
framework-free domain, independent services) are kept, and the allowlist contract type they use
really catches a forbidden import."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

from tests.architecture import ImportsOnlyContract

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _check(imports: dict[str, list[str]], allowed: list[str]) -> list[str]:
    graph = grimp.ImportGraph()
    for importer, imported_modules in imports.items():
        graph.add_module(importer)
        for imported in imported_modules:
            graph.add_module(imported, is_squashed=not imported.startswith("app"))
            graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="import")
    contract = ImportsOnlyContract(name="test", session_options={},
                                   contract_options={"source_modules": ["app.*.domain"], "allowed_modules": allowed})
    check = contract.check(graph, verbose=False)
    return [f"{v['importer']} -> {v['imported']}" for v in check.metadata["violations"]]


def test_allowlist_refuses_a_third_party_import_in_a_domain_module():
    assert _check({"app.link.domain": ["dataclasses", "app.kit.core", "psycopg2"]}, ["app.kit.core"]) == [
        "app.link.domain -> psycopg2"]


def test_allowlist_refuses_an_internal_module_it_does_not_name():
    assert _check({"app.link.domain": ["app.kit.serving"]}, ["app.kit.core"]) == ["app.link.domain -> app.kit.serving"]


def test_allowlist_refuses_a_pattern_that_matches_nothing():
    assert _check({"app.other": ["json"]}, []) == ["app.*.domain -> (no module matches)"]
