#!/usr/bin/env bash
# Cluster DNS feeder, started by up.sh next to dnsmasq.
#
# No DNS add-on (CoreDNS) can be pulled here, so dnsmasq answers for
# cluster.local from a hosts file that this loop regenerates from the API
# every few seconds; on change it sends SIGHUP, which makes dnsmasq re-read
# the file and drop its cache.  Names written per Service:
#   <svc>.<ns>.svc.cluster.local  <svc>.<ns>.svc  <svc>.<ns>
# The bare <svc> name works from pods through the kubelet-written search path
# (<ns>.svc.cluster.local first).  Headless Services get their endpoint IPs.
#
# Usage: dns-sync.sh <hosts-file> <dnsmasq-pid> [interval-seconds]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
LOG_TAG=dns-sync

hosts=${1:?hosts file} dnsmasq_pid=${2:?dnsmasq pid} interval=${3:-2}
tmp=$hosts.new

render() {
  # "ns name clusterIP" per Service, "ns name ip ip ..." per Endpoints
  local svcs eps
  svcs=$(kubectl_ get services -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name} {.spec.clusterIP}{"\n"}{end}') || return 1
  eps=$(kubectl_ get endpoints -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{range .subsets[*].addresses[*]} {.ip}{end}{"\n"}{end}') || return 1
  awk -v dom="$CLUSTER_DOMAIN" '
    FNR == NR { if (NF >= 3) ip[$1 "/" $2] = $3; next }
    { key = $1 "/" $2; if (NF > 2) ep[key] = $0 }
    END {
      for (key in ip) {
        split(key, k, "/"); names = k[2] "." k[1] ".svc." dom " " k[2] "." k[1] ".svc " k[2] "." k[1]
        if (ip[key] != "None") { print ip[key], names; continue }
        n = split(ep[key], f, " "); for (i = 3; i <= n; i++) print f[i], names
      }
    }' <(printf '%s\n' "$svcs") <(printf '%s\n' "$eps") | sort
}

log "feeding $hosts to dnsmasq pid $dnsmasq_pid every ${interval}s"
while kill -0 "$dnsmasq_pid" 2>/dev/null; do
  if render >"$tmp" 2>/dev/null; then
    if ! cmp -s "$tmp" "$hosts"; then
      chmod 0644 "$tmp"   # dnsmasq re-reads it after dropping privileges
      mv "$tmp" "$hosts"
      kill -HUP "$dnsmasq_pid" 2>/dev/null || true
      log "updated: $(wc -l <"$hosts") records"
    fi
  fi
  sleep "$interval"
done
rm -f "$tmp"
log "dnsmasq gone, exiting"
