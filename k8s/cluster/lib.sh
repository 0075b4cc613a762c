# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts sourcing this file
# Settings and helpers shared by up.sh, down.sh and smoke.sh (sourced, not run).
# Every value can be overridden from the environment so that two clusters, or
# a CI job with its own paths, do not collide.

K8S_VERSION=${K8S_VERSION:-v1.20.2}
K8S_BIN=${K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/k8s/$K8S_VERSION/bin}
STATE_DIR=${STATE_DIR:-/tmp/delinkcious-k8s}

# Ports on 127.0.0.1 only; chosen away from the usual defaults (2379, 6443)
# so a developer's own cluster on the same machine is not disturbed.
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-22379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22380}
APISERVER_PORT=${APISERVER_PORT:-16443}

# Pod network: one Linux bridge, its gateway address doubles as the cluster
# DNS server address (dnsmasq listens there).
POD_BRIDGE=${POD_BRIDGE:-dlkpods0}   # max 15 characters (IFNAMSIZ)
POD_CIDR=${POD_CIDR:-10.244.0.0/24}
POD_GATEWAY=${POD_GATEWAY:-10.244.0.1}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/16}
KUBERNETES_SVC_IP=${KUBERNETES_SVC_IP:-10.96.0.1}   # first address of SERVICE_CIDR
CLUSTER_DOMAIN=cluster.local
NODE_NAME=localhost   # kubelet refuses a loopback node IP; a hostname works
PAUSE_IMAGE=${PAUSE_IMAGE:-localhost/delinkcious-pause:$K8S_VERSION}

CONTAINERD_SOCK=$STATE_DIR/containerd/containerd.sock
KUBECONFIG_ADMIN=$STATE_DIR/kubeconfig
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run   # pid files and "before" snapshots

log() { printf '[%s %(%T)T] %s\n' "${LOG_TAG:-cluster}" -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# running PID: the process exists and is not a zombie.  Daemons outlive
# up.sh, so their parent is pid 1, which may reap them only seconds later;
# a zombie still answers kill -0 but has finished.
running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

# pid_alive NAME: the process recorded in $RUN_DIR/NAME.pid still runs and is
# still the program we started (guards against a recycled pid)
pid_alive() {
  local f=$RUN_DIR/$1.pid pid exe
  [[ -f $f ]] || return 1
  read -r pid exe <"$f" || return 1
  [[ -n $pid ]] || return 1
  running "$pid" || return 1
  [[ -z $exe ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$exe"
}
