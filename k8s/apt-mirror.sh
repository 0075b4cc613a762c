#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt sources use for RELEASE (default: this machine's release), read at
# run time so that the repository names no mirror. Used wherever a build needs Debian packages or sources
# without touching the machine's apt configuration: the CI base image (services/build-base-image.sh) and the
# Kubernetes build (k8s/cluster/build.sh), each with a private apt configuration of its own.
#   k8s/apt-mirror.sh [RELEASE]
set -euo pipefail
release=${1:-$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")}

# The first deb URI of this machine's apt sources that serves the release itself (not -updates or
# -security), read at run time so that the repository names no mirror: deb822 *.sources files first,
# then the one-line format.
apt_mirror() {
  local sources=(/etc/apt/sources.list.d/*.sources) lists=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  {
    for file in "${sources[@]}"; do
      [[ -f $file ]] || continue
      awk -v release="$release" '
        BEGIN { RS = ""; FS = "\n" }
        {
          types = ""; uris = ""; suites = ""; enabled = "yes"
          for (i = 1; i <= NF; i++) {
            if ($i ~ /^[ \t]*#/ || $i !~ /:/) continue
            key = tolower($i); sub(/:.*/, "", key)
            value = $i; sub(/^[^:]*:[ \t]*/, "", value)
            if (key == "types") types = value
            else if (key == "uris") uris = value
            else if (key == "suites") suites = value
            else if (key == "enabled") enabled = tolower(value)
          }
          if (enabled == "no" || (" " types " ") !~ / deb /) next
          n = split(suites, suite, /[ \t]+/)
          for (j = 1; j <= n; j++) if (suite[j] == release) { split(uris, uri, /[ \t]+/); print uri[1] }
        }' "$file"
    done
    for file in "${lists[@]}"; do
      [[ -f $file ]] || continue
      # deb [options] URI suite components...
      sed -E -n 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+).*/\2 \3/p' "$file" |
        awk -v release="$release" '$2 == release { print $1 }'
    done
  } | head -n 1
}


mirror=$(apt_mirror)
[[ -n $mirror ]] || { echo "no deb source for $release in /etc/apt/sources.list*" >&2; exit 1; }
printf '%s\n' "$mirror"
