#!/usr/bin/env bash
# Start a real single-node Kubernetes (v1.20.2, built by build.sh) on this
# machine, without Docker: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd+runc, kubelet, kube-proxy and a dnsmasq-based
# cluster DNS.  Everything listens on 127.0.0.1 (DNS: on the pod bridge's
# gateway address) and keeps its state under $STATE_DIR.
#
# Usage: [STATE_DIR=/tmp/x] k8s/cluster/up.sh [image.tar ...]
#   image.tar: docker-archive tarballs (`docker save` format) to import into
#   containerd's k8s.io namespace; use them with imagePullPolicy: Never or
#   IfNotPresent (there is no registry access).
# Needs root (network namespaces, mounts, iptables).  On failure everything
# started so far is torn down again (KEEP_ON_FAILURE=1 keeps it to debug).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
LOG_TAG=up
t0=$SECONDS

[[ $(id -u) == 0 ]] || die "must run as root (mounts, network namespaces, iptables)"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause kubectl; do
  [[ -x $K8S_BIN/$b ]] || die "$K8S_BIN/$b missing; run k8s/cluster/build.sh first (or set K8S_BIN)"
done
for c in etcd containerd containerd-shim-runc-v2 runc ctr iptables ip openssl dnsmasq; do
  command -v "$c" >/dev/null || die "'$c' not found; apt-get install etcd-server containerd runc containernetworking-plugins iptables iproute2 openssl dnsmasq-base"
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] \
  || die "CNI plugins missing; apt-get install containernetworking-plugins"
for img in "$@"; do [[ -f $img ]] || die "image tarball $img not found"; done
for n in etcd apiserver containerd kubelet; do
  pid_alive "$n" && die "a cluster is already running in $STATE_DIR ($n); run k8s/cluster/down.sh first"
done

if awk -v d="$STATE_DIR/" 'index($2, d) == 1 {found = 1} END {exit !found}' /proc/mounts; then
  die "mounts left under $STATE_DIR by an earlier run; run k8s/cluster/down.sh first"
fi

on_exit() {
  local rc=$?
  ((rc == 0)) && return 0
  log "up failed (exit $rc); last lines of the logs in $LOG_DIR:"
  local f
  for f in "$LOG_DIR"/*.log; do
    [[ -f $f ]] && { echo "--- $f" >&2; tail -n 8 "$f" >&2; }
  done
  if [[ ${KEEP_ON_FAILURE:-0} == 1 ]]; then
    log "KEEP_ON_FAILURE=1: leaving it running; clean up with k8s/cluster/down.sh"
  else
    "$here/down.sh" >&2 || true
  fi
}
trap on_exit EXIT

# Remove data left by an earlier run (down.sh keeps only the logs): a stale
# etcd would resurrect old pods, stale certs would not match new keys.
rm -rf "$STATE_DIR"/{pki,etcd,containerd,kubelet,cni,dns,images,run,kubeconfig*}
mkdir -p "$LOG_DIR" "$RUN_DIR" "$STATE_DIR"/{pki,cni/net.d,containerd,kubelet,dns,images}
chmod 0755 "$STATE_DIR" "$STATE_DIR/dns"

# start NAME CMD...: run a daemon detached in its own session (so it outlives
# this script and a Ctrl-C here), log to $LOG_DIR/NAME.log, record its pid
# together with its executable, which down.sh checks before signalling.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
  echo "$! $1" >"$RUN_DIR/$name.pid"
}
# wait_until SECONDS WHAT CMD...: poll CMD every 0.25 s
wait_until() {
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep 0.25
  done
}

# Remember what existed before, so down.sh removes only what this cluster made.
snapshot_host_state() {
  ip netns list 2>/dev/null | awk '{print $1}' >"$RUN_DIR/netns.before"
  local ipt
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    "$ipt-save" 2>/dev/null | awk '/^\*/ {t = substr($1, 2)} /^:(KUBE|CNI)-/ {print t, substr($1, 2)}' \
      >"$RUN_DIR/$ipt.chains.before"
  done
  cat /proc/sys/net/ipv4/ip_forward >"$RUN_DIR/ip_forward.before"
  # Paths kubelet 1.20 and containerd 1.6 use whatever their flags say
  # (device-plugin socket, pod logs, shim sockets): note which already exist.
  local d
  for d in /var/lib/kubelet /run/containerd /usr/libexec/kubernetes /var/log/pods /var/log/containers; do
    [[ -e $d ]] && echo "$d"
  done >"$RUN_DIR/dirs.before"
  { ls -1 /var/log/pods /var/log/containers 2>/dev/null || true; } >"$RUN_DIR/podlogs.before"
}

# --- certificates (openssl) ---------------------------------------------------
pki=$STATE_DIR/pki
# mkcert NAME CN [O] [SANs]: key + certificate signed by the cluster CA
mkcert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-} subj ext=$pki/$1.ext
  subj="/CN=$cn"
  [[ -n $org ]] && subj="/O=$org$subj"
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $sans ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 7 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}
# write_kubeconfig FILE CERT-NAME: client-certificate kubeconfig for the local apiserver
write_kubeconfig() {
  local file=$1 cert=$2
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: delinkcious-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$cert.crt")
    client-key-data: $(base64 -w0 <"$pki/$cert.key")
contexts:
- name: delinkcious-local
  context: {cluster: delinkcious-local, user: $cert}
current-context: delinkcious-local
KUBECONFIG
  chmod 0600 "$file"
}

make_pki() {
  log "certificates and service-account keys (openssl)"
  openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=delinkcious-local-ca" -days 7 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$pki/ca.crt" 2>/dev/null
  mkcert apiserver kube-apiserver "" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP"
  # Identities the built-in RBAC roles and the Node authorizer expect:
  mkcert admin delinkcious-admin system:masters
  mkcert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  mkcert controller-manager system:kube-controller-manager
  mkcert scheduler system:kube-scheduler
  mkcert kubelet "system:node:$NODE_NAME" system:nodes
  mkcert kube-proxy system:kube-proxy
  # service-account token signing key pair
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local c
  for c in admin controller-manager scheduler kubelet kube-proxy; do
    write_kubeconfig "$STATE_DIR/kubeconfig.$c" "$c"
  done
  mv "$STATE_DIR/kubeconfig.admin" "$KUBECONFIG_ADMIN"
}

start_control_plane() {
  log "etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
  # --unsafe-no-fsync: a throw-away CI cluster; fsync latency dominates start-up
  start etcd etcd --name delinkcious --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "delinkcious=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" --unsafe-no-fsync

  log "kube-apiserver on 127.0.0.1:$APISERVER_PORT"
  # --kubelet-preferred-address-types=Hostname: the node's only address is the
  #   name "localhost" (see NODE_NAME), used for logs/exec/port-forward.
  # --enable-priority-and-fairness=false: saves CPU on a 2-core runner.
  start apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --enable-priority-and-fairness=false --profiling=false
  wait_until 90 "kube-apiserver /readyz" apiserver_ready
}

start_controllers() {
  log "kube-controller-manager, kube-scheduler"
  # Controllers needing a cloud or node IPAM are off: the pod CIDR is fixed in
  # the CNI configuration, and there is no LoadBalancer implementation.
  start controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$STATE_DIR/kubeconfig.controller-manager" \
    --leader-elect=false --bind-address=127.0.0.1 --port=0 --secure-port=0 \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=true \
    --flex-volume-plugin-dir="$STATE_DIR/kubelet/volume-plugins" \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route'
  start scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$STATE_DIR/kubeconfig.scheduler" \
    --leader-elect=false --bind-address=127.0.0.1 --port=0 --secure-port=0
}

setup_pod_network() {
  log "pod bridge $POD_BRIDGE ($POD_GATEWAY) and CNI config"
  # Packets from a pod to a ClusterIP are DNATed to another pod on the same
  # bridge, i.e. routed by this host.
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # Created here rather than by the CNI bridge plugin on the first pod, so the
  # DNS server can bind to the gateway address before any pod exists; the
  # plugin adopts an existing bridge and keeps the address.
  if ! ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    ip link add "$POD_BRIDGE" type bridge
    echo "$POD_BRIDGE" >"$RUN_DIR/bridge.created"
  fi
  ip addr replace "$POD_GATEWAY/${POD_CIDR#*/}" dev "$POD_BRIDGE"
  ip link set "$POD_BRIDGE" up
  cat >"$STATE_DIR/cni/net.d/10-delinkcious.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "delinkcious-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
}

start_dns() {
  log "cluster DNS: dnsmasq on $POD_GATEWAY:53 fed from the API"
  : >"$STATE_DIR/dns/hosts"
  chmod 0644 "$STATE_DIR/dns/hosts"
  # --local: cluster.local is answered only from the hosts file (NXDOMAIN
  #   otherwise, never forwarded); other names go to the host's resolvers.
  # --no-negcache: a Service created a second ago must resolve at once.
  start dnsmasq dnsmasq --keep-in-foreground --log-facility=- --no-hosts \
    --addn-hosts="$STATE_DIR/dns/hosts" --listen-address="$POD_GATEWAY" --bind-interfaces \
    --port=53 --local="/$CLUSTER_DOMAIN/" --no-negcache --resolv-file=/etc/resolv.conf \
    --pid-file="$RUN_DIR/dnsmasq.own.pid" --user=nobody
  local dns_pid
  read -r dns_pid _ <"$RUN_DIR/dnsmasq.pid"
  sleep 0.3
  pid_alive dnsmasq || die "dnsmasq did not start (port 53 on $POD_GATEWAY taken?)"
  start dns-sync "$here/dns-sync.sh" "$STATE_DIR/dns/hosts" "$dns_pid" 2
}

start_containerd() {
  log "containerd (root and socket under $STATE_DIR/containerd)"
  local c=$STATE_DIR/containerd
  # restrict_oom_score_adj: this machine refuses lowering oom_score_adj, which
  #   containerd otherwise tries for every sandbox.
  cat >"$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$c/runc"   # runc state here, not in /run/containerd/runc
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni/net.d"
TOML
  start containerd containerd --config "$c/config.toml"
  wait_until 30 "containerd socket" ctr_ version
}

import_images() {
  # The sandbox image is made here from the static pause binary: no registry.
  "$here/scratch-image.sh" "$STATE_DIR/images/pause.tar" "$PAUSE_IMAGE" "$K8S_BIN/pause" >/dev/null
  local img
  for img in "$STATE_DIR/images/pause.tar" "$@"; do
    log "import $(basename "$img")"
    ctr_ images import "$img" >/dev/null || die "ctr images import $img failed"
  done
  log "images: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
}

start_node() {
  log "kubelet, kube-proxy"
  local k=$STATE_DIR/kubelet
  # --hostname-override=localhost: kubelet refuses a loopback node IP.
  # --cgroups-per-qos=false/--enforce-node-allocatable=: no systemd, and the
  #   runner's cgroups are not ours to carve up.
  # --eviction-hard=/image-gc thresholds: a busy CI disk must not evict pods.
  start kubelet "$K8S_BIN/kubelet" --kubeconfig="$STATE_DIR/kubeconfig.kubelet" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CONTAINERD_SOCK" \
    --runtime-request-timeout=2m --root-dir="$k" --cert-dir="$k/pki" \
    --volume-plugin-dir="$k/volume-plugins" --hostname-override="$NODE_NAME" \
    --address=127.0.0.1 --port=10250 --read-only-port=0 \
    --healthz-bind-address=127.0.0.1 --healthz-port=10248 \
    --anonymous-auth=false --client-ca-file="$pki/ca.crt" --authorization-mode=AlwaysAllow \
    --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
    --fail-swap-on=false --eviction-hard= --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --pod-infra-container-image="$PAUSE_IMAGE" --max-pods=60 \
    --cluster-dns="$POD_GATEWAY" --cluster-domain="$CLUSTER_DOMAIN" --resolv-conf=/etc/resolv.conf
  start kube-proxy "$K8S_BIN/kube-proxy" --kubeconfig="$STATE_DIR/kubeconfig.kube-proxy" \
    --hostname-override="$NODE_NAME" --bind-address=127.0.0.1 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
    --cluster-cidr="$POD_CIDR" --proxy-mode=iptables --conntrack-max-per-core=0
}

apiserver_ready() { [[ $(kubectl_ get --raw /readyz 2>/dev/null) == ok ]]; }
node_ready() {
  [[ $(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
dns_has_kubernetes_svc() { grep -q " kubernetes.default.svc.$CLUSTER_DOMAIN " "$STATE_DIR/dns/hosts"; }

snapshot_host_state
make_pki
start_control_plane
start_controllers
setup_pod_network
start_containerd
import_images "$@"
start_node
start_dns
wait_until 180 "node $NODE_NAME Ready" node_ready
# pods cannot be created in a namespace before its default ServiceAccount exists
wait_until 60 "default ServiceAccount" kubectl_ -n default get serviceaccount default
wait_until 30 "DNS records" dns_has_kubernetes_svc
log "cluster up in $((SECONDS - t0))s (node Ready, DNS at $POD_GATEWAY)"
cat <<USAGE

  export KUBECONFIG=$KUBECONFIG_ADMIN
  export PATH=$K8S_BIN:\$PATH     # kubectl v1.31 and helm v3.17 (server is $K8S_VERSION)
  kubectl get nodes
  kubectl port-forward --address 127.0.0.1 svc/<name> <local>:<port>
  STATE_DIR=$STATE_DIR $here/down.sh     # when done

USAGE
