"""The deployment files around the chart: the Istio resources (k8s/istio), the kustomize overlays (k8s/overlays) and the
install scripts (k8s/install.sh, k8s/minikube.sh).

- The AuthorizationPolicies are the catalogue's edges (services/catalogue.py): each service lets in exactly its callers
  (allowed_callers, and those whose calls name it) on the port they use, the servers exactly their users; everything
  else is denied. The principals are ServiceAccounts the chart renders, the subsets its canary tracks.
- The overlays name the chart, their values are chart values, and they say what they promise (one replica, the mesh's
  CALLER_AUTH=disabled, images never pulled on Minikube).
- `k8s/minikube.sh up` starts Minikube, builds every image into it, installs through k8s/install.sh (the very calls
  install.sh makes on its own) and port-forwards, in that order: run with stand-in `minikube`, `helm` and `kubectl`
  commands on PATH that record their arguments (Minikube cannot run here).
PyYAML only for the files; where helm (HELM, PATH, or k8s/cluster/build.sh's cache) and a kubectl with kustomize
(KUBECTL, that cache, PATH) are found, the chart and the overlays are rendered and checked too."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from delinkcious.catalogue import SERVICES, ServiceFacts

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "delinkcious"
ISTIO = ROOT / "k8s" / "istio"
OVERLAYS = ROOT / "k8s" / "overlays"
RELEASE = NAMESPACE = "delinkcious"
TRACK = "delinkcious.io/track"
# Retried by the mesh: only failures where the request never reached the service (a POST is never sent twice).
SAFE_RETRIES = {"connect-failure", "refused-stream", "unavailable"}
# The servers of the chart and who uses them: the catalogue's stores (the provisioning Job also logs in to PostgreSQL).
SERVERS = {"postgresql": ("uses_postgres", 5432), "redis": ("uses_redis", 6379), "nats": ("uses_nats", 4222)}


def cache_binary(name: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "delinkcious/k8s/v1.20.2/bin" / name


def find_binary(variable: str, name: str, *, cache_first: bool = False) -> str | None:
    candidates = [os.environ.get(variable), shutil.which(name), str(cache_binary(name))]
    if cache_first:
        candidates[1:] = reversed(candidates[1:])
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


HELM = find_binary("HELM", "helm")
# The kubectl next to helm in the cache is v1.31 (kustomize v5.4 with helmCharts); PATH may hold anything.
KUBECTL = find_binary("KUBECTL", "kubectl", cache_first=True)
needs_helm = pytest.mark.skipif(HELM is None, reason="no helm binary (HELM, PATH, or k8s/cluster/build.sh's cache)")
needs_kustomize = pytest.mark.skipif(HELM is None or KUBECTL is None, reason="no helm and kubectl binaries")


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def istio_resources() -> list[dict]:
    kustomization = yaml.safe_load((ISTIO / "kustomization.yaml").read_text())
    return [document for name in kustomization["resources"] for document in documents(ISTIO / name)]


def of_kind(resources: list[dict], kind: str) -> list[dict]:
    return [resource for resource in resources if resource["kind"] == kind]


def facts_of(name: str) -> ServiceFacts:
    return next(facts for facts in SERVICES if facts.name == name)


def callers_of(facts: ServiceFacts) -> set[str]:
    """Who calls a service: its allowed callers, and the services whose calls name it (the chart's callersOf)."""
    return set(facts.allowed_callers) | {other.name for other in SERVICES if facts.name in other.calls}


def api_port(facts: ServiceFacts) -> int:
    """The port callers use: the gRPC port of a service that has one."""
    return facts.grpc_port or facts.port


def principal(component: str) -> str:
    return f"cluster.local/ns/{NAMESPACE}/sa/{RELEASE}-{component}"


def policies() -> dict[str, dict]:
    """The AuthorizationPolicies by the component they select ('' for the namespace-wide ones)."""
    found: dict[str, dict] = {}
    for policy in of_kind(istio_resources(), "AuthorizationPolicy"):
        labels = (policy.get("spec") or {}).get("selector", {}).get("matchLabels", {})
        key = labels.get("app.kubernetes.io/component", "")
        assert key not in found, f"two AuthorizationPolicies select {key or 'the namespace'}"
        found[key] = policy
    return found


def allowed(policy: dict) -> list[tuple[set[str] | None, set[int]]]:
    """(principals or None for any source, ports) of each rule; a rule must name its ports."""
    rules = []
    for rule in (policy.get("spec") or {}).get("rules") or []:
        sources = rule.get("from")
        principals = None
        if sources is not None:
            principals = {p for source in sources for p in source["source"]["principals"]}
            assert all(set(source["source"]) == {"principals"} for source in sources), rule
        ports = {int(port) for operation in rule["to"] for port in operation["operation"]["ports"]}
        assert ports and all(set(operation["operation"]) == {"ports"} for operation in rule["to"]), rule
        rules.append((principals, ports))
    return rules


# --- Istio, as files ---------------------------------------------------------------------------------------------


def test_istio_resources_use_the_current_api_versions_in_the_release_namespace():
    resources = istio_resources()
    assert {(r["apiVersion"], r["kind"]) for r in resources} == {
        ("security.istio.io/v1", "PeerAuthentication"), ("security.istio.io/v1", "AuthorizationPolicy"),
        ("networking.istio.io/v1", "DestinationRule"), ("networking.istio.io/v1", "VirtualService"),
        ("networking.istio.io/v1", "Gateway"), ("networking.k8s.io/v1", "NetworkPolicy")}
    assert {r["metadata"]["namespace"] for r in resources} == {NAMESPACE}
    assert yaml.safe_load((ISTIO / "kustomization.yaml").read_text())["namespace"] == NAMESPACE


def test_mutual_tls_is_strict_for_the_whole_namespace():
    [peer_authentication] = of_kind(istio_resources(), "PeerAuthentication")
    assert peer_authentication["spec"] == {"mtls": {"mode": "STRICT"}}


def test_everything_is_denied_unless_a_policy_allows_it():
    found = policies()
    assert found[""]["spec"] == {}, "the namespace-wide allow-nothing policy"
    assert all(policy["spec"].get("action", "ALLOW") == "ALLOW" for policy in found.values())
    for component, policy in found.items():
        if component:
            assert policy["spec"]["selector"]["matchLabels"] == {
                "app.kubernetes.io/name": "delinkcious", "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": component}
    assert set(found) == {"", *(facts.name for facts in SERVICES), *SERVERS}, "every service and server covered"


@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_lets_in_exactly_its_catalogue_callers_on_the_port_they_use(facts):
    rules = allowed(policies()[facts.name])
    callers = callers_of(facts)
    named = [(principals, ports) for principals, ports in rules if principals is not None]
    if callers:
        assert named == [({principal(caller) for caller in callers}, {api_port(facts)})]
    else:
        assert named == [], f"{facts.name} has no caller"
    anyone = [ports for principals, ports in rules if principals is None]
    if facts.name == "api-gateway":
        # The public API from any source (the ingress gateway); 9400: the development identity provider's page.
        assert anyone == [{facts.port, 9400}]
        assert facts.admin_port not in anyone[0]
    else:
        assert anyone == [], "only the gateway is open to any source"
    if not callers and facts.name != "api-gateway":
        assert rules == [], "no rule: an ALLOW policy that matches nothing"


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_server_lets_in_exactly_the_services_using_it(server):
    uses, port = SERVERS[server]
    users = {facts.name for facts in SERVICES if getattr(facts, uses)}
    if server == "postgresql":
        users.add("provision-databases")
    expected = [({principal(user) for user in users}, {port})]
    if server == "nats":
        expected.append(({principal("nats")}, {6222}))  # the cluster routes between NATS servers
    assert allowed(policies()[server]) == expected


def test_no_policy_names_a_caller_the_catalogue_does_not_know():
    known = {principal(name) for name in [*(facts.name for facts in SERVICES), "provision-databases", "nats"]}
    for policy in policies().values():
        for principals, _ in allowed(policy):
            assert principals is None or principals <= known


def destination_rules() -> dict[str, dict]:
    return {rule["spec"]["host"]: rule for rule in of_kind(istio_resources(), "DestinationRule")}


def test_destination_rules_split_by_the_charts_canary_tracks_and_eject_failing_replicas():
    rules = destination_rules()
    routed = {f"{RELEASE}-{facts.name}" for facts in SERVICES if callers_of(facts) or facts.name == "api-gateway"}
    assert set(rules) == routed
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"{TRACK}: {{{{ $variant.track }}}}" in deployment, "the chart labels each pod with its track"
    for host, rule in rules.items():
        spec = rule["spec"]
        assert spec["subsets"] == [{"name": "stable", "labels": {TRACK: "stable"}},
                                   {"name": "canary", "labels": {TRACK: "canary"}}], host
        assert spec["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}
        outlier = spec["trafficPolicy"]["outlierDetection"]
        assert outlier["consecutive5xxErrors"] > 0 and outlier["baseEjectionTime"] and outlier["interval"]
        assert 0 < outlier["maxEjectionPercent"] <= 100


def test_virtual_services_route_every_called_service_with_a_canary_split_retries_and_a_timeout():
    rules = destination_rules()
    by_host = {}
    for service in of_kind(istio_resources(), "VirtualService"):
        [route] = service["spec"]["http"]
        destinations = route["route"]
        hosts = {destination["destination"]["host"] for destination in destinations}
        assert len(hosts) == 1
        host = hosts.pop()
        by_host[host] = service
        assert [d["destination"]["subset"] for d in destinations] == ["stable", "canary"]
        assert sum(d["weight"] for d in destinations) == 100
        assert destinations[0]["weight"] == 100, "no canary weight until a canary runs (no pods: failed requests)"
        facts = facts_of(host.removeprefix(f"{RELEASE}-"))
        assert {d["destination"]["port"]["number"] for d in destinations} == {api_port(facts)}
        assert {s["name"] for s in rules[host]["spec"]["subsets"]} == {"stable", "canary"}
        assert re.fullmatch(r"\d+s", route["timeout"])
        retries = route["retries"]
        assert retries["attempts"] >= 1 and set(retries["retryOn"].split(",")) <= SAFE_RETRIES
        if facts.name == "api-gateway":
            assert service["spec"]["gateways"] == [RELEASE] and service["spec"]["hosts"] == ["*"]
        else:
            assert service["spec"]["hosts"] == [host] and "gateways" not in service["spec"]
            assert route["match"] == [{"port": api_port(facts)}]
    assert set(by_host) == set(rules)
    [gateway] = of_kind(istio_resources(), "Gateway")
    assert gateway["metadata"]["name"] == RELEASE and gateway["spec"]["selector"] == {"istio": "ingressgateway"}


def test_sidecars_may_reach_istiod_through_the_charts_network_policies():
    [policy] = of_kind(istio_resources(), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "delinkcious",
                                                  "app.kubernetes.io/instance": RELEASE}
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    [rule] = spec["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 15012}]


# --- Istio against the rendered chart ------------------------------------------------------------------------------


def render_chart(*args: str) -> list[dict]:
    result = subprocess.run([HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version",
                             "1.31.0", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def pod_templates(rendered: list[dict]) -> dict[str, dict]:
    """Workload name -> pod template, of the Deployments, StatefulSets and Jobs."""
    return {document["metadata"]["name"]: document["spec"]["template"] for document in rendered
            if document["kind"] in ("Deployment", "StatefulSet", "Job")}


@needs_helm
def test_every_principal_is_a_service_account_the_chart_renders_and_its_workload_runs_as():
    rendered = render_chart()
    accounts = {document["metadata"]["name"] for document in of_kind(rendered, "ServiceAccount")}
    templates = pod_templates(rendered)
    for component, policy in policies().items():
        for principals, _ in allowed(policy):
            for name in principals or ():
                account = name.removeprefix(f"cluster.local/ns/{NAMESPACE}/sa/")
                assert account in accounts, name
                assert any(t["spec"]["serviceAccountName"] == account for t in templates.values()), name
        if component:
            selector = policy["spec"]["selector"]["matchLabels"]
            selected = [name for name, t in templates.items() if selector.items() <= t["metadata"]["labels"].items()]
            assert selected, f"the policy for {component} selects no pod"
            assert {templates[name]["spec"]["serviceAccountName"] for name in selected} == {f"{RELEASE}-{component}"}


@needs_helm
def test_the_subsets_select_the_charts_stable_and_canary_pods_and_the_hosts_are_its_services():
    rendered = render_chart("--set", "canary.enabled=true", "--set", "canary.tag=0.2.0")
    templates = pod_templates(rendered)
    services = {document["metadata"]["name"]: document for document in of_kind(rendered, "Service")}
    for host, rule in destination_rules().items():
        service = services[host]
        ports = {port["port"] for port in service["spec"]["ports"]}
        assert api_port(facts_of(host.removeprefix(f"{RELEASE}-"))) in ports
        for subset in rule["spec"]["subsets"]:
            selector = {**service["spec"]["selector"], **subset["labels"]}
            selected = sorted(name for name, t in templates.items()
                              if selector.items() <= t["metadata"]["labels"].items())
            expected = host if subset["name"] == "stable" else f"{host}-canary"
            assert selected == [expected], (host, subset["name"])


# --- the overlays --------------------------------------------------------------------------------------------------


def kustomization(overlay: str) -> dict:
    return yaml.safe_load((OVERLAYS / overlay / "kustomization.yaml").read_text())


def overlay_values(overlay: str) -> dict:
    return yaml.safe_load((OVERLAYS / overlay / kustomization(overlay)["helmCharts"][0]["valuesFile"]).read_text())


def unknown_keys(values: dict, defaults: dict, where: str = "") -> list[str]:
    """Keys of an overlay's values that the chart's values.yaml does not have (an empty map there takes any)."""
    unknown = []
    for key, value in values.items():
        if key not in defaults:
            unknown.append(f"{where}{key}")
        elif isinstance(value, dict) and defaults[key]:
            assert isinstance(defaults[key], dict), f"{where}{key}"
            unknown += unknown_keys(value, defaults[key], f"{where}{key}.")
    return unknown


OVERLAY_NAMES = ["dev", "minikube", "istio"]


def test_there_are_the_three_overlays():
    assert sorted(path.name for path in OVERLAYS.iterdir() if (path / "kustomization.yaml").is_file()) == sorted(
        OVERLAY_NAMES)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_an_overlay_renders_the_local_chart_with_chart_values(overlay):
    spec = kustomization(overlay)
    assert (OVERLAYS / overlay / spec["helmGlobals"]["chartHome"]).resolve() == CHART.parent
    [chart] = spec["helmCharts"]
    assert chart["name"] == CHART.name and "repo" not in chart and "version" not in chart
    assert chart["releaseName"] == RELEASE and chart["namespace"] == spec["namespace"]
    assert chart["skipTests"] is True, "the helm test pod is for helm test"
    assert unknown_keys(overlay_values(overlay), yaml.safe_load((CHART / "values.yaml").read_text())) == []


def test_the_dev_overlay_runs_one_of_everything_without_volumes_and_logs_for_people():
    values = overlay_values("dev")
    assert {name: service["replicas"] for name, service in values["services"].items()} == {
        facts.name: 1 for facts in SERVICES}
    assert values["nats"]["replicas"] == 1 and values["autoscaling"]["enabled"] is False
    assert all(values[server]["persistence"]["enabled"] is False for server in SERVERS)
    assert values["identityProvider"]["enabled"] is True
    assert (values["logFormat"], values["logLevel"]) == ("console", "debug")


def test_the_minikube_values_never_pull_the_images_minikube_sh_builds_and_keep_the_data():
    values = overlay_values("minikube")
    assert values["image"]["pullPolicy"] == "Never"
    assert values["identityProvider"]["enabled"] is True
    for server in SERVERS:
        assert values[server]["persistence"]["enabled"] is True
        assert values[server]["persistence"]["storageClass"] == "", "Minikube's default StorageClass"
        assert "image" not in values[server], "the official images, pulled"
    assert "k8s/overlays/minikube/values.yaml" in (ROOT / "k8s" / "minikube.sh").read_text()


def test_the_istio_overlay_turns_caller_tokens_off_for_every_service_and_injects_sidecars():
    values = overlay_values("istio")
    assert {name: service["env"] for name, service in values["services"].items()} == {
        facts.name: {"CALLER_AUTH": "disabled"} for facts in SERVICES}
    spec = kustomization("istio")
    assert spec["namespace"] == NAMESPACE, "the namespace the AuthorizationPolicies name"
    assert "../../istio" in spec["resources"]
    [namespace] = documents(OVERLAYS / "istio" / "namespace.yaml")
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def kustomize(overlay: str) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", "--enable-helm", "--helm-command", HELM, str(OVERLAYS / overlay)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_an_overlay_renders_into_its_namespace_without_the_test_pod(overlay):
    rendered = kustomize(overlay)
    namespace = kustomization(overlay)["namespace"]
    assert {d["metadata"].get("namespace") for d in rendered if d["kind"] != "Namespace"} == {namespace}
    assert [d["metadata"]["name"] for d in of_kind(rendered, "Namespace")] == [namespace]
    assert of_kind(rendered, "Pod") == []
    deployments = {d["metadata"]["name"] for d in of_kind(rendered, "Deployment")}
    assert deployments == {f"{RELEASE}-{facts.name}" for facts in SERVICES}
    assert {d["apiVersion"] for d in of_kind(rendered, "PodDisruptionBudget")} == {"policy/v1"}


@needs_kustomize
def test_the_dev_overlay_patches_what_the_chart_rendered():
    rendered = kustomize("dev")
    for deployment in of_kind(rendered, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "10m"
    assert all(d["metadata"]["labels"]["delinkcious.io/environment"] == "dev" for d in rendered)
    configs = [d["data"] for d in of_kind(rendered, "ConfigMap")]
    assert configs and all(c["LOG_LEVEL"] == "debug" and c["LOG_FORMAT"] == "console" for c in configs)


@needs_kustomize
def test_the_minikube_overlay_never_pulls_a_delinkcious_image():
    for name, template in pod_templates(kustomize("minikube")).items():
        for container in template["spec"]["containers"]:
            expected = "Never" if container["image"].startswith("delinkcious/") else "IfNotPresent"
            assert container["imagePullPolicy"] == expected, (name, container["name"])


@needs_kustomize
def test_the_istio_overlay_is_the_chart_in_the_mesh():
    rendered = kustomize("istio")
    configs = {d["metadata"]["name"]: d["data"] for d in of_kind(rendered, "ConfigMap")}
    assert {name: config["CALLER_AUTH"] for name, config in configs.items()} == {
        f"{RELEASE}-{facts.name}-env": "disabled" for facts in SERVICES}
    expected = {(r["kind"], r["metadata"]["name"]) for r in istio_resources()}
    assert expected <= {(d["kind"], d["metadata"]["name"]) for d in rendered}
    [job] = of_kind(rendered, "Job")
    assert job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] == "true"
    services = {d["metadata"]["name"]: d for d in of_kind(rendered, "Service")}
    for name in ("postgresql", "redis", "nats", "nats-headless"):
        tcp = [p for p in services[f"{RELEASE}-{name}"]["spec"]["ports"] if p["name"] != "monitor"]
        assert tcp and all(port.get("appProtocol") == "tcp" for port in tcp), name


# --- install.sh and minikube.sh, with stand-in commands ------------------------------------------------------------

STUB = r"""#!/usr/bin/env bash
# A stand-in for a CLI: records its name, working directory and arguments (tab-separated), answers as needed.
set -euo pipefail
name=$(basename "$0")
line=$(printf '%s\t%s' "$name" "$PWD"; printf '\t%s' "$@")
# The commands of a pipeline run at once: one line at a time.
exec 9>>"$STUB_LOG"
flock 9
printf '%s\n' "$line" >&9
exec 9>&-
[[ $name == kubectl ]] || exit 0
case " $* " in
  *" config current-context "*) echo delinkcious ;;
  *" create secret generic "*) echo "kind: Secret" ;;
  *" label --local "*) cat ;;
  *" apply -f - "*) cat >/dev/null ;;
  *' ne .name "admin"'*) printf '8080:8080 9400:9400 ' ;;
  *' eq .name "http"'*) printf '8080' ;;
esac
exit 0
"""


@pytest.fixture
def stubs(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("minikube", "helm", "kubectl"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "MINIKUBE")) and key not in (
        "NAMESPACE", "RELEASE", "HELM", "KUBECTL", "FULLNAME", "PROFILE", "SKIP_BUILD", "NO_FORWARD", "TIMEOUT",
        "NAMESPACE_LABELS", "KUBERNETES_VERSION", "OAUTH_CLIENT_SECRET_FILE")}
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", STUB_LOG=str(tmp_path / "calls.log"),
               KUBECONFIG=str(tmp_path / "kubeconfig"), PYTHON=sys.executable, TMPDIR=str(temporary))
    return env


def run(env: dict[str, str], *command: str, cwd: Path = ROOT, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), cwd=cwd, env={**env, **extra}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def calls(env: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(command, working directory, arguments) of each recorded call, temporary folders' names made constant."""
    log = Path(env["STUB_LOG"])
    if not log.exists():
        return []
    recorded = []
    for line in log.read_text().splitlines():
        # The checkout itself may be in such a folder (a CI clone in mktemp -d): its path is kept as it is.
        line = re.sub(r"tmp\.[A-Za-z0-9]{10}", "tmp.X", line.replace(str(ROOT), "\0root\0")).replace("\0root\0", str(ROOT))
        name, cwd, *args = line.split("\t")
        recorded.append((name, cwd, args))
    Path(env["STUB_LOG"]).unlink()
    # The commands of one pipeline (create-secrets.sh: create secret | label | apply) start in any order.
    piped, ordered = [], []
    for call in [*recorded, None]:
        if call is not None and any(word in call[2] for word in ("generic", "--local", "apply")):
            piped.append(call)
            continue
        ordered += sorted(piped)
        piped = []
        if call is not None:
            ordered.append(call)
    return ordered


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_install_sh_installs_the_chart_with_its_secrets_and_says_how_to_reach_it(stubs):
    result = run(stubs, str(ROOT / "k8s" / "install.sh"), "-f", "k8s/cluster/values.yaml", "--set", "image.tag=1.2.3",
                 cwd=ROOT, NAMESPACE="web", RELEASE="shop", TIMEOUT="7m",
                 NAMESPACE_LABELS="istio-injection=enabled,team=links")
    recorded = calls(stubs)
    kubectl = [args for name, _, args in recorded if name == "kubectl"]
    helm = [args for name, _, args in recorded if name == "helm"]
    assert kubectl.index(["create", "namespace", "web"]) + 1 == kubectl.index(
        ["label", "namespace", "web", "--overwrite", "istio-injection=enabled", "team=links"])
    secrets = {args[args.index("generic") + 1] for args in kubectl if "generic" in args}
    assert secrets == {f"shop-delinkcious-{suffix}" for suffix in ("caller-tokens", "database-passwords", "redis",
                                                                   "gateway", "page-tokens")}
    assert helm == [["upgrade", "--install", "shop", str(CHART), "--namespace", "web", "--wait", "--timeout", "7m",
                     "-f", "k8s/cluster/values.yaml", "--set", "image.tag=1.2.3"]]
    order = [name for name, _, args in recorded if name == "helm" or "generic" in args]
    assert order.index("helm") == len(order) - 1, "the secrets exist before the install"
    assert ("kubectl --namespace web port-forward --address 127.0.0.1 svc/shop-delinkcious-api-gateway "
            "8080:8080 9400:9400\n") in result.stderr
    assert "http://127.0.0.1:8080/login" in result.stderr


def test_install_sh_honours_helm_kubectl_and_a_dry_run(stubs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("helm", "kubectl"):
        shutil.copy(tmp_path / "bin" / name, other / f"my-{name}")
    result = run(stubs, str(ROOT / "k8s" / "install.sh"), "--dry-run=server", cwd=tmp_path,
                 HELM=str(other / "my-helm"), KUBECTL=str(other / "my-kubectl"))
    recorded = calls(stubs)
    assert {name for name, _, _ in recorded} == {"my-helm", "my-kubectl"}
    [helm] = [args for name, _, args in recorded if name == "my-helm"]
    assert helm[:4] == ["upgrade", "--install", RELEASE, str(CHART)] and helm[-1] == "--dry-run=server"
    assert "port-forward" not in result.stderr and not any("service" in args for _, _, args in recorded)


def test_minikube_up_starts_builds_installs_through_install_sh_then_forwards(stubs):
    run(stubs, str(ROOT / "k8s" / "minikube.sh"), "up", "--set", "logLevel=debug", cwd=ROOT / "k8s")
    recorded = calls(stubs)
    minikube = [(cwd, args) for name, cwd, args in recorded if name == "minikube"]
    assert minikube[0] == (str(ROOT / "k8s"), ["start", "-p", "delinkcious", "--cpus", "4", "--memory", "8g",
                                               "--kubernetes-version", "v1.31.0"])
    builds = [args for _, args in minikube[1:]]
    assert all(cwd == str(ROOT) for cwd, _ in minikube[1:]), "image builds run from the repository root"
    expected = [["-p", "delinkcious", "image", "build", "-t", f"delinkcious/{facts.name}:{version()}",
                 "-f", "services/Dockerfile", "--build-opt", f"build-arg=SERVICE={facts.name}", "."]
                for facts in SERVICES]
    expected += [["-p", "delinkcious", "image", "build", "-t", f"delinkcious/{image}:{version()}", context]
                 for image, context in (("identity-provider", "k8s/images/identity-provider"),
                                        ("integration-test", "integration-test"))]
    assert builds == expected
    for args in builds:
        context = ROOT / args[-1]
        dockerfile = context / args[args.index("-f") + 1] if "-f" in args else context / "Dockerfile"
        assert dockerfile.is_file(), dockerfile

    names = [name for name, _, _ in recorded]
    last_build = max(i for i, (name, _, args) in enumerate(recorded) if name == "minikube")
    rest = recorded[last_build + 1:]
    assert rest[0][0] == "kubectl" and rest[0][2] == ["config", "use-context", "delinkcious"]
    assert rest[-1][0] == "kubectl" and rest[-1][2] == [
        "--context", "delinkcious", "--namespace", "delinkcious", "port-forward", "--address", "127.0.0.1",
        "svc/delinkcious-api-gateway", "8080:8080", "9400:9400"]
    install = rest[1:-1]
    [(_, helm_cwd, helm)] = [call for call in install if call[0] == "helm"]
    assert helm[:9] == ["upgrade", "--install", "delinkcious", str(CHART), "--namespace", "delinkcious", "--wait",
                        "--timeout", "10m"]
    assert helm[9:] == ["-f", "k8s/overlays/minikube/values.yaml", "--set", "logLevel=debug"]
    assert (Path(helm_cwd) / helm[10]).is_file()
    assert names.count("helm") == 1

    # The same calls, in the same order, as k8s/install.sh makes on its own: one code path for every cluster.
    run(stubs, str(ROOT / "k8s" / "install.sh"), "-f", "k8s/overlays/minikube/values.yaml", "--set", "logLevel=debug")
    assert install == calls(stubs)


def test_minikube_up_passes_the_machines_pip_index_to_the_builds_and_can_skip_them(stubs):
    run(stubs, str(ROOT / "k8s" / "minikube.sh"), "up", NO_FORWARD="1", PIP_INDEX_URL="https://mirror.invalid/simple")
    recorded = calls(stubs)
    builds = [args for name, _, args in recorded if name == "minikube" and "build" in args]
    assert len(builds) == len(SERVICES) + 2
    option = "build-arg=PIP_INDEX_URL=https://mirror.invalid/simple"
    assert all(option in args and args[args.index(option) - 1] == "--build-opt" for args in builds)
    assert not any("port-forward" in args for _, _, args in recorded)

    run(stubs, str(ROOT / "k8s" / "minikube.sh"), "up", NO_FORWARD="1", SKIP_BUILD="1")
    recorded = calls(stubs)
    assert [args for name, _, args in recorded if name == "minikube"] == [
        ["start", "-p", "delinkcious", "--cpus", "4", "--memory", "8g", "--kubernetes-version", "v1.31.0"]]
    assert sum(name == "helm" for name, _, _ in recorded) == 1


def test_minikube_down_uninstalls_then_deletes_the_profile_and_forward_only_forwards(stubs):
    run(stubs, str(ROOT / "k8s" / "minikube.sh"), "down")
    assert [(name, args) for name, _, args in calls(stubs)] == [
        ("helm", ["--kube-context", "delinkcious", "status", "delinkcious", "--namespace", "delinkcious"]),
        ("helm", ["--kube-context", "delinkcious", "uninstall", "delinkcious", "--namespace", "delinkcious", "--wait",
                  "--timeout", "5m"]),
        ("minikube", ["delete", "-p", "delinkcious"])]
    run(stubs, str(ROOT / "k8s" / "minikube.sh"), "forward")
    assert [(name, args[4]) for name, _, args in calls(stubs)] == [("kubectl", "port-forward")]
    result = subprocess.run([str(ROOT / "k8s" / "minikube.sh"), "sideways"], env=stubs, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "usage" in result.stderr and calls(stubs) == []
