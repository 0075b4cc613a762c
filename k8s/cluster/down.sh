#!/usr/bin/env bash
# Tear down the cluster started by up.sh in $STATE_DIR; safe to run any number
# of times, and after a half-finished up.sh.  Order matters:
#   1. delete workloads, then pods, while kubelet and apiserver still run, so
#      the kubelet stops containers and CNI releases their network namespaces;
#   2. stop node daemons, kill any container left in containerd, stop it;
#   3. stop the control plane;
#   4. clean the host: mounts under $STATE_DIR, network namespaces, the pod
#      bridge and the KUBE-*/CNI-*/DLK-VERIFY-* iptables chains this cluster created
#      (up.sh recorded what existed before, which is left alone).
# Logs stay in $STATE_DIR/logs; everything else in $STATE_DIR is deleted.
set -uo pipefail   # no -e: a failing cleanup step must not skip the others
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
LOG_TAG=down
t0=$SECONDS

[[ $(id -u) == 0 ]] || die "must run as root"
if [[ ! -d $STATE_DIR ]]; then
  log "no state in $STATE_DIR: nothing to do"
  exit 0
fi

# stop NAME [SECONDS]: TERM the recorded process, KILL it after the grace time
stop() {
  local name=$1 grace=${2:-10} pid deadline
  if pid_alive "$name"; then
    read -r pid _ <"$RUN_DIR/$name.pid"
    kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + grace))
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if running "$pid"; then
      log "$name ($pid) ignored SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$RUN_DIR/$name.pid"
}

remove_pods() {
  pid_alive apiserver && pid_alive kubelet || return 0
  log "deleting workloads and pods"
  # controllers first, or they would re-create the pods just deleted
  kubectl_ delete deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs,replicationcontrollers \
    --all --all-namespaces --wait=false >/dev/null 2>&1
  kubectl_ delete pods --all --all-namespaces --grace-period=2 --wait=false >/dev/null 2>&1
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    [[ -z $(kubectl_ get pods --all-namespaces -o name 2>/dev/null) ]] && return 0
    sleep 0.5
  done
  log "pods still present after 30s; forcing"
  kubectl_ delete pods --all --all-namespaces --grace-period=0 --force >/dev/null 2>&1
}

remove_containers() {
  [[ -S $CONTAINERD_SOCK ]] && pid_alive containerd || return 0
  local ids id
  # the CRI view first: stopping a sandbox also tears down its CNI network
  if command -v crictl >/dev/null; then
    crictl --runtime-endpoint "unix://$CONTAINERD_SOCK" rmp -fa >/dev/null 2>&1
  fi
  ids=$(ctr_ tasks ls -q 2>/dev/null)
  [[ -z $ids ]] && return 0
  log "killing $(wc -w <<<"$ids") leftover container(s)"
  for id in $ids; do ctr_ tasks kill --signal SIGKILL "$id" >/dev/null 2>&1; done
  sleep 1
  for id in $ids; do ctr_ tasks delete --force "$id" >/dev/null 2>&1; done
  for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1; done
}

kill_orphan_shims() {
  # containerd-shim-runc-v2 processes are started by *our* containerd with our
  # socket path on their command line; only those are ours to kill.
  local pid
  for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null); do
    log "killing orphan shim $pid"
    kill -KILL "$pid" 2>/dev/null
  done
}

unmount_state() {
  # deepest first; lazy unmount as fallback for busy mounts
  local m
  awk -v d="$STATE_DIR" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

remove_netns() {
  # network namespaces that did not exist before up.sh (CNI names them cni-*)
  local before=$RUN_DIR/netns.before ns
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
    [[ -f $before ]] && grep -qx -- "$ns" "$before" && continue
    log "deleting network namespace $ns"
    ip netns delete "$ns" 2>/dev/null || { umount -l "/run/netns/$ns" 2>/dev/null; rm -f "/run/netns/$ns"; }
  done
}

remove_bridge() {
  if ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    log "deleting bridge $POD_BRIDGE"
    ip link delete "$POD_BRIDGE" 2>/dev/null
  fi
  rm -f "$RUN_DIR/bridge.created"
}

# remove_chains IPTABLES: KUBE-*/CNI-* chains of kubelet, kube-proxy and the
# CNI plugins that were not there before up.sh, with the rules jumping to them
# (and DLK-VERIFY-*: k8s/verify.sh's forwards to a pod, if it was killed first)
remove_chains() {
  local ipt=$1 before=$RUN_DIR/$1.chains.before table chain mine
  command -v "$ipt-save" >/dev/null || return 0
  for table in filter nat mangle raw; do
    mine=$("$ipt-save" -t "$table" 2>/dev/null | awk '/^:(KUBE|CNI|DLK-VERIFY)-/ {print substr($1, 2)}' |
      while read -r chain; do
        [[ -f $before ]] && grep -qx -- "$table $chain" "$before" && continue
        echo "$chain"
      done)
    [[ -z $mine ]] && continue
    log "$ipt -t $table: removing $(wc -w <<<"$mine") chain(s)"
    # rules in other chains that jump to ours (built-in chains included)
    local rule target
    "$ipt" -t "$table" -S 2>/dev/null | grep -E -- '^-A .* -j (KUBE|CNI|DLK-VERIFY)-' | while read -r rule; do
      target=$(grep -oE -- '-j [^ ]+' <<<"$rule" | cut -d' ' -f2)
      grep -qx -- "$target" <<<"$mine" || continue
      # iptables -S quotes comments; eval restores them as single arguments
      eval "$ipt -t $table ${rule/#-A/-D}" 2>/dev/null
    done
    for chain in $mine; do "$ipt" -t "$table" -F "$chain" 2>/dev/null; done
    for chain in $mine; do "$ipt" -t "$table" -X "$chain" 2>/dev/null; done
  done
}

# Host paths that kubelet/containerd use regardless of their flags: delete
# the ones this cluster created (per up.sh's snapshot), if up.sh got that far.
remove_host_dirs() {
  local dirs=$RUN_DIR/dirs.before logs=$RUN_DIR/podlogs.before d e
  [[ -f $dirs && -f $logs ]] || return 0
  for d in /var/log/pods /var/log/containers; do
    [[ -d $d ]] || continue
    for e in "$d"/*; do
      [[ -e $e || -L $e ]] || continue
      grep -qxF -- "$(basename "$e")" "$logs" || rm -rf -- "$e"
    done
  done
  for d in /var/lib/kubelet /run/containerd /usr/libexec/kubernetes /var/log/pods /var/log/containers; do
    [[ -e $d ]] && ! grep -qxF -- "$d" "$dirs" && rm -rf -- "$d"
  done
  return 0
}

phase() { log "$* (+$((SECONDS - t0))s)"; }

phase "start"
remove_pods
phase "pods gone; stopping node daemons"
stop dns-sync 3
stop dnsmasq 3
stop kube-proxy
stop kubelet
remove_containers
stop containerd
kill_orphan_shims
phase "containerd stopped; stopping control plane"
stop scheduler
stop controller-manager
stop apiserver
stop etcd
phase "control plane stopped; cleaning the host"
unmount_state
remove_host_dirs
remove_netns
remove_bridge
remove_chains iptables
remove_chains ip6tables
if [[ -f $RUN_DIR/ip_forward.before ]]; then
  cat "$RUN_DIR/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
fi
# keep the logs for CI artefacts; the rest (etcd data, images, keys) goes
find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null
left=$(awk -v d="$STATE_DIR" 'index($2, d) == 1' /proc/mounts | wc -l)
((left == 0)) || log "WARNING: $left mount(s) still under $STATE_DIR"
log "down in $((SECONDS - t0))s (logs kept in $LOG_DIR)"
