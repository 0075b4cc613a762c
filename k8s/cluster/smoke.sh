#!/usr/bin/env bash
# End-to-end check of the local cluster: build (cached) -> up -> a Deployment
# and Service of a tiny FROM-scratch image -> pods Ready -> DNS and ClusterIP
# from inside a pod -> kubectl logs/exec -> port-forward from the host -> down
# (always, from the EXIT trap).  Exit status 0 only if every step passed.
#
# Usage: [STATE_DIR=...] k8s/cluster/smoke.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export STATE_DIR=${STATE_DIR:-/tmp/delinkcious-k8s-smoke}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
LOG_TAG=smoke
SMOKE_IMAGE=localhost/delinkcious-smoke:ci
LOCAL_PORT=${SMOKE_LOCAL_PORT:-18080}
t_start=$SECONDS
pf_pid=

"$here/build.sh" >/dev/null

# --- the test image: a static Go binary in a FROM-scratch docker-archive ----
work=${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/k8s/smoke
mkdir -p "$work"
if [[ ! -x $work/smoke-app || $here/smoke-app/main.go -nt $work/smoke-app ]]; then
  log "go build smoke-app"
  (cd "$here/smoke-app" && GO111MODULE=off CGO_ENABLED=0 GOCACHE="$work/gocache" \
    /usr/lib/go-1.19/bin/go build -trimpath -ldflags '-s -w' -o "$work/smoke-app" main.go)
fi
"$here/scratch-image.sh" "$work/smoke-image.tar" "$SMOKE_IMAGE" "$work/smoke-app" >/dev/null

cleanup() {
  local rc=$?
  [[ -n $pf_pid ]] && kill "$pf_pid" 2>/dev/null
  if ((rc != 0)) && [[ -f $KUBECONFIG_ADMIN ]]; then
    log "FAILED (exit $rc); cluster state for the record:"
    kubectl_ get nodes,pods,svc,endpoints -A -o wide >&2 2>/dev/null || true
    kubectl_ get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
  fi
  local t_down=$SECONDS
  "$here/down.sh" || rc=1
  log "down took $((SECONDS - t_down))s"
  if ((rc == 0)); then log "PASSED in $((SECONDS - t_start))s"; else log "FAILED"; fi
  exit "$rc"
}
trap cleanup EXIT

t_up=$SECONDS
"$here/up.sh" "$work/smoke-image.tar"
log "up took $((SECONDS - t_up))s"

log "deploying smoke Deployment + Service"
kubectl_ apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: default, labels: {app: smoke}}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: $SMOKE_IMAGE
        imagePullPolicy: Never       # imported by up.sh; there is no registry
        args: [serve, ":8080"]
        ports: [{containerPort: 8080, protocol: TCP}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: smoke, namespace: default}
spec:
  selector: {app: smoke}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
YAML
t_ready=$SECONDS
kubectl_ rollout status deployment/smoke --timeout=120s
kubectl_ wait --for=condition=Ready pod -l app=smoke --timeout=60s
log "pods Ready $((SECONDS - t_ready))s after apply"
kubectl_ get pods -o wide

# The Service name must resolve from a pod: short name (search path),
# <svc>.<ns> and the FQDN; then a request to it crosses kube-proxy's DNAT.
# dns-sync.sh refreshes every 2 s, so allow a few tries.
log "DNS + ClusterIP from inside a pod"
ok=0
for _ in $(seq 1 15); do
  if kubectl_ exec deploy/smoke -- /smoke-app lookup smoke smoke.default \
    "smoke.default.svc.$CLUSTER_DOMAIN" "kubernetes.default.svc.$CLUSTER_DOMAIN"; then
    ok=1
    break
  fi
  sleep 1
done
((ok == 1)) || die "Service names do not resolve inside the pod"
# kube-proxy programs the Service's DNAT rules asynchronously (it REJECTs
# until it has seen ready endpoints), so retry for a little while.
ok=0
for _ in $(seq 1 20); do
  if kubectl_ exec deploy/smoke -- /smoke-app get http://smoke/ &&
    kubectl_ exec deploy/smoke -- /smoke-app get "http://smoke.default.svc.$CLUSTER_DOMAIN/"; then
    ok=1
    break
  fi
  sleep 1
done
((ok == 1)) || die "Service ClusterIP not reachable from inside the pod"
kubectl_ logs deploy/smoke --tail=5

log "port-forward --address 127.0.0.1 svc/smoke $LOCAL_PORT:80"
kubectl_ port-forward --address 127.0.0.1 svc/smoke "$LOCAL_PORT:80" >"$LOG_DIR/port-forward.log" 2>&1 &
pf_pid=$!
body=
for _ in $(seq 1 40); do
  body=$(curl -fsS --max-time 2 "http://127.0.0.1:$LOCAL_PORT/" 2>/dev/null) && break
  sleep 0.25
done
[[ $body == delinkcious-smoke\ ok* ]] || die "port-forward: unexpected answer '$body'"
log "port-forward answered: $body"
kill "$pf_pid" 2>/dev/null
wait "$pf_pid" 2>/dev/null || true
pf_pid=
log "all checks passed"
