"""The Helm chart (helm/delinkcious) agrees with the catalogue (services/catalogue.py), the one place a service's facts
are written: its values name the same services, ports, stores, callers and calls; its schema covers every value;
k8s/create-secrets.sh makes exactly the secrets and keys the chart mounts, keeps what exists and never puts a value
on a command line. PyYAML only: no helm binary needed. Where helm is found (HELM, PATH, or the cache of
k8s/cluster/build.sh), the rendered manifests are checked too: each service's environment names its own settings,
the secret files are the contract's, the NetworkPolicy edges are the catalogue's, and both API branches (1.20, now)."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml
from delinkcious.catalogue import SERVICES, ServiceFacts

from tests.support.helm import HELM, needs_helm, objects, render

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "delinkcious"
CREATE_SECRETS = ROOT / "k8s" / "create-secrets.sh"
STORES = ("postgres", "redis", "nats")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def values() -> dict:
    return load_yaml(CHART / "values.yaml")


def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def stores_of(facts: ServiceFacts) -> set[str]:
    used = {"postgres": facts.uses_postgres, "redis": facts.uses_redis, "nats": facts.uses_nats}
    return {store for store, uses in used.items() if uses}


def callers() -> set[str]:
    """The services that call others with their own caller token: those some service allows."""
    return {caller for facts in SERVICES for caller in facts.allowed_callers}


def page_token_signers() -> list[str]:
    """The services that sign page tokens, each with its own key of the page-tokens Secret."""
    return [facts.name for facts in SERVICES if facts.signs_page_tokens]


# --- values.yaml against the catalogue -------------------------------------------------------------------------------


def test_the_chart_deploys_exactly_the_catalogues_services():
    assert set(values()["services"]) == {facts.name for facts in SERVICES}


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_services_values_are_its_catalogue_facts(facts):
    service = values()["services"][facts.name]
    assert service["port"] == facts.port
    assert service.get("adminPort") == facts.admin_port
    assert service.get("grpcPort") == facts.grpc_port
    assert len(service["stores"]) == len(set(service["stores"])) and set(service["stores"]) <= set(STORES)
    assert set(service["stores"]) == stores_of(facts)
    assert service["allowedCallers"] == list(facts.allowed_callers)
    assert service["calls"] == list(facts.calls)
    assert service["signsPageTokens"] is facts.signs_page_tokens


def test_the_chart_is_the_services_version():
    chart = load_yaml(CHART / "Chart.yaml")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version


def test_the_server_images_are_the_contracts():
    chart_values = values()
    images = {name: chart_values[name]["image"] for name in ("postgresql", "redis", "nats")}
    assert {name: f"{image['repository']}:{image['tag']}" for name, image in images.items()} == {
        "postgresql": "postgres:16-bookworm", "redis": "redis:7-bookworm", "nats": "nats:2.10-alpine"}


def test_no_secret_value_is_written_in_the_chart():
    files = [*sorted((CHART / "templates").rglob("*")), *sorted(CHART.glob("values*.yaml"))]
    text = "\n".join(path.read_text() for path in files if path.is_file())
    assert "randAlphaNum" not in text and "randAscii" not in text
    assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), "the chart refers to Secrets by name only"
    assert not re.search(r"stringData:|^\s*data:\s*\n\s+[\w-]*(password|secret|token)", text, re.MULTILINE)


# --- the schema --------------------------------------------------------------------------------------------------


def schema_problems(value, rule: dict, where: str = "") -> list[str]:
    """The JSON-schema subset values.schema.json uses (type, enum, pattern, bounds, properties, required,
    additionalProperties, propertyNames, items, uniqueItems), enough to prove it covers every value."""
    kinds = rule.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        python = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                  "integer": int, "number": (int, float)}
        matches = [kind for kind in kinds if isinstance(value, python[kind])
                   and not (kind in ("integer", "number") and isinstance(value, bool))]
        if not matches:
            return [f"{where or '<root>'}: {value!r} is not of type {kinds}"]
    problems = []
    if "enum" in rule and value not in rule["enum"]:
        problems.append(f"{where}: {value!r} not in {rule['enum']}")
    if isinstance(value, str):
        if "pattern" in rule and not re.search(rule["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {rule['pattern']}")
        if len(value) < rule.get("minLength", 0):
            problems.append(f"{where}: {value!r} is too short")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in rule and value < rule["minimum"]:
            problems.append(f"{where}: {value} < {rule['minimum']}")
        if "maximum" in rule and value > rule["maximum"]:
            problems.append(f"{where}: {value} > {rule['maximum']}")
    if isinstance(value, dict):
        properties = rule.get("properties", {})
        problems += [f"{where}: {key} is required" for key in rule.get("required", []) if key not in value]
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if "propertyNames" in rule:
                problems += schema_problems(key, rule["propertyNames"], f"{path} (name)")
            if key in properties:
                problems += schema_problems(item, properties[key], path)
            elif rule.get("additionalProperties") is False:
                problems.append(f"{path}: not in the schema")
            elif isinstance(rule.get("additionalProperties"), dict):
                problems += schema_problems(item, rule["additionalProperties"], path)
    if isinstance(value, list):
        if rule.get("uniqueItems") and len({json.dumps(item, sort_keys=True) for item in value}) != len(value):
            problems.append(f"{where}: items are not unique")
        for index, item in enumerate(value):
            problems += schema_problems(item, rule.get("items", {}), f"{where}[{index}]")
    return problems


def test_the_schema_describes_the_catalogues_services_and_refuses_others():
    services = schema()["properties"]["services"]
    assert set(services["properties"]) == set(services["required"]) == {facts.name for facts in SERVICES}
    assert services["additionalProperties"] is False


def merged(base: dict, override: dict) -> dict:
    """Helm's merge of a values file over the chart's values (a null deletes the key)."""
    result = dict(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@pytest.mark.parametrize("name", ["values.yaml", "values-production.yaml"])
def test_the_values_files_meet_the_schema(name):
    assert schema_problems(merged(values(), load_yaml(CHART / name)), schema()) == []


def test_every_value_is_in_the_schema_so_a_typo_fails():
    """Every object of the schema either lists its keys (additionalProperties false) or says what its values are."""
    def open_objects(rule: dict, where: str) -> list[str]:
        found = []
        if rule.get("type") == "object" and "properties" in rule and rule.get("additionalProperties") is not False:
            found.append(where)
        for key, item in rule.get("properties", {}).items():
            found += open_objects(item, f"{where}.{key}")
        if isinstance(rule.get("items"), dict):
            found += open_objects(rule["items"], f"{where}[]")
        return found

    assert open_objects(schema(), "") == []
    misspelt = values()
    misspelt["services"]["link"]["prot"] = 1
    misspelt["ingres"] = {}
    assert sorted(schema_problems(misspelt, schema())) == ["ingres: not in the schema",
                                                           "services.link.prot: not in the schema"]


# --- k8s/create-secrets.sh -------------------------------------------------------------------------------------------


def test_create_secrets_makes_the_keys_the_catalogue_implies():
    text = CREATE_SECRETS.read_text()
    caller_keys = re.search(r"^caller_keys=\(([^)]*)\)", text, re.MULTILINE).group(1).split()
    database_keys = re.search(r"^database_keys=\(([^)]*)\)", text, re.MULTILINE).group(1).split()
    page_token_keys = re.search(r"^page_token_keys=\(([^)]*)\)", text, re.MULTILINE).group(1).split()
    assert sorted(caller_keys) == sorted(callers())
    assert sorted(database_keys) == sorted(["postgres", *(facts.name for facts in SERVICES if facts.uses_postgres)])
    assert sorted(page_token_keys) == sorted(page_token_signers())


FAKE_KUBECTL = '''\
#!{python}
"""kubectl, as far as k8s/create-secrets.sh uses it, on a JSON file; every command line is logged."""
import base64, json, os, re, sys
import yaml

store_path, log_path = os.environ["FAKE_KUBE_STORE"], os.environ["FAKE_KUBE_LOG"]
with open(log_path, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
store = json.load(open(store_path)) if os.path.exists(store_path) else {{"namespaces": [], "secrets": {{}}}}


def save(store):  # the commands of a pipeline run at once: only the ones that change it write it, atomically
    with open(store_path + ".new", "w") as file:
        json.dump(store, file)
    os.replace(store_path + ".new", store_path)


args, namespace = [], "default"
argv = iter(sys.argv[1:])
for arg in argv:
    if arg == "--namespace":
        namespace = next(argv)
    else:
        args.append(arg)
secret_key = lambda name: f"{{namespace}}/{{name}}"
if args[:2] == ["get", "namespace"]:
    print(f"namespace/{{args[2]}}" if args[2] in store["namespaces"] else "")
elif args[:2] == ["create", "namespace"]:
    store["namespaces"].append(args[2])
    save(store)
elif args[:2] == ["get", "secret"] and "name" in args:
    print(f"secret/{{args[2]}}" if secret_key(args[2]) in store["secrets"] else "")
elif args[:2] == ["get", "secret"]:
    wanted = re.search(r'index \\.data "([^"]+)"', args[-1]).group(1)
    print(store["secrets"][secret_key(args[2])]["data"].get(wanted, ""), end="")
elif args[:3] == ["create", "secret", "generic"]:
    assert "--dry-run=client" in args
    data = {{}}
    for arg in args:
        if arg.startswith("--from-file="):
            key, path = arg.removeprefix("--from-file=").split("=", 1)
            data[key] = base64.b64encode(open(path, "rb").read()).decode()
    print(yaml.safe_dump({{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": args[3]}}, "data": data}}))
elif args[0] == "label":
    document = yaml.safe_load(sys.stdin)
    labels = dict(arg.split("=", 1) for arg in args if "=" in arg and not arg.startswith("-"))
    document["metadata"].setdefault("labels", {{}}).update(labels)
    print(yaml.safe_dump(document))
elif args[0] == "apply":
    document = yaml.safe_load(sys.stdin)
    store["secrets"][secret_key(document["metadata"]["name"])] = document
    save(store)
else:
    sys.exit(f"fake kubectl: unexpected {{args}}")
'''


@pytest.fixture
def fake_cluster(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    store, log = tmp_path / "store.json", tmp_path / "kubectl.log"
    env = {**os.environ, "KUBECTL": str(kubectl), "FAKE_KUBE_STORE": str(store), "FAKE_KUBE_LOG": str(log)}

    class Cluster:
        def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
            result = subprocess.run(["bash", str(CREATE_SECRETS), *args], env={**env, **extra},
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return result

        def secrets(self) -> dict[str, dict[str, str]]:
            stored = json.loads(store.read_text())["secrets"]
            return {name: {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
                    for name, secret in stored.items()}

        def remove_key(self, name: str, key: str) -> None:
            stored = json.loads(store.read_text())
            del stored["secrets"][name]["data"][key]
            store.write_text(json.dumps(stored))

        def command_lines(self) -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()]

    return Cluster()


def test_create_secrets_makes_every_secret_the_chart_mounts_with_random_values(fake_cluster):
    fake_cluster.run("shop", "blue")
    secrets = fake_cluster.secrets()
    assert {name: sorted(keys) for name, keys in secrets.items()} == {
        "shop/blue-delinkcious-caller-tokens": sorted(callers()),
        "shop/blue-delinkcious-database-passwords": sorted(
            ["postgres", *(facts.name for facts in SERVICES if facts.uses_postgres)]),
        "shop/blue-delinkcious-redis": ["redis-password"],
        "shop/blue-delinkcious-gateway": ["oauth-client-secret", "session-secret"],
        "shop/blue-delinkcious-page-tokens": sorted(page_token_signers()),
    }
    values_made = [value for secret in secrets.values() for value in secret.values()]
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in values_made)
    assert len(set(values_made)) == len(values_made)
    lines = fake_cluster.command_lines()
    assert ["create", "namespace", "shop"] in lines
    assert not [line for line in lines if any(value in arg for value in values_made for arg in line)]


def test_create_secrets_keeps_what_exists_and_adds_what_is_missing(fake_cluster, tmp_path):
    fake_cluster.run("shop", "delinkcious-prod")  # a release named after the chart is its own prefix
    before = fake_cluster.secrets()
    assert "shop/delinkcious-prod-redis" in before
    fake_cluster.run("shop", "delinkcious-prod")
    assert fake_cluster.secrets() == before

    fake_cluster.remove_key("shop/delinkcious-prod-caller-tokens", "news")
    fake_cluster.remove_key("shop/delinkcious-prod-page-tokens", "news")
    oauth = tmp_path / "oauth-secret"
    oauth.write_text("the-github-app-secret\n")
    fake_cluster.run("shop", "delinkcious-prod", OAUTH_CLIENT_SECRET_FILE=str(oauth))
    after = fake_cluster.secrets()
    tokens, old_tokens = after["shop/delinkcious-prod-caller-tokens"], before["shop/delinkcious-prod-caller-tokens"]
    assert {key: tokens[key] for key in tokens if key != "news"} == {k: v for k, v in old_tokens.items() if k != "news"}
    assert re.fullmatch(r"[0-9a-f]{64}", tokens["news"]) and tokens["news"] != old_tokens["news"]
    assert after["shop/delinkcious-prod-gateway"] == {
        "session-secret": before["shop/delinkcious-prod-gateway"]["session-secret"],
        "oauth-client-secret": "the-github-app-secret\n"}
    assert after["shop/delinkcious-prod-database-passwords"] == before["shop/delinkcious-prod-database-passwords"]
    page_tokens, old_page_tokens = after["shop/delinkcious-prod-page-tokens"], before["shop/delinkcious-prod-page-tokens"]
    assert {key: page_tokens[key] for key in page_tokens if key != "news"} == {
        key: value for key, value in old_page_tokens.items() if key != "news"}
    assert re.fullmatch(r"[0-9a-f]{64}", page_tokens["news"]) and page_tokens["news"] != old_page_tokens["news"]


# --- the rendered chart (where helm is available) -----------------------------------------------------------------


CURRENT = ["--kube-version", "1.31.0", "--api-versions", "policy/v1/PodDisruptionBudget",
           "--api-versions", "autoscaling/v2/HorizontalPodAutoscaler"]


def component(document: dict) -> str:
    return document["metadata"]["labels"]["app.kubernetes.io/component"]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if HELM is None:
        pytest.skip("no helm binary")
    return render(*CURRENT)


@needs_helm
@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_services_environment_names_its_own_settings(rendered, facts):
    config = objects(rendered, "ConfigMap")[f"dlk-delinkcious-{facts.name}-env"]["data"]
    settings = {name.upper() for name in facts.definition().settings_class.model_fields}
    assert {name.removesuffix("_FILE") for name in config} - settings == set()
    assert config["SERVICE_NAME"] == facts.name and config["PORT"] == str(facts.port)
    assert config.get("ADMIN_PORT") == (str(facts.admin_port) if facts.admin_port else None)
    assert config.get("GRPC_PORT") == (str(facts.grpc_port) if facts.grpc_port else None)
    assert ("DATABASE_URL" in config) == facts.uses_postgres
    assert ("REDIS_URL" in config) == facts.uses_redis
    assert ("NATS_URL" in config) == facts.uses_nats
    assert config.get("ALLOWED_CALLERS") == (",".join(facts.allowed_callers) or None)
    assert config.get("PAGE_TOKEN_SECRET_FILE") == (
        "/run/secrets/delinkcious/page-token-secret" if facts.signs_page_tokens else None)
    if facts.uses_postgres:
        assert config["DATABASE_URL"] == f"postgresql://{facts.name}@dlk-delinkcious-postgresql:5432/{facts.name}"
    for called in facts.calls:
        other = next(spec for spec in SERVICES if spec.name == called)
        prefix = called.upper().replace("-", "_")
        if other.grpc_port:
            assert config[f"{prefix}_GRPC_ADDRESS"] == f"dlk-delinkcious-{called}:{other.grpc_port}"
        else:
            assert config[f"{prefix}_SERVICE_URL"] == f"http://dlk-delinkcious-{called}:{other.port}"


@needs_helm
@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_pod_mounts_only_the_secret_files_it_needs(rendered, facts):
    pod = objects(rendered, "Deployment")[f"dlk-delinkcious-{facts.name}"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = {item["path"]: (source["secret"]["name"], item["key"])
             for source in volumes.get("secrets", {}).get("projected", {}).get("sources", [])
             for item in source["secret"]["items"]}
    expected = {}
    if facts.name in callers():
        expected["caller-token"] = ("dlk-delinkcious-caller-tokens", facts.name)
    for caller in facts.allowed_callers:
        expected[f"callers/{caller}"] = ("dlk-delinkcious-caller-tokens", caller)
    if facts.uses_postgres:
        expected["database-password"] = ("dlk-delinkcious-database-passwords", facts.name)
    if facts.uses_redis:
        expected["redis-password"] = ("dlk-delinkcious-redis", "redis-password")
    if facts.signs_page_tokens:
        expected["page-token-secret"] = ("dlk-delinkcious-page-tokens", facts.name)
    if facts.name == "api-gateway":
        expected["session-secret"] = ("dlk-delinkcious-gateway", "session-secret")
        expected["oauth-client-secret"] = ("dlk-delinkcious-gateway", "oauth-client-secret")
    assert files == expected
    container = pod["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {name: port for name, port in (("http", facts.port), ("admin", facts.admin_port),
                                                   ("grpc", facts.grpc_port)) if port}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True


@needs_helm
def test_the_page_token_secret_can_be_an_existing_secret_of_any_name():
    documents = render(*CURRENT, "--set", "secrets.pageTokens=shop-page-tokens")
    for facts in SERVICES:
        pod = objects(documents, "Deployment")[f"dlk-delinkcious-{facts.name}"]["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        names = {source["secret"]["name"]
                 for source in volumes.get("secrets", {}).get("projected", {}).get("sources", [])}
        assert ("shop-page-tokens" in names) == facts.signs_page_tokens
        assert "dlk-delinkcious-page-tokens" not in names


@needs_helm
def test_only_the_provisioning_job_and_the_server_hold_the_postgres_superuser_password(rendered):
    holders = set()
    for document in rendered:
        spec = document.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec") or spec
        for volume in pod.get("volumes", []) if isinstance(pod, dict) else []:
            sources = [volume.get("secret")] + [s.get("secret") for s in volume.get("projected", {}).get("sources", [])]
            if any(source and source.get("secretName", source.get("name")) == "dlk-delinkcious-database-passwords"
                   and any(item["key"] == "postgres" for item in source["items"]) for source in sources):
                holders.add(component(document))
    assert holders == {"provision-databases", "postgresql"}


@needs_helm
def test_network_policies_allow_exactly_the_catalogues_edges(rendered):
    policies = objects(rendered, "NetworkPolicy")

    def peers(rules: list[dict], direction: str) -> set[tuple[str, int]]:
        return {(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"], port["port"])
                for rule in rules for peer in rule.get(direction, []) if "podSelector" in peer
                for port in rule["ports"]}

    def api_port(name: str) -> int:
        facts = next(spec for spec in SERVICES if spec.name == name)
        return facts.grpc_port or facts.port

    for facts in SERVICES:
        policy = policies[f"dlk-delinkcious-{facts.name}"]["spec"]
        callers_in = set(facts.allowed_callers) | {spec.name for spec in SERVICES if facts.name in spec.calls}
        assert peers(policy.get("ingress", []), "from") == {(caller, api_port(facts.name)) for caller in callers_in}
        called = set(facts.calls) | {spec.name for spec in SERVICES if facts.name in spec.allowed_callers}
        stores = {server for server, used in ((("postgresql", 5432), facts.uses_postgres),
                                              (("redis", 6379), facts.uses_redis),
                                              (("nats", 4222), facts.uses_nats)) if used}
        assert peers(policy["egress"], "to") == {(name, api_port(name)) for name in called} | stores
    deny = policies["dlk-delinkcious-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny


@needs_helm
def test_the_development_identity_provider_runs_beside_the_gateway():
    documents = render(*CURRENT, "--set", "identityProvider.enabled=true")
    config = objects(documents, "ConfigMap")["dlk-delinkcious-api-gateway-env"]["data"]
    assert config["AUTH_PROVIDER"] == "oidc"
    assert config["OIDC_DISCOVERY_URL"] == "http://127.0.0.1:9400/.well-known/openid-configuration"
    pod = objects(documents, "Deployment")["dlk-delinkcious-api-gateway"]["spec"]["template"]["spec"]
    assert [container["name"] for container in pod["containers"]] == ["api-gateway", "identity-provider"]
    ports = objects(documents, "Service")["dlk-delinkcious-api-gateway"]["spec"]["ports"]
    assert {"name": "identity", "port": 9400, "targetPort": "identity", "protocol": "TCP"} in ports


@needs_helm
@pytest.mark.parametrize(("args", "pdb", "hpa", "grpc_probe"), [
    (["--kube-version", "1.20.2"], "policy/v1beta1", "autoscaling/v2beta2", False),
    (CURRENT, "policy/v1", "autoscaling/v2", True),
], ids=["1.20", "1.31"])
def test_the_api_versions_follow_the_cluster(args, pdb, hpa, grpc_probe):
    documents = render(*args, "--set", "autoscaling.enabled=true")
    assert {d["apiVersion"] for d in documents if d["kind"] == "PodDisruptionBudget"} == {pdb}
    assert {d["apiVersion"] for d in documents if d["kind"] == "HorizontalPodAutoscaler"} == {hpa}
    news = objects(documents, "Deployment")["dlk-delinkcious-news"]["spec"]["template"]["spec"]["containers"][0]
    assert ("grpc" in news["readinessProbe"]) == grpc_probe
    assert all("replicas" not in d["spec"] for d in objects(documents, "Deployment").values())


@needs_helm
def test_images_can_be_local_ones_that_are_never_pulled():
    documents = render(*CURRENT, "--set", "image.registry=localhost", "--set", "image.pullPolicy=Never",
                       "--set", "postgresql.image.repository=localhost/delinkcious-postgres",
                       "--set", "postgresql.image.tag=15", "--set", "postgresql.image.pullPolicy=Never")
    containers = {container["image"]: container["imagePullPolicy"] for document in documents
                  for spec in [document.get("spec", {}).get("template", {}).get("spec", document.get("spec", {}))]
                  for container in spec.get("containers", [])}
    assert containers["localhost/delinkcious/link:0.1.0"] == "Never"
    assert containers["localhost/delinkcious/integration-test:0.1.0"] == "Never"
    assert containers["localhost/delinkcious-postgres:15"] == "Never"


@needs_helm
def test_a_typo_in_the_values_fails_the_render():
    result = subprocess.run([HELM, "template", "dlk", str(CHART), "--set", "services.link.prot=1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "prot" in result.stderr


def test_the_readme_documents_every_checkov_skip_the_chart_makes():
    skips = set(re.findall(r"checkov\.io/skip\d+: (CKV_K8S_\d+)=", "\n".join(
        path.read_text() for path in (CHART / "templates").rglob("*") if path.is_file())))
    readme = (CHART / "README.md").read_text()
    assert skips and all(skip in readme for skip in skips), textwrap.shorten(str(skips), 200)


@needs_helm
def test_tracing_is_off_by_default_and_on_for_every_service_with_an_endpoint(rendered, tmp_path):
    for facts in SERVICES:
        assert not any(name.startswith("OTEL_") for name in
                       objects(rendered, "ConfigMap")[f"dlk-delinkcious-{facts.name}-env"]["data"])
    traced = tmp_path / "tracing.yaml"
    traced.write_text("tracing: {otlpEndpoint: 'http://collector.observability:4318', samplerRatio: 0.25}\n")
    documents = render(*CURRENT, "-f", str(traced))
    policies = objects(documents, "NetworkPolicy")
    for facts in SERVICES:
        config = objects(documents, "ConfigMap")[f"dlk-delinkcious-{facts.name}-env"]["data"]
        assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4318"
        assert config["OTEL_SERVICE_NAME"] == facts.name
        assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
        egress = policies[f"dlk-delinkcious-{facts.name}"]["spec"]["egress"]
        assert any({"protocol": "TCP", "port": 4318} in rule["ports"] for rule in egress), facts.name
