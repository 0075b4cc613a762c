#!/usr/bin/env bash
# Build helpers. `./build.sh test` runs the suite (as CI does); `./build.sh proto` regenerates the
# gRPC code in services/api from proto/; `./build.sh images [SERVICE...]`
# builds one image per service with docker, or with buildah where no Docker engine runs.
set -euo pipefail
cd "$(dirname "$0")"

# Service names use dashes (social-graph); their folders are Python packages, so underscores.
services() { for dockerfile in services/*/Dockerfile; do basename "$(dirname "$dockerfile")" | tr _ -; done; }

build_image() {
  local service=$1 dockerfile="services/${1//-/_}/Dockerfile" tag="delinkcious/$1:${TAG:-dev}"
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker build -f "$dockerfile" -t "$tag" .
  else
    buildah bud --isolation chroot -f "$dockerfile" -t "$tag" .
  fi
}

case "${1:-}" in
  test) exec bash .ci/run ;;
  proto) exec "${PYTHON:-.venv/bin/python}" proto/generate.py ;;
  images) shift; for service in "${@:-$(services)}"; do build_image "$service"; done ;;
  *) echo "usage: $0 test | proto | images [SERVICE...]" >&2; exit 2 ;;
esac
