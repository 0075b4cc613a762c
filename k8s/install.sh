#!/usr/bin/env bash
# Installs (or upgrades) the Delinkcious Helm chart on the current kube context, whatever the cluster:
#   k8s/install.sh [HELM-ARGS...]            e.g. k8s/install.sh -f k8s/cluster/values.yaml --set image.tag=0.1.0
# 1. the namespace (created when missing; NAMESPACE_LABELS=key=value,... labels it, e.g. istio-injection=enabled);
# 2. the Secrets the chart mounts (k8s/create-secrets.sh: random values, existing ones kept);
# 3. helm upgrade --install RELEASE helm/delinkcious --namespace NAMESPACE --wait --timeout TIMEOUT HELM-ARGS...
#    (HELM-ARGS come last, so they can override anything, e.g. --timeout 20m, or --dry-run=server);
# 4. prints how to reach the gateway: the port-forward of its Service's public (and identity provider) ports.
# Environment: NAMESPACE (default delinkcious), RELEASE (default delinkcious), TIMEOUT (default 10m), HELM and
# KUBECTL (default helm and kubectl on PATH), KUBECONFIG (read by both), FULLNAME (when the release sets
# fullnameOverride), OAUTH_CLIENT_SECRET_FILE (passed to k8s/create-secrets.sh).
# k8s/minikube.sh installs through this script; k8s/verify.sh's cluster stage runs it on the CI cluster.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
namespace=${NAMESPACE:-delinkcious}
release=${RELEASE:-delinkcious}
timeout=${TIMEOUT:-10m}
helm=${HELM:-helm}
kubectl=${KUBECTL:-kubectl}
chart=$root/helm/delinkcious
# shellcheck source-path=SCRIPTDIR source=chart-names.sh
. "$(dirname "${BASH_SOURCE[0]}")/chart-names.sh"
fullname=$(chart_fullname "$release")

log() { printf '[install] %s\n' "$*" >&2; }

command -v "$helm" >/dev/null || { log "no helm ($helm): install Helm 3 or set HELM"; exit 1; }
command -v "$kubectl" >/dev/null || { log "no kubectl ($kubectl): install it or set KUBECTL"; exit 1; }

context=$("$kubectl" config current-context 2>/dev/null || true)
log "context ${context:-(none; KUBECONFIG=${KUBECONFIG:-~/.kube/config})}, namespace $namespace, release $release"

if [[ -z $("$kubectl" get namespace "$namespace" --ignore-not-found -o name) ]]; then
  "$kubectl" create namespace "$namespace" >/dev/null
  log "namespace/$namespace: created"
fi
if [[ -n ${NAMESPACE_LABELS:-} ]]; then
  IFS=, read -ra labels <<<"$NAMESPACE_LABELS"
  "$kubectl" label namespace "$namespace" --overwrite "${labels[@]}" >/dev/null
  log "namespace/$namespace: labelled ${labels[*]}"
fi

KUBECTL=$kubectl FULLNAME=$fullname "$root/k8s/create-secrets.sh" "$namespace" "$release"

dry_run=false
for arg in "$@"; do
  [[ $arg != --dry-run* ]] || dry_run=true
done

log "helm upgrade --install $release (timeout $timeout) $*"
"$helm" upgrade --install "$release" "$chart" --namespace "$namespace" --wait --timeout "$timeout" "$@"
$dry_run && exit 0

# Where to reach it: the gateway Service's public port, and the development identity provider's when it is on.
gateway=$fullname-api-gateway
ports=$("$kubectl" --namespace "$namespace" get service "$gateway" \
  -o go-template='{{range .spec.ports}}{{if ne .name "admin"}}{{.port}}:{{.port}} {{end}}{{end}}')
public=$("$kubectl" --namespace "$namespace" get service "$gateway" \
  -o go-template='{{range .spec.ports}}{{if eq .name "http"}}{{.port}}{{end}}{{end}}')
cat >&2 <<EOF
[install] release $release is installed in namespace $namespace. Reach the gateway with
  $kubectl --namespace $namespace port-forward --address 127.0.0.1 svc/$gateway ${ports% }
then open http://127.0.0.1:${public:-8080}/login; run the smoke test with
  $helm test $release --namespace $namespace --logs
EOF
