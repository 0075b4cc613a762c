#!/usr/bin/env bash
# Make a single-layer "FROM scratch" image as a docker-archive tar (the format
# `docker save` writes and `ctr images import` reads) without any Docker
# engine: one static binary at /<name>, used as the entrypoint.
#
# Usage: scratch-image.sh <out.tar> <image-ref> <static-binary> [entrypoint args...]
#   e.g. scratch-image.sh /tmp/pause.tar localhost/pause:ci bin/pause
set -euo pipefail

(($# >= 3)) || { echo "usage: $0 <out.tar> <image-ref> <static-binary> [args...]" >&2; exit 2; }
out=$1 ref=$2 binary=$3
shift 3
[[ -x $binary ]] || { echo "$0: $binary is not an executable file" >&2; exit 1; }
# a dynamically linked binary would fail only at container start with a
# confusing "no such file or directory"; refuse it here instead
if command -v file >/dev/null && file -L "$binary" | grep -q 'dynamically linked'; then
  echo "$0: $binary is dynamically linked; a scratch image needs a static binary" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
name=$(basename "$binary")

mkdir -p "$tmp/rootfs" "$tmp/archive/layer"
install -m 0755 "$binary" "$tmp/rootfs/$name"
# reproducible layer: fixed owner and mtime, so re-imports are no-ops
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name \
  -cf "$tmp/archive/layer/layer.tar" -C "$tmp/rootfs" .
diff_id=$(sha256sum "$tmp/archive/layer/layer.tar" | cut -d' ' -f1)

json_str() { # minimal JSON string quoting (enough for paths and plain args)
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}
entrypoint=$(json_str "/$name")
for a in "$@"; do entrypoint+=",$(json_str "$a")"; done

cat >"$tmp/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Entrypoint":[$entrypoint],"Env":["PATH=/"],"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},
 "history":[{"created":"1970-01-01T00:00:00Z","created_by":"k8s/cluster/scratch-image.sh $name"}]}
JSON
config_id=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
mv "$tmp/config.json" "$tmp/archive/$config_id.json"
printf '[{"Config":"%s.json","RepoTags":[%s],"Layers":["layer/layer.tar"]}]\n' \
  "$config_id" "$(json_str "$ref")" >"$tmp/archive/manifest.json"

mkdir -p "$(dirname "$out")"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 -cf "$out.tmp" -C "$tmp/archive" .
mv "$out.tmp" "$out"
echo "$out ($ref)"
