#!/usr/bin/env bash
# Delinkcious on Minikube, for developers:
#   k8s/minikube.sh up [HELM-ARGS...]   minikube start (profile delinkcious), builds every image into it (the six
#                                       services, the development identity provider, the black-box test suite),
#                                       installs the chart with k8s/install.sh -f k8s/overlays/minikube/values.yaml
#                                       HELM-ARGS..., then port-forwards the gateway (8080) and the identity
#                                       provider (9400) until Ctrl-C
#   k8s/minikube.sh forward             only the port-forward (again, after a Ctrl-C)
#   k8s/minikube.sh down                helm uninstall, then minikube delete -p delinkcious
# The install is k8s/install.sh, the same code that installs on any cluster. PostgreSQL, Redis and NATS are the
# official images, pulled by Minikube; the Delinkcious images are built in Minikube (`minikube image build`, which
# works with any driver and container runtime) and never pulled (pullPolicy Never in the values).
# Environment: PROFILE (default delinkcious), MINIKUBE_CPUS (4), MINIKUBE_MEMORY (8g), KUBERNETES_VERSION
# (v1.31.0), MINIKUBE_START_ARGS (extra `minikube start` arguments, split on spaces, e.g. "--driver=docker"),
# SKIP_BUILD=1 (keep the images built before), NO_FORWARD=1 (up without the port-forward), NAMESPACE, RELEASE,
# TIMEOUT, MINIKUBE, HELM, KUBECTL (default minikube, helm, kubectl on PATH), PYTHON (reads pyproject.toml and
# the catalogue; default .venv/bin/python, else python3). PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and
# PIP_TRUSTED_HOST, when set, are passed to the image builds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=${PROFILE:-delinkcious}
namespace=${NAMESPACE:-delinkcious}
release=${RELEASE:-delinkcious}
minikube=${MINIKUBE:-minikube}
helm=${HELM:-helm}
kubectl=${KUBECTL:-kubectl}
values=k8s/overlays/minikube/values.yaml
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=python3
  [[ ! -x $root/.venv/bin/python ]] || PYTHON=$root/.venv/bin/python
fi
# The chart's <fullname> (as k8s/install.sh works it out): for the gateway Service's name.
fullname=${FULLNAME:-$release}
[[ -n ${FULLNAME:-} || $release == *delinkcious* ]] || fullname=$release-delinkcious

log() { printf '[minikube] %s\n' "$*" >&2; }

usage() {
  echo "usage: $0 up [HELM-ARGS...] | forward | down" >&2
  exit 2
}

version() {
  "$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$root/pyproject.toml"
}

# The catalogue's services, read from services/catalogue.py itself (no installed package needed).
services() {
  "$PYTHON" - "$root/services/catalogue.py" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("catalogue", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["catalogue"] = module
spec.loader.exec_module(module)
print(*(facts.name for facts in module.SERVICES))
PY
}

# minikube image build TAG CONTEXT [ARGS...], from the repository root (the services' context is the root).
build() {
  local tag=$1 context=$2 variable
  shift 2
  local args=(-t "$tag" "$@")
  for variable in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    [[ -z ${!variable:-} ]] || args+=(--build-opt "build-arg=$variable=${!variable}")
  done
  log "image build $tag"
  (cd "$root" && "$minikube" -p "$profile" image build "${args[@]}" "$context")
}

build_images() {
  local version all names service
  version=$(version)
  all=$(services)  # an assignment, so that a catalogue that fails to load stops here (set -e)
  read -ra names <<<"$all"
  for service in "${names[@]}"; do
    build "delinkcious/$service:$version" . -f services/Dockerfile --build-opt "build-arg=SERVICE=$service"
  done
  # The support images of k8s/images/build.sh (the stand-ins for the servers are CI's: Minikube pulls the real ones).
  build "delinkcious/identity-provider:$version" k8s/images/identity-provider
  build "delinkcious/integration-test:$version" integration-test
}

forward() {
  log "log in at http://127.0.0.1:8080/login (any name: the development identity provider signs anyone in);" \
    "Ctrl-C stops the port-forward, \`$0 forward\` starts it again"
  "$kubectl" --context "$profile" --namespace "$namespace" port-forward --address 127.0.0.1 \
    "svc/$fullname-api-gateway" 8080:8080 9400:9400
}

up() {
  local start=(start -p "$profile" --cpus "${MINIKUBE_CPUS:-4}" --memory "${MINIKUBE_MEMORY:-8g}"
               --kubernetes-version "${KUBERNETES_VERSION:-v1.31.0}")
  if [[ -n ${MINIKUBE_START_ARGS:-} ]]; then
    local extra
    read -ra extra <<<"$MINIKUBE_START_ARGS"
    start+=("${extra[@]}")
  fi
  log "minikube ${start[*]}"
  "$minikube" "${start[@]}"
  if [[ ${SKIP_BUILD:-0} == 1 ]]; then
    log "SKIP_BUILD=1: using the images built into the profile before"
  else
    build_images
  fi
  # minikube start makes the profile the current context; install.sh works on the current context.
  "$kubectl" config use-context "$profile" >/dev/null
  (cd "$root" && NAMESPACE=$namespace RELEASE=$release HELM=$helm KUBECTL=$kubectl k8s/install.sh -f "$values" "$@")
  if [[ ${NO_FORWARD:-0} == 1 ]]; then
    log "NO_FORWARD=1: start the port-forward with \`$0 forward\`"
  else
    forward
  fi
}

down() {
  if "$helm" --kube-context "$profile" status "$release" --namespace "$namespace" >/dev/null 2>&1; then
    "$helm" --kube-context "$profile" uninstall "$release" --namespace "$namespace" --wait --timeout 5m
  else
    log "no release $release in namespace $namespace of profile $profile: nothing to uninstall"
  fi
  "$minikube" delete -p "$profile"
}

case ${1:-} in
  up) shift; up "$@" ;;
  forward) forward ;;
  down) down ;;
  *) usage ;;
esac
