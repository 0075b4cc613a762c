"""docker-compose.yaml is generated from the catalogue (services/local/compose.py): the committed file is what
the generator renders, each service's environment is complete for its settings class with the secrets the file
mounts for it (a service that signs page tokens does not start without its own), and every declared secret is
used. `docker compose config -q` and a real run under podman-compose
are in the deployment proof (k8s/verify.sh)."""
from __future__ import annotations

import os

import pytest
import yaml
from delinkcious.catalogue import SERVICES
from delinkcious.kit.serving.config import load_settings
from delinkcious.local import compose


def test_the_committed_file_is_the_generated_one():
    assert compose.COMPOSE_FILE.read_text() == compose.render(), "run ./build.sh compose and commit the result"


@pytest.fixture(scope="module")
def document():
    return yaml.safe_load(compose.render())


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_starts_with_exactly_what_the_file_gives_it(facts, document, tmp_path, monkeypatch):
    """Its settings load from the file's environment and the secret files it mounts, and nothing else."""
    definition = document["services"][facts.name]
    for secret in definition["secrets"]:
        path = tmp_path / secret["target"].removeprefix("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"value-of-{secret['source']}-{'x' * 32}\n")  # long enough for any secret setting
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in definition["environment"].items():
        monkeypatch.setenv(name, value.replace("/run/", f"{tmp_path}/run/").replace("${DELINKCIOUS_PORT:-8080}", "8080"))
    monkeypatch.setenv("SERVICE_NAME", facts.name)  # set by the image
    settings = load_settings(facts.definition().settings_class)
    assert settings.port == facts.port
    declared = {name.upper() for name in facts.definition().settings_class.model_fields}
    # OTEL_* are OpenTelemetry's own variables, read by its SDK (kit/observability/tracing.py), not our settings.
    ours = {name.removesuffix("_FILE") for name in definition["environment"] if not name.startswith("OTEL_")}
    assert ours <= declared


def test_every_secret_is_used_and_every_used_secret_declared(document):
    used = {secret["source"] for service in document["services"].values() for secret in service.get("secrets", [])}
    assert used == set(document["secrets"])


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_that_signs_page_tokens_gets_its_own_secret_and_no_other_service_gets_it(facts, document):
    definition = document["services"][facts.name]
    mounted = {secret["source"]: secret["target"] for secret in definition["secrets"]}
    page_token_secrets = {source for source in mounted if source.startswith("page-token-secret-")}
    if facts.signs_page_tokens:
        assert page_token_secrets == {compose.page_token_secret(facts.name)}
        assert definition["environment"]["PAGE_TOKEN_SECRET_FILE"] == mounted[compose.page_token_secret(facts.name)]
    else:
        assert not page_token_secrets and "PAGE_TOKEN_SECRET_FILE" not in definition["environment"]


def test_only_the_gateway_publishes_ports_and_only_on_this_machine(document):
    published = {name: service["ports"] for name, service in document["services"].items() if "ports" in service}
    assert list(published) == ["api-gateway"]
    assert all(port.startswith("127.0.0.1:") for port in published["api-gateway"])


def test_the_superuser_password_reaches_only_postgres_and_the_setup_job(document):
    holders = {name for name, service in document["services"].items()
               for secret in service.get("secrets", []) if secret["source"] == compose.POSTGRES_ADMIN_SECRET}
    assert holders == {"postgres", compose.DATABASE_SETUP}


def test_secrets_are_generated_once_and_kept(tmp_path):
    directory = tmp_path / "secrets"
    first = {path.name: path.read_text() for path in compose.write_secrets(directory)}
    assert set(first) == set(compose.secret_names())
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert len(set(first.values())) == len(first)  # each secret its own random value
    assert {compose.page_token_secret(facts.name) for facts in SERVICES if facts.signs_page_tokens} <= set(first)
    assert all(len(value.strip()) >= 32 for value in first.values())  # long enough for PAGE_TOKEN_SECRET
    assert {path.name: path.read_text() for path in compose.write_secrets(directory)} == first
