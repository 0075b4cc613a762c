#!/usr/bin/env bash
# Installs the tools the deployment proof (k8s/verify.sh) checks the deployment files with, none of them
# system-wide except through apt, and prints the directory to put first on PATH:
#   - docker-compose v2, only to validate docker-compose.yaml (`config -q` needs no engine): the newer Debian
#     release's .deb, fetched with a private apt configuration (the mirror is this machine's, read at run time by
#     k8s/apt-mirror.sh) and unpacked with dpkg -x, never installed;
#   - podman-compose, kubernetes-validate and checkov from PyPI, each in a virtualenv of its own;
#   - podman with runc, netavark and aardvark-dns from apt (this machine's release), to run the compose stack;
#   - prometheus (with promtool) from apt, to check and unit-test the alerting rules and run `up --monitoring`.
# Cached under ${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/tools: a second run installs nothing.
#   k8s/tools.sh            prints the bin directory
set -euo pipefail

cache=${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/tools
bin=$cache/bin
compose_release=${COMPOSE_DEBIAN_RELEASE:-trixie}
mkdir -p "$bin"

log() { printf '[tools %(%T)T] %s\n' -1 "$*" >&2; }

apt_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -q update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -q install -y --no-install-recommends \
    "${missing[@]}" >/dev/null
}

docker_compose() {
  [[ -x $bin/docker-compose ]] && return 0
  local apt_dir=$cache/apt-$compose_release mirror deb unpacked
  mirror=$("$(dirname "${BASH_SOURCE[0]}")/apt-mirror.sh")
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" "$apt_dir/debs"
  printf 'deb %s %s main\n' "$mirror" "$compose_release" >"$apt_dir/sources.list"
  local apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o APT::Sandbox::User=root
  )
  log "docker-compose from Debian $compose_release (private apt configuration, unpacked only)"
  apt-get "${apt_opts[@]}" -q update >/dev/null
  (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -q download docker-compose >/dev/null)
  deb=$(compgen -G "$apt_dir/debs/docker-compose_*.deb" | head -n1)
  unpacked=$(mktemp -d "$cache/docker-compose.XXXXXX")
  dpkg -x "$deb" "$unpacked"
  install -m 0755 "$unpacked/usr/libexec/docker/cli-plugins/docker-compose" "$bin/docker-compose"
  rm -rf "$unpacked"
}

python_tool() {  # VENV PACKAGE COMMAND...
  local venv=$cache/$1 package=$2 command
  shift 2
  if [[ ! -x $venv/bin/python ]]; then
    log "pip install $package into $venv"
    python3 -m venv "$venv"
  fi
  for command in "$@"; do
    if [[ ! -x $venv/bin/$command ]]; then
      "$venv/bin/pip" install --quiet "$package" >&2
      break
    fi
  done
  for command in "$@"; do ln -sf "$venv/bin/$command" "$bin/$command"; done
}

apt_packages podman runc netavark aardvark-dns uidmap slirp4netns prometheus
docker_compose
python_tool podman-compose-venv "podman-compose>=1.2" podman-compose
python_tool validate-venv "kubernetes-validate>=1.31" kubernetes-validate
python_tool checkov-venv "checkov>=3.2" checkov
echo "$bin"
