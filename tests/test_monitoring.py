"""The monitoring files agree with what they describe (k8s/monitoring/README.md).

- The rules (helm/delinkcious/files/monitoring/rules.yaml): every alert says how urgent it is (`page`, `ticket`),
  what happened, and where its runbook is, a page of docs/runbooks with the four sections; every runbook page is an
  alert's; the promtool unit tests (k8s/monitoring/rules-test.yaml) make every alert fire and stay quiet; the SLO's
  ratios are one expression over every window; the services and servers the rules select are the catalogue's.
- The rules and the dashboard name only metrics of the dictionary (services/kit/observability/metrics.py), which
  docs/metrics.md lists; the dashboard is a Grafana dashboard with a data source and a service variable.
- Where helm is found (HELM, PATH, or k8s/cluster/build.sh's cache), the chart renders a ServiceMonitor per service
  on the port serving /metrics, a PrometheusRule holding the rule file, the dashboard's ConfigMap, and nothing of it
  all by default.
promtool itself runs in k8s/monitoring/check-rules.sh."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from delinkcious.catalogue import SERVICES
from delinkcious.contracts.events import LinkAdded
from delinkcious.kit.messaging.consumer import ConsumerGroup, Subscription
from delinkcious.kit.observability import metrics
from prometheus_client import REGISTRY

from tests.support.helm import HELM, needs_helm, objects, render
from tests.support.metrics import DASHBOARD, dashboard_queries, dictionary, unknown_names

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "delinkcious"
RULES = CHART / "files" / "monitoring" / "rules.yaml"
RULES_TEST = ROOT / "k8s" / "monitoring" / "rules-test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITIES = {"page", "ticket"}
SECTIONS = ["Meaning", "Confirm", "Mitigate", "Escalate"]
SLO_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
# The chart's own servers: their components (containers, StatefulSets and volume claims `data-<fullname>-<server>-N`).
SERVERS = {"postgresql", "redis", "nats"}
RECORDED = re.compile(r"delinkcious:[a-z0-9_:]+")


def groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rules() -> list[dict]:
    return [rule for group in groups() for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def runbook_base() -> str:
    """Where runbook_url points: docs/runbooks of the chart's ownership.sourceUrl."""
    return yaml.safe_load((CHART / "values.yaml").read_text())["ownership"]["sourceUrl"] + "/blob/master/docs/runbooks/"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def alternatives(expression: str, label: str) -> set[str]:
    """The values a `label=~"a|b|c"` matcher of the expression admits (every such matcher must agree)."""
    found = {frozenset(match.split("|")) for match in re.findall(rf'{label}=~"([^"]+)"', expression)}
    assert len(found) == 1, f"{label}: {found}"
    return set(found.pop())


# --- the rules -------------------------------------------------------------------------------------------------------


def test_every_rule_is_a_recording_rule_or_an_alert_in_a_group_of_its_own_name():
    assert len({group["name"] for group in groups()}) == len(groups())
    for rule in rules():
        assert ("record" in rule) != ("alert" in rule), rule
        assert rule["expr"].strip()


@pytest.mark.parametrize("name", sorted(alerts()))
def test_an_alert_says_how_urgent_it_is_what_happened_and_where_its_runbook_is(name):
    rule = alerts()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert "$labels" in annotations["description"] or "$value" in annotations["description"]
    assert annotations["runbook_url"] == f"{runbook_base()}{kebab(name)}.md"

    page = (RUNBOOKS / f"{kebab(name)}.md").read_text()
    assert page.startswith(f"# {name}\n")
    assert f"**Severity:** {rule['labels']['severity']}." in page
    headings = re.findall(r"^## (.+)$", page, re.MULTILINE)
    assert headings == SECTIONS
    for section in re.split(r"^## .+$", page, flags=re.MULTILINE)[1:]:
        assert section.strip(), f"{name}: an empty section"


def test_the_ports_the_runbooks_name_are_the_catalogues():
    ports = {port for facts in SERVICES for port in (facts.port, facts.admin_port, facts.grpc_port) if port}
    named = {int(port) for path in RUNBOOKS.glob("*.md")
             for port in re.findall(r"(?<![\d.])(?:80|90)[89]\d(?!\d)", path.read_text())}
    assert named and named <= ports, named - ports


def test_both_severities_are_used():
    assert {rule["labels"]["severity"] for rule in alerts().values()} == SEVERITIES


def test_every_runbook_page_is_an_alerts_and_the_index_lists_each_with_its_severity():
    pages = {path.name for path in RUNBOOKS.glob("*.md")} - {"README.md"}
    assert pages == {f"{kebab(name)}.md" for name in alerts()}
    index = (RUNBOOKS / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| \[([\w.-]+)\]\(([\w.-]+)\) \|$", index, re.MULTILINE)
    assert sorted(rows) == sorted((name, rule["labels"]["severity"], f"{kebab(name)}.md", f"{kebab(name)}.md")
                                  for name, rule in alerts().items())


def test_the_unit_tests_make_every_alert_fire_and_stay_quiet():
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert [(RULES_TEST.parent / path).resolve() for path in tests["rule_files"]] == [RULES.resolve()]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fired == set(alerts()), "alerts no test makes fire"
    assert quiet == set(alerts()), "alerts no test shows quiet"


def test_each_slo_is_one_ratio_over_every_window_and_one_budget():
    recorded: dict[tuple[str, str], list[str]] = {}
    for rule in rules():
        if "record" in rule:
            recorded.setdefault((rule["record"], rule.get("labels", {}).get("slo", "")), []).append(rule["expr"])
    slos = {slo for (name, slo) in recorded if name == "delinkcious:slo_error_budget:ratio"}
    assert slos == {"availability", "latency"}
    for slo in slos:
        assert len(recorded[("delinkcious:slo_error_budget:ratio", slo)]) == 1
        shortest = recorded[(f"delinkcious:slo_errors:ratio_rate{SLO_WINDOWS[0]}", slo)]
        assert len(shortest) == 1
        for window in SLO_WINDOWS:
            # The same SLI, the window alone differs.
            assert recorded[(f"delinkcious:slo_errors:ratio_rate{window}", slo)] == [
                shortest[0].replace(f"[{SLO_WINDOWS[0]}]", f"[{window}]")]


def test_every_recorded_series_the_alerts_and_the_dashboard_use_is_recorded():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {name for expression in [*(rule["expr"] for rule in alerts().values()), *dashboard_queries()]
            for name in RECORDED.findall(expression)}
    assert used and used <= recorded, used - recorded


def test_the_rules_select_the_catalogues_services_and_the_charts_servers():
    services = {facts.name for facts in SERVICES}
    expressions = {name: rule["expr"] for name, rule in alerts().items()}
    assert alternatives(expressions["DelinkciousServiceDown"], "service") == services
    assert alternatives(expressions["DelinkciousContainerRestarting"], "container") == services | SERVERS
    claims = set(re.findall(r'persistentvolumeclaim=~"data-\.\+-\(([^)]+)\)-\[0-9\]\+"',
                            expressions["DelinkciousVolumeFillingUp"]))
    assert len(claims) == 1 and set(claims.pop().split("|")) == SERVERS


def test_the_public_api_of_the_slo_is_the_gateways():
    gateway = next(facts for facts in SERVICES if facts.admin_port)  # the only public service keeps ops apart
    for rule in rules():
        if rule.get("record", "").startswith("delinkcious:slo_errors:"):
            selectors = re.findall(r"\{([^}]*)\}", rule["expr"])
            assert selectors and all(f'service="{gateway.name}"' in selector and
                                     'route!~"/healthz/.*|/metrics"' in selector for selector in selectors)


# --- the metric dictionary ------------------------------------------------------------------------------------------


def test_the_rules_and_the_dashboard_name_only_metrics_of_the_dictionary():
    unknown = {name for expression in [*(rule["expr"] for rule in rules()), *dashboard_queries()]
               for name in unknown_names(expression)}
    assert unknown == set()


def test_the_metrics_doc_lists_exactly_the_dictionary():
    table = re.findall(r"^\| `(delinkcious_\w+)` \| (counter|gauge|histogram)\b", (ROOT / "docs" / "metrics.md")
                       .read_text(), re.MULTILINE)
    assert dict(table) == dictionary() and len(table) == len(dictionary())


def test_a_consumer_creates_every_outcome_at_start_so_the_first_rejection_counts():
    durable = "monitoring-test-consumer"
    ConsumerGroup("monitoring-test", None, [Subscription.to(LinkAdded, durable=durable, handler=lambda event: None)])
    assert {outcome: REGISTRY.get_sample_value("delinkcious_events_consumed_total", {
        "service": "monitoring-test", "consumer": durable, "outcome": outcome}) for outcome in metrics.EVENT_OUTCOMES
    } == dict.fromkeys(metrics.EVENT_OUTCOMES, 0.0)


# --- the dashboard --------------------------------------------------------------------------------------------------


def test_the_dashboard_takes_its_data_source_and_services_as_variables():
    board = dashboard()
    assert board["schemaVersion"] == 39 and board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query" and service["datasource"]["uid"] == "${datasource}"
    assert re.fullmatch(r"label_values\(delinkcious_\w+, service\)", service["definition"])
    assert service["query"]["query"] == service["definition"]


def test_every_panel_queries_the_chosen_data_source():
    panels = dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":  # a heading: it holds no query
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"], panel["title"]
    assert {panel["type"] for panel in panels} - {"row"}


# --- the chart (where helm is available) ---------------------------------------------------------------------------


EVERYTHING_ON = ["--kube-version", "1.31.0", "--set", "monitoring.serviceMonitors.enabled=true",
                 "--set", "monitoring.rules.enabled=true", "--set", "monitoring.dashboard.enabled=true",
                 "--set", "monitoring.labels.release=prometheus"]


@pytest.fixture(scope="module")
def everything_on() -> list[dict]:
    if HELM is None:
        pytest.skip("no helm binary")
    return render(*EVERYTHING_ON)


@needs_helm
@pytest.mark.parametrize("facts", SERVICES, ids=lambda facts: facts.name)
def test_a_service_monitor_scrapes_each_service_where_it_serves_metrics(everything_on, facts):
    monitor = objects(everything_on, "ServiceMonitor")[f"dlk-delinkcious-{facts.name}"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    assert endpoint["port"] == ("admin" if facts.admin_port else "http")
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "service", "replacement": facts.name}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}
    # The service's Service carries the selected labels and names the port that serves /metrics.
    service = objects(everything_on, "Service")[f"dlk-delinkcious-{facts.name}"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    assert ports[endpoint["port"]] == (facts.admin_port or facts.port)
    selected = [name for name, other in objects(everything_on, "Service").items()
                if selector.items() <= other["metadata"]["labels"].items()]
    assert selected == [f"dlk-delinkcious-{facts.name}"]


@needs_helm
def test_the_prometheus_rule_holds_the_rule_file_as_it_is(everything_on):
    [rule] = objects(everything_on, "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"]["groups"] == groups()


@needs_helm
def test_the_runbook_links_can_point_at_another_copy_of_the_runbooks():
    documents = render("--set", "monitoring.rules.enabled=true",
                       "--set", "monitoring.rules.runbookBaseUrl=https://wiki.example.com/ops/runbooks/")
    [rule] = objects(documents, "PrometheusRule").values()
    links = {item["alert"]: item["annotations"]["runbook_url"]
             for group in rule["spec"]["groups"] for item in group["rules"] if "alert" in item}
    assert links == {name: f"https://wiki.example.com/ops/runbooks/{kebab(name)}.md" for name in alerts()}


@needs_helm
def test_the_dashboard_config_map_holds_the_dashboard_for_grafanas_sidecar(everything_on):
    config_map = objects(everything_on, "ConfigMap")["dlk-delinkcious-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "shop"
    assert json.loads(config_map["data"]["delinkcious.json"]) == dashboard()
    elsewhere = render("--set", "monitoring.dashboard.enabled=true", "--set", "monitoring.dashboard.namespace=grafana",
                       "--set", "monitoring.dashboard.labels.grafana_dashboard=null",
                       "--set", "monitoring.dashboard.labels.dashboards=delinkcious")
    moved = objects(elsewhere, "ConfigMap")["dlk-delinkcious-dashboard"]["metadata"]
    assert moved["namespace"] == "grafana" and moved["labels"]["dashboards"] == "delinkcious"
    assert "grafana_dashboard" not in moved["labels"]


@needs_helm
def test_nothing_of_it_is_rendered_by_default(everything_on):
    default = render()
    monitoring_objects = {(document["kind"], document["metadata"]["name"]) for document in everything_on} - {
        (document["kind"], document["metadata"]["name"]) for document in default}
    assert {kind for kind, _ in monitoring_objects} == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert not [document for document in default
                if document["kind"] in ("ServiceMonitor", "PrometheusRule")
                or document["metadata"]["labels"].get("app.kubernetes.io/component") == "monitoring"]


@needs_helm
def test_the_canary_gateway_pods_are_scraped_too():
    documents = render(*EVERYTHING_ON, "--set", "canary.enabled=true", "--set", "canary.tag=0.2.0",
                       "--set", "canary.services={api-gateway}", "--set", "ingress.enabled=true",
                       "--set", "canary.ingressWeight=10")
    gateway = next(facts for facts in SERVICES if facts.admin_port)
    selector = objects(documents, "ServiceMonitor")[f"dlk-delinkcious-{gateway.name}"]["spec"]["selector"]
    canary = objects(documents, "Service")[f"dlk-delinkcious-{gateway.name}-canary"]
    assert selector["matchLabels"].items() <= canary["metadata"]["labels"].items()
    assert {"name": "admin", "port": gateway.admin_port, "targetPort": "admin", "protocol": "TCP"} in \
        canary["spec"]["ports"]
