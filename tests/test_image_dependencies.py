"""Each service image installs pyproject's dependencies and the extra named after the service (services/Dockerfile).
The extras follow from the catalogue's facts, so a service that starts using a store, or gRPC, cannot be given an
image without its driver: the groups an extra names are derived here from the facts, and each service is imported
with exactly the distributions of its extra visible (a site-packages of symbolic links to them, as in its image).
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from delinkcious.catalogue import SERVICES, ServiceFacts, get_service
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "services"  # the import package `delinkcious`
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
SELF = "delinkcious"


def calls_grpc(facts: ServiceFacts) -> bool:
    return any(get_service(called).grpc_port is not None for called in facts.calls)


# Fact -> the requirement group (an extra of pyproject.toml) it needs.
FACT_GROUPS: tuple[tuple[str, Callable[[ServiceFacts], bool], str], ...] = (
    ("uses_postgres", lambda facts: facts.uses_postgres, "postgres"),
    ("uses_nats", lambda facts: facts.uses_nats, "nats"),
    ("uses_redis", lambda facts: facts.uses_redis, "redis"),
    ("grpc_port", lambda facts: facts.grpc_port is not None, "grpc-server"),
    ("calls a service with a grpc_port", calls_grpc, "grpc"),
)
GROUPS = {group for _, _, group in FACT_GROUPS}
# What is neither a service's nor a group's: the development runtime and tools.
OTHER_EXTRAS = {"local", "bench", "dev"}

# The parts of the kit and the contracts only some services run, and for which facts (the longest name that
# matches a module decides); every other module of the kit and the contracts runs in every service. A
# distribution's module here is one the shared kit imports where the settings ask for it.
PARTS: tuple[tuple[str, Callable[[ServiceFacts], bool]], ...] = (
    (f"{SELF}.kit.postgres", lambda facts: facts.uses_postgres),
    (f"{SELF}.kit.serving.database_setup", lambda facts: facts.uses_postgres),  # `delinkcious provision-databases`
    (f"{SELF}.kit.messaging", lambda facts: facts.uses_nats),
    (f"{SELF}.kit.messaging.outbox", lambda facts: facts.uses_postgres and facts.uses_nats),
    (f"{SELF}.kit.serving.grpc_server", lambda facts: facts.grpc_port is not None),
    (f"{SELF}.kit.serving.grpc_client", calls_grpc),
    (f"{SELF}.contracts.news", lambda facts: facts.grpc_port is not None or calls_grpc(facts)),
    ("redis", lambda facts: facts.uses_redis),  # kit/serving/runtime.py's client, with RedisSettings
)
SHARED = (f"{SELF}.kit", f"{SELF}.contracts", f"{SELF}.cli", f"{SELF}.catalogue")


def groups_for(facts: ServiceFacts) -> set[str]:
    return {group for _, applies, group in FACT_GROUPS if applies(facts)}


def self_references(requirements: Iterable[str]) -> set[str]:
    """The extras of this project a list of requirements names (`delinkcious[postgres,nats]`)."""
    named = set()
    for text in requirements:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == SELF:
            named |= set(requirement.extras)
    return named


def expand(extra: str) -> set[str]:
    """Every requirement an extra brings, through the extras it names, by distribution name."""
    found, todo, seen = set(), [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in EXTRAS, f"pyproject.toml names an extra it does not define: {SELF}[{name}]"
        for text in EXTRAS[name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == SELF:
                todo += sorted(requirement.extras)
            else:
                found.add(canonicalize_name(requirement.name))
    return found


def core() -> set[str]:
    return {canonicalize_name(Requirement(text).name) for text in PROJECT["dependencies"]}


# --- the extras, against the facts ----------------------------------------------------------------------------


def test_every_extra_is_a_service_a_requirement_group_or_a_development_tool():
    services = {facts.name for facts in SERVICES}
    assert set(EXTRAS) == services | GROUPS | OTHER_EXTRAS, (
        "an extra per catalogue service (named as the service), the requirement groups of FACT_GROUPS, local, bench, "
        "dev")


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_extra_names_exactly_the_groups_its_facts_need(facts: ServiceFacts):
    facts_named = ", ".join(fact for fact, applies, _ in FACT_GROUPS if applies(facts)) or "none of them"
    assert self_references(EXTRAS[facts.name]) == groups_for(facts), (
        f"pyproject.toml: {facts.name} = [\"{SELF}[{','.join(sorted(groups_for(facts)))}]\", ...] "
        f"(services/catalogue.py facts: {facts_named})")


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_store_driver_comes_only_through_its_group(facts: ServiceFacts):
    """A group's requirements are in no service's own list and not in pyproject's dependencies: a service gets a
    store's driver, or gRPC, only through the fact that needs it."""
    own = {canonicalize_name(Requirement(text).name) for text in EXTRAS[facts.name]} - {SELF}
    grouped = set().union(*(expand(group) for group in GROUPS))
    assert not own & grouped, f"{facts.name}: {sorted(own & grouped)} belong to a requirement group"
    assert not core() & grouped, f"pyproject's dependencies (every image) hold {sorted(core() & grouped)} of a group"


def test_the_development_installs_hold_every_service():
    """`pip install -e '.[local]'` runs `delinkcious up` (every service), `.[dev]` the suite: both install all."""
    assert self_references(EXTRAS["local"]) >= {facts.name for facts in SERVICES}
    assert self_references(EXTRAS["dev"]) >= {"local", "bench"}
    assert expand("dev") >= set().union(*(expand(extra) for extra in EXTRAS))


def test_the_recipe_installs_the_service_extra():
    text = (ROOT / "services" / "Dockerfile").read_text()
    assert re.search(r'pip install --no-cache-dir "\.\[\$\{SERVICE', text), "the build stage installs .[${SERVICE}]"


# --- each service imports with only its distributions ------------------------------------------------------------


def distribution_closure(requirements: Iterable[str]) -> set[str]:
    """The installed distributions `requirements` pull in (this machine's versions and environment markers)."""
    environment = default_environment()
    closure: set[str] = set()
    todo = [Requirement(text) for text in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        closure.add(name)
        for text in importlib.metadata.distribution(name).requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({**environment, "extra": extra})
                                            for extra in ("", *requirement.extras)):
                todo.append(needed)
    return closure


def site_packages_of(distributions: Iterable[str], target: Path) -> Path:
    """A folder holding (links to) exactly the files of `distributions`, and the package from the working tree."""
    target.mkdir(parents=True)
    for name in distributions:
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            if file.parts[0] == ".." or file.parts[0].endswith(".pth"):
                continue  # scripts, and path hooks (the editable install's)
            source = Path(distribution.locate_file(file))
            if source.exists():
                link = target / file
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
    (target / SELF).symlink_to(PACKAGE, target_is_directory=True)
    return target


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join((SELF, *parts[:-1]) if parts[-1] == "__init__" else (SELF, *parts))


def modules_under(*names: str) -> list[str]:
    """Modules below `delinkcious` named or inside the named packages (generated code included)."""
    modules = (module_name(path) for path in sorted(PACKAGE.rglob("*.py")))
    return [module for module in modules if any(within(module, name) for name in names)]


def imports_in(module: str) -> list[tuple[str, list[str]]]:
    """Every import statement of a module, at any depth (functions included) but not for type checkers only:
    (absolute module, names imported from it)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            found.append((base, [alias.name for alias in node.names if alias.name != "*"]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def third_party(module: str) -> bool:
    top = module.partition(".")[0]
    return top != SELF and top not in sys.stdlib_module_names


def within(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def runs_in(module: str, facts: ServiceFacts | None) -> bool:
    """Whether a shared module runs in a service (None: in every service)."""
    matching = [(name, applies) for name, applies in PARTS if within(module, name)]
    if not matching:
        return True
    _, applies = max(matching, key=lambda part: len(part[0]))
    return facts is not None and applies(facts)


def test_what_the_shared_kit_imports_is_in_the_dependencies_or_claimed_by_a_fact():
    """The kit imports a store's client where the settings ask for it (kit/serving/runtime.py); each such import is
    listed in PARTS, so the services with the fact are checked with it and the others are not."""
    shared = distribution_closure(PROJECT["dependencies"])
    allowed = {module for module, names in importlib.metadata.packages_distributions().items()
               if any(canonicalize_name(name) in shared for name in names)}
    claimed = {name for name, _ in PARTS if not within(name, SELF)}
    unlisted = sorted({f"{module}: {imported}" for module in modules_under(*SHARED) if runs_in(module, None)
                       for imported, _ in imports_in(module)
                       if third_party(imported) and imported.partition(".")[0] not in allowed
                       and not any(within(imported, name) for name in claimed)})
    assert not unlisted, f"third-party imports of the shared kit that no fact claims (PARTS): {unlisted}"


IMPORT_CHECK = textwrap.dedent("""
    import importlib, json, sys
    site, service, targets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path.insert(0, site)
    from delinkcious.catalogue import get_service
    facts = get_service(service)
    definition = facts.definition()
    assert definition.name == service, definition.name
    if facts.uses_postgres:
        definition.migration_dirs()
    for module, names in targets:
        imported = importlib.import_module(module)
        for name in names:  # `from module import name`: an attribute, or a submodule
            if not hasattr(imported, name):
                importlib.import_module(f"{module}.{name}")
    # Tracing: each library the service uses comes with its instrumentation, and all of them load.
    import importlib.util
    from delinkcious.kit.observability import tracing
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    missing = [instrumentation for library, instrumentation in tracing.INSTRUMENTATIONS.items()
               if library in sys.modules and importlib.util.find_spec(instrumentation) is None]
    assert not missing, f"instrumentations missing from the extra: {missing}"
    tracing.configure_tracing(service, exporter=InMemorySpanExporter())
    outside = sorted({name.split(".")[0] for name, module in sys.modules.items()
                      if getattr(module, "__file__", None) and not module.__file__.startswith((site, sys.base_prefix))})
    print(json.dumps(outside))
""")


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_imports_with_only_its_extra_installed(facts: ServiceFacts, tmp_path: Path):
    """As in its image: the service's definition, its own modules and everything they import, lazily too (the
    gateway's authlib, at the first login), the shared kit (serve, probe, the worker) and the parts its facts need."""
    distributions = distribution_closure([*PROJECT["dependencies"], *sorted(expand(facts.name))])
    site = site_packages_of(sorted(distributions), tmp_path / "site-packages")

    shared = [module for module in modules_under(*SHARED) if runs_in(module, facts)]
    own = modules_under(f"{SELF}.{facts.package}")
    targets: list[tuple[str, list[str]]] = [(module, []) for module in [*shared, *own]]
    targets += [(name, []) for name, applies in PARTS if not within(name, SELF) and applies(facts)]
    # Lazy imports too: all of the service's own, and those of the parts only some services run (the shared
    # modules' lazy imports depend on the settings: PARTS names the third-party ones).
    for module in [*own, *(module for module in shared if not runs_in(module, None))]:
        targets += imports_in(module)

    # -S: no site-packages but the one made above (no .pth, no editable install); -E: no PYTHON* of this run.
    result = subprocess.run([sys.executable, "-S", "-E", "-c", IMPORT_CHECK, str(site), facts.name,
                             json.dumps(targets)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, (
        f"{facts.name} does not import with pyproject's dependencies and its extra ({sorted(expand(facts.name))}): "
        f"add what it needs to its extra, or to a group its facts name\n{result.stderr}")
    assert json.loads(result.stdout) == [], "modules were loaded from outside the service's site-packages"
