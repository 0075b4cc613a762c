"""An import-linter contract type the built-in ones lack: an allowlist. "These modules import only
the standard library and these internal modules" stays true when a new third-party dependency is
added, where a list of forbidden packages would silently let it in."""
from __future__ import annotations

import fnmatch
import sys

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class ImportsOnlyContract(Contract):
    """Options: source_modules (packages included with their descendants; * wildcards allowed) and
    allowed_modules (internal modules or packages the sources may import besides the standard
    library; * wildcards allowed). A source may always import modules of its own package."""

    type_name = "imports_only"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField(), required=False, default=[])

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        allowed_patterns = list(self.allowed_modules)  # type: ignore[call-overload]
        violations: list[dict[str, str | int | None]] = []
        for pattern in self.source_modules:  # type: ignore[attr-defined]
            sources = sorted(module for module in graph.modules if fnmatch.fnmatchcase(module, pattern))
            if not sources:  # a renamed module must not turn the contract into a no-op
                violations.append({"importer": pattern, "imported": "(no module matches)", "line": None})
            for source in sources:
                own_package = source if graph.find_children(source) else source.rpartition(".")[0]
                for module in (source, *sorted(graph.find_descendants(source))):
                    for imported in sorted(graph.find_modules_directly_imported_by(module)):
                        if _is_allowed(imported, own_package, allowed_patterns):
                            continue
                        details = graph.get_import_details(importer=module, imported=imported)
                        violations.append({"importer": module, "imported": imported,
                                           "line": details[0]["line_number"] if details else None})
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            output.print_error(f"{violation['importer']} imports {violation['imported']} "
                               f"(l.{violation['line']}), which it may not")


def _is_allowed(imported: str, own_package: str, allowed_patterns: list[str]) -> bool:
    top = imported.partition(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    if imported == own_package or imported.startswith(own_package + "."):
        return True
    return any(imported == pattern or imported.startswith(pattern + ".") or fnmatch.fnmatchcase(imported, pattern)
               for pattern in allowed_patterns)
