#!/usr/bin/env bash
# Build helpers. `./build.sh test` runs the suite (as CI does); `./build.sh proto` regenerates the
# gRPC code in services/contracts from proto/; `./build.sh docs` regenerates the settings reference in
# docs/configuration.md from the settings classes; `./build.sh images [SERVICE...]` builds one image per catalogue
# service (all of them when none is named) from the one recipe, services/Dockerfile, with docker, or with
# buildah where no Docker engine runs.
set -euo pipefail
cd "$(dirname "$0")"

# The services are those of the catalogue (services/catalogue.py), not whatever folders exist.
services() {
  "${PYTHON:-.venv/bin/python}" -c 'from delinkcious.catalogue import SERVICES; print(*(s.name for s in SERVICES))'
}

build_image() {
  local service=$1 tag="delinkcious/$1:${TAG:-dev}"
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker build -f services/Dockerfile --build-arg "SERVICE=$service" -t "$tag" .
  else
    buildah bud --isolation chroot -f services/Dockerfile --build-arg "SERVICE=$service" -t "$tag" .
  fi
}

case "${1:-}" in
  test) exec bash .ci/run ;;
  proto) exec "${PYTHON:-.venv/bin/python}" proto/generate.py ;;
  docs) exec "${PYTHON:-.venv/bin/python}" docs/generate.py ;;
  images)
    shift
    if (($# == 0)); then
      all=$(services)  # an assignment, so that a catalogue that fails to load stops here (set -e)
      read -ra names <<<"$all"
      set -- "${names[@]}"
    fi
    for service in "$@"; do build_image "$service"; done
    ;;
  *) echo "usage: $0 test | proto | docs | images [SERVICE...]" >&2; exit 2 ;;
esac
