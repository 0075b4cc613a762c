"""The catalogue (services/catalogue.py) is the one place a service's facts are written: what reads
them agrees with it, and a port written in prose elsewhere fails here when it drifts."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from delinkcious.catalogue import SERVICES, ServiceFacts, get_service
from delinkcious.local.options import parse_options

ROOT = Path(__file__).resolve().parents[1]
# What a service port looks like in prose: 8080-8099 and 9080-9099 (the servers `up` starts use 14xxx-16xxx).
PORT_LIKE = re.compile(r"(?<![\d.])(?:80|90)[89]\d(?![\d])")


def ports_of(facts: ServiceFacts) -> set[int]:
    return {port for port in (facts.port, facts.admin_port, facts.grpc_port) if port is not None}


UP_PROMETHEUS_PORT = parse_options([], {}, False).prometheus_port


def owner_of(port: int) -> ServiceFacts | None:
    return next((facts for facts in SERVICES if port in ports_of(facts)), None)


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_is_defined_under_its_catalogue_name_with_its_catalogue_ports(facts):
    definition = facts.definition()
    assert definition.name == facts.name
    fields = definition.settings_class.model_fields
    assert fields["port"].default == facts.port
    assert fields["admin_port"].default == facts.admin_port
    if facts.grpc_port is not None:
        assert fields["grpc_port"].default == facts.grpc_port


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_what_a_service_calls_and_who_may_call_it_are_catalogue_services(facts):
    for other in (*facts.calls, *facts.allowed_callers):
        assert get_service(other).name == other
    assert facts.name not in facts.calls


def prose_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "integration-test" / "README.md",
            *sorted((ROOT / "services").glob("*/README.md")), *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", prose_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_ports_written_in_the_docs_are_the_catalogues(path):
    readme_of = next((facts for facts in SERVICES if path.parent.name == facts.package), None)
    drifted = []
    generated = False  # the settings reference is rendered from the settings classes themselves
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        generated = (generated or "<!-- settings: generated" in line) and "<!-- end of generated settings" not in line
        if generated:
            continue
        for match in PORT_LIKE.finditer(line):
            if line[:match.start()].endswith("__PORT="):  # an example of overriding the catalogue's port
                continue
            port = int(match.group())
            if port == UP_PROMETHEUS_PORT:  # `delinkcious up --monitoring`'s Prometheus, an option's default
                continue
            owner = owner_of(port)
            named_on_line = owner is not None and (owner.name in line or owner.package in line
                                                   or owner.name.upper().replace("-", "_") in line)
            if owner is None or (readme_of is not None and owner is not readme_of and not named_on_line):
                drifted.append(f"line {number}: {port}: {line.strip()}")
    assert not drifted, "ports that are not the catalogue's (services/catalogue.py):\n" + "\n".join(drifted)


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_every_variable_up_gives_a_service_is_one_of_its_settings(facts, tmp_path):
    """The environment `delinkcious up` builds names settings, not guesses: a renamed setting fails here."""
    from dataclasses import replace

    from delinkcious.local.secrets import SecretsLayout
    from delinkcious.local.servers import DatabaseAccess
    from delinkcious.local.wiring import service_environment, services_wiring

    wiring = replace(
        services_wiring(SERVICES, "127.0.0.1", "json", SecretsLayout(tmp_path), {}),
        nats_url="nats://127.0.0.1:14222", redis_url="redis://127.0.0.1:16379/0",
        databases={facts.name: DatabaseAccess(f"postgresql://{facts.package}@127.0.0.1:15432/x", tmp_path / "pw")},
        oidc_discovery_url="http://127.0.0.1:9400/.well-known/openid-configuration",
    )
    environment = service_environment(facts, wiring, {"PATH": "/usr/bin"})
    settings = {name.upper() for name in facts.definition().settings_class.model_fields}
    not_settings = {variable.removesuffix("_FILE") for variable in environment
                    if variable not in ("PATH", "PYTHONUNBUFFERED")} - settings
    assert not not_settings, f"up sets variables {facts.name} has no setting for"


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_demands_caller_identity_exactly_when_the_catalogue_lets_someone_call_it(facts):
    """A service nobody may call (a worker without an API, the public gateway) needs no caller tokens."""
    assert facts.definition().settings_class.serves_internal_callers == bool(facts.allowed_callers)
