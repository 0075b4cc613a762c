#!/usr/bin/env bash
# Checks the monitoring files with Prometheus' own tool:
#   1. `promtool check rules` on the rule file the chart embeds (helm/delinkcious/files/monitoring/rules.yaml);
#   2. `promtool test rules` on its unit tests (k8s/monitoring/rules-test.yaml);
#   3. the Grafana dashboard's queries (helm/delinkcious/files/monitoring/dashboard.json) parse: each becomes a
#      recording rule of a scratch rule file, Grafana's $__rate_interval and $service filled in, for
#      `promtool check rules`.
# promtool comes from PROMTOOL, else PATH (the `prometheus` package of Debian and Ubuntu, or a Prometheus release).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
files="$root/helm/delinkcious/files/monitoring"

promtool="${PROMTOOL:-$(command -v promtool || true)}"
if [[ -z "$promtool" || ! -x "$promtool" ]]; then
    echo "check-rules.sh: promtool not found: set PROMTOOL=/path/to/promtool or put it on PATH" >&2
    echo "  (it comes with Prometheus: the package 'prometheus' of Debian and Ubuntu, or a release tarball)" >&2
    exit 2
fi
python="${PYTHON:-$(command -v python3 || true)}"
if [[ -z "$python" ]]; then
    echo "check-rules.sh: python3 not found (it reads the dashboard's queries): set PYTHON or put it on PATH" >&2
    exit 2
fi

"$promtool" check rules "$files/rules.yaml"
"$promtool" test rules "$here/rules-test.yaml"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$python" - "$files/dashboard.json" >"$scratch/dashboard-queries.yaml" <<'PYTHON'
import json, sys
dashboard = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard-queries\n    rules:")
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$service", ".+")
        print(f"      - record: dashboard:panel_{panel['id']}:{target['refId']}")
        print(f"        expr: {json.dumps(expr)}")
PYTHON
echo "Checking the queries of $files/dashboard.json"
"$promtool" check rules "$scratch/dashboard-queries.yaml" >/dev/null
echo "  SUCCESS: every query parses"
