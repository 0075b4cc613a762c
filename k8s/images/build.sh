#!/usr/bin/env bash
# Builds the container images that are not service images, with buildah (no Docker engine, chroot isolation, so
# it works on a CI machine as root), Docker format (OCI images keep no HEALTHCHECK), with cached layers:
#   postgres            localhost/delinkcious-postgres:15         CI stand-ins for the official images, from
#   redis               localhost/delinkcious-redis:7             Debian packages (k8s/images/stand-ins/)
#   nats                localhost/delinkcious-nats:2.9
#   identity-provider   delinkcious/identity-provider:<version>   the development OpenID provider
#   integration-test    delinkcious/integration-test:<version>    the black-box suite (integration-test/)
# <version> is pyproject.toml's. Usage:
#   k8s/images/build.sh [NAME...]        every image when none is named
# Environment:
#   BASE_IMAGE           base of the Python images (default: the recipes' official slim Python image); CI passes
#                        localhost/delinkcious-base:bookworm (services/build-base-image.sh)
#   STANDIN_BASE_IMAGE   base of the stand-ins (default: BASE_IMAGE, else the recipe's debian:bookworm-slim)
#   REBUILD=1            build even when the image exists. Otherwise an image is skipped when it exists and was
#                        built from the same recipe: the same Dockerfile, build context, build arguments and base
#                        image (a label records their digest), so a changed suite is rebuilt but a cached image
#                        is not. Newer packages from the indexes alone do not count: REBUILD=1 for those.
#   EXPORT_DIR=DIR       also writes each image as a docker-archive DIR/<name>.tar (for `ctr images import`,
#                        `podman load`, k8s/cluster/up.sh), built or skipped.
#   PYTHON               the interpreter reading pyproject.toml and the pip settings (default .venv/bin/python)
# The pip steps get this machine's pip settings and CA bundle exactly as ./build.sh passes them to the service
# images (its pip_build_args, reused, not copied). The stand-ins' apt steps use the base image's own apt sources.
# Prints each image's name, build time and size on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
ALL=(postgres redis nats identity-provider integration-test)
LABEL=org.delinkcious.recipe-digest

usage() {
  local IFS='|'
  echo "usage: $0 [${ALL[*]} ...]   (all when none is named)" >&2
  exit 2
}

# The image ID of the base when it is in local storage, else its name (pulled at build time).
base_identity() {
  local base=$1
  [[ -n $base ]] || { echo default; return; }
  buildah inspect --type image --format '{{.FromImageID}}' "$base" 2>/dev/null || echo "$base"
}

# A digest of what makes the image: recipe, context files (no caches), build arguments, base image.
recipe_digest() {
  local dockerfile=$1 context=$2 base=$3
  shift 3
  {
    sha256sum "$dockerfile"
    find "$context" -type f ! -path '*/__pycache__/*' ! -path '*/.pytest_cache/*' ! -path '*/.hypothesis/*' \
      ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
      xargs -0 -r sha256sum
    printf '%s\n' "$@" "$(base_identity "$base")"
  } | sha256sum | cut -d' ' -f1
}

build() {
  local key=$1 name dockerfile context base args=() digest existing started
  case $key in
    postgres | redis | nats)
      case $key in postgres) name=localhost/delinkcious-postgres:15 ;; redis) name=localhost/delinkcious-redis:7 ;;
                   nats) name=localhost/delinkcious-nats:2.9 ;; esac
      dockerfile=k8s/images/stand-ins/Dockerfile context=k8s/images/stand-ins
      base=${STANDIN_BASE_IMAGE:-${BASE_IMAGE:-}}
      args=(--build-arg "SERVER=$key")
      ;;
    identity-provider)
      name=delinkcious/identity-provider:$version
      dockerfile=k8s/images/identity-provider/Dockerfile context=k8s/images/identity-provider
      base=${BASE_IMAGE:-}
      args=("${pip_args[@]}")
      ;;
    integration-test)
      name=delinkcious/integration-test:$version
      dockerfile=integration-test/Dockerfile context=integration-test
      base=${BASE_IMAGE:-}
      args=("${pip_args[@]}")
      ;;
    *) usage ;;
  esac
  [[ -z $base ]] || args+=(--build-arg "BASE_IMAGE=$base")
  digest=$(recipe_digest "$dockerfile" "$context" "$base" "${args[@]}")
  existing=$(buildah inspect --type image --format "{{index .Docker.Config.Labels \"$LABEL\"}}" "$name" 2>/dev/null ||
    true)
  if [[ ${REBUILD:-0} != 1 && $existing == "$digest" ]]; then
    echo "$name exists, built from this recipe (REBUILD=1 builds it again)" >&2
  else
    started=$SECONDS
    buildah bud --isolation chroot --format docker --layers -f "$dockerfile" "${args[@]}" \
      --label "$LABEL=$digest" -t "$name" "$context"
    echo "$name built in $((SECONDS - started)) s" >&2
  fi
  buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$name" >&2
  if [[ -n ${EXPORT_DIR:-} ]]; then
    mkdir -p "$EXPORT_DIR"
    partial=$EXPORT_DIR/$key.tar.partial
    rm -f "$partial"
    buildah push "$name" "docker-archive:$partial:$name"
    mv -f "$partial" "$EXPORT_DIR/$key.tar"
    partial=
    echo "exported $name to $EXPORT_DIR/$key.tar" >&2
  fi
}

partial=
trap '[[ -z $partial ]] || rm -f "$partial"' EXIT
(($# > 0)) || set -- "${ALL[@]}"
for key in "$@"; do
  [[ " ${ALL[*]} " == *" $key "* ]] || usage
done
version=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
pip_args=()
if [[ " $* " == *" identity-provider "* || " $* " == *" integration-test "* ]]; then
  # ./build.sh's, so the two never differ: the build arguments (and the CA bundle volume) for a pip step, one a line,
  # from the PIP_* variables and pip's configuration files.
  listed=$(PYTHON=$PYTHON ./build.sh pip-build-args buildah)
  [[ -z $listed ]] || mapfile -t pip_args <<<"$listed"
fi
for key in "$@"; do build "$key"; done
